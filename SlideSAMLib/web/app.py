"""The trame application: trame-slicer's segmentation app (views, upload, segment editor) plus the SlideSAM panel."""
import os

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")  # offscreen rendering, no X display needed


def create_app(engine_source: dict, engine_label: str, image=None, server=None):
    """A trame app whose engine is `engine_source` (SlideSAMLogic's: server + apiKey, or engine); `image` is loaded at start."""
    from trame.app import get_server
    from trame_slicer import module as trame_slicer_module
    from trame_slicer.app.logic import SegmentationAppLogic
    from trame_slicer.app.ui import SegmentationAppUI
    from trame_slicer.core import SlicerApp

    from . import host
    from .panel import build_panel

    server = server or get_server(client_type="vue3")
    server.enable_module(trame_slicer_module)
    slicer_app = SlicerApp()
    host.install(slicer_app)
    host.fix_paint_pipeline_view(slicer_app.view_manager)
    from .logic import SlideSAMWebLogic  # SlideSAMSlicer is importable once the host is installed

    app_logic = SegmentationAppLogic(server, slicer_app)
    # trame-slicer's signals hold their slots weakly: unkept, the upload buttons' logic is collected once create_app
    # returns and an upload does nothing (Testing/web/test_web_upload.py failed so)
    host.keep(app_logic)
    web = SlideSAMWebLogic(server, slicer_app, engine_source, engine_label)
    ui = SegmentationAppUI(server, app_logic.layout_manager)
    with ui.layout.drawer:
        build_panel(server, web)
    ui.layout.drawer.children.insert(0, ui.layout.drawer.children.pop())  # the panel above the segment editor
    ui.layout.title.set_text("SlideSAM web")
    ui.layout.flush_content()  # the layout was sent when SegmentationAppUI closed it: send it again with the panel
    app_logic.set_ui(ui)
    loader = app_logic._load_files_logic  # trame-slicer's own upload path; the CLI image goes through it too
    loader.volume_loaded.connect(web.on_volume_loaded)
    server.state.trame__title = "SlideSAM web"
    if image is not None:
        loader._on_load_volume_files([str(image)])
    return server, web
