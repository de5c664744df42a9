"""What Slicer's application gives SlideSAM's Slicer-side code, provided from trame-slicer's scene.

`SlideSAMSlicer` (geometry, writer, jobs, logic) runs unchanged inside 3D Slicer.  In Slicer the
application sets `slicer.mrmlScene`, `slicer.app`, `slicer.modules` and ships the scripted-module
base classes; slicer-core (which trame-slicer runs on) has MRML and `slicer.util` but none of
those.  `install(slicer_app)` supplies them from trame-slicer's `SlicerApp`, the way the project's
slicer-core test harness does (Testing/slicer/conftest.py: an application logic owning the scene, the
module logics registered with it), so the same `SlideSAMLogic` drives the web page.

It also holds the one workaround for trame-slicer 2.0.0 (the latest release on PyPI on 2026-12-02,
checked with `pip index versions trame-slicer`): see `fix_paint_pipeline_view`.
"""
import logging
import sys
import types
from pathlib import Path

from ..errors import InputError

_KEEP = {}  # the application logic must outlive every MRML call (a dropped one segfaults)


def slicer_module_folder() -> Path:
    """The folder holding the `SlideSAMSlicer` package (the Slicer module's folder of this checkout)."""
    folder = Path(__file__).resolve().parents[2] / "SlideSAM"
    if not (folder / "SlideSAMSlicer" / "writer.py").exists():
        raise InputError(
            f"slidesam web needs the SlideSAM Slicer module's code ({folder}/SlideSAMSlicer): run it from a source checkout (README, Web annotator: pip install --no-deps -e . and the 'web' extra's packages)"
        )
    return folder


class ScriptedLoadableModuleLogic:
    """Slicer's scripted-module logic base, reduced to what `SlideSAMLogic` uses of it (its constructor).

    Kept because it is needed: `SlideSAMLogic` subclasses Slicer's base (it is the module's logic inside Slicer),
    and slicer-core 5.11.0.6, the one trame-slicer 2.0.0 allows, ships no `slicer.ScriptedLoadableModule` (its
    `slicer` package holds only slicer_core, slicer_layer_dm and util).  Of the base, `SlideSAMLogic` calls only
    the constructor (it keeps no parameter node).  A slicer-core that ships the module is used instead."""

    def __init__(self, parent=None):
        self.moduleName = type(self).__name__.removesuffix("Logic")


def install(slicer_app) -> None:
    """Make `import slicer` look as inside Slicer for SlideSAMSlicer: scene, app, module logics."""
    import slicer

    scene, app_logic = slicer_app.scene, slicer_app.app_logic
    slicer.mrmlScene = scene
    slicer.app = types.SimpleNamespace(applicationLogic=lambda: app_logic, mrmlScene=lambda: scene)
    slicer.modules = types.SimpleNamespace(
        volumes=types.SimpleNamespace(logic=lambda: slicer_app.volumes_logic),
        segmentations=types.SimpleNamespace(logic=lambda: slicer_app.segmentations_logic),
        markups=types.SimpleNamespace(logic=lambda: slicer_app.markups_logic._logic),
    )
    if "slicer.ScriptedLoadableModule" not in sys.modules:
        try:
            import slicer.ScriptedLoadableModule  # noqa: F401  (a slicer-core that ships it)
        except ImportError:
            module = types.ModuleType("slicer.ScriptedLoadableModule")
            module.ScriptedLoadableModuleLogic = ScriptedLoadableModuleLogic
            sys.modules[module.__name__] = module
            slicer.ScriptedLoadableModule = module
    folder = str(slicer_module_folder())
    if folder not in sys.path:
        sys.path.insert(0, folder)
    _KEEP["app"] = slicer_app


def keep(obj) -> None:
    """Keep `obj` alive as long as the process (trame-slicer's logic objects: its signals reference them weakly)."""
    _KEEP.setdefault("objects", []).append(obj)


def fix_paint_pipeline_view(view_manager) -> None:
    """trame-slicer 2.0.0 bug: effect pipelines may be created before their view exists.

    `SegmentationEditor._try_create_effect_pipeline` calls `pipeline.SetView(view_manager.get_view(view_node))`
    when the layer displayable manager builds the pipeline; for the browser's RCA views that can be
    before the view is registered, leaving `_view=None`, so Paint/Erase never create their widget
    (an AttributeError on `paint_interaction_stopped`).  Here the view is looked up again when the
    effect is activated.  Remove this once a trame-slicer release sets the view itself.

    Checked needed on 2026-12-02: with this disabled, Paint in the browser got `SegmentationPaintPipeline2D`
    with `_view=None`, raised that AttributeError and the stroke never reached the segment (the paint step of
    Testing/web/test_web_app.py fails).  Upstream's source (KitwareMedical/trame-slicer) still sets the view
    only when the pipeline is created (`pipeline.SetView(self._view_manager.get_view(view_node))`).
    """
    from trame_slicer.segmentation.segmentation_effect_pipeline import SegmentationEffectPipeline

    if getattr(SegmentationEffectPipeline, "_slidesam_view_fix", False):
        return
    original = SegmentationEffectPipeline.SetActive

    def set_active(self, is_active):
        if is_active and getattr(self, "_view", None) is None and self.GetViewNode() is not None:
            self._view = view_manager.get_view(self.GetViewNode())
            logging.getLogger("slidesam.web").info("trame-slicer workaround: %s had no view; set to %s", type(self).__name__, self.GetViewNode().GetName())
        return original(self, is_active)

    SegmentationEffectPipeline.SetActive = set_active
    SegmentationEffectPipeline._slidesam_view_fix = True
