"""The panel's Engine Python field: the Python the local engine process runs with, kept as an application setting
(QSettings, a machine's path, never in the scene), named in one line when it is wrong; and path fields that are
cleared (a ctkPathLineEdit emits no currentPathChanged for empty text, only validInputChanged(False)).
Real widget code and MRML; the Qt widgets are the stand-ins of Testing/slicer/standins (see test_slicer_widget.py)."""
import stat
import types

import slicer

import SlideSAM
from test_slicer_widget import env, gui, kidney_box, new_segmentation, show_slice  # noqa: F401  (fixtures)

KEY = SlideSAM.SlideSAMLogic.ENGINE_PYTHON_SETTING


def a_program(path, text="#!/bin/sh\n"):
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_the_field_is_the_application_setting_and_a_new_panel_shows_it(gui, tmp_path):
    ui, settings = gui.ui, slicer.app.settings()
    python = a_program(tmp_path / "python3.12")
    ui.enginePythonPathLineEdit.currentPath = python
    assert settings.value(KEY) == python and gui.widget.logic.enginePythonPath() == python
    assert ui.statusLabel.text == f"engine Python: {python}"
    node = gui.widget.logic.getParameterNode()
    assert all(python not in node.GetParameter(name) for name in node.GetParameterNames())  # a machine's path: not saved with the scene
    again = SlideSAM.SlideSAMWidget(types.SimpleNamespace(isEntered=True))  # Slicer restarted: the panel is built again
    again.setup()
    try:
        assert again.ui.enginePythonPathLineEdit.currentPath == python
    finally:
        again.cleanup()
    ui.enginePythonPathLineEdit.currentPath = ""  # cleared: back to Slicer's own Python
    assert settings.value(KEY) is None and "PythonSlicer" in ui.statusLabel.text
    ui.modelSourceComboBox.currentIndex = gui.widget.SOURCE_SERVER
    assert not ui.enginePythonPathLineEdit.enabled  # a server runs its own Python


def test_a_wrong_engine_python_is_named_in_one_line_and_nothing_starts(gui, tmp_path):
    ui = gui.ui
    segmentation = new_segmentation(gui, "wrong engine python")
    kidney_box(gui)
    show_slice(gui, gui.ct.k)
    missing = str(tmp_path / "no-such" / "python3")
    ui.enginePythonPathLineEdit.currentPath = missing
    assert f"'{missing}' does not exist" in ui.statusLabel.text and "\n" not in ui.statusLabel.text  # said while typing
    ui.propagateButton.click()
    assert len(gui.errors) == 1 and f"'{missing}' does not exist" in gui.errors[0] and "Engine Python field" in gui.errors[0]
    assert ui.statusLabel.text == "not started" and segmentation.GetSegmentation().GetNumberOfSegments() == 0
    old = a_program(tmp_path / "python3.9", "#!/bin/sh\necho 3 9\n")  # Slicer 5.8's Python is 3.9 (none on this machine)
    ui.enginePythonPathLineEdit.currentPath = old
    assert ui.statusLabel.text == f"engine Python: {old}"
    gui.errors.clear()
    ui.propagateButton.click()
    assert len(gui.errors) == 1 and f"'{old}' is 3.9" in gui.errors[0] and "needs Python >= 3.10" in gui.errors[0]
    assert ui.statusLabel.text == "not started" and segmentation.GetSegmentation().GetNumberOfSegments() == 0
    ui.enginePythonPathLineEdit.currentPath = ""


def test_a_cleared_checkpoint_path_is_cleared_in_the_parameter_node(gui, tmp_path):
    ui, node = gui.ui, gui.widget.logic.getParameterNode()
    ui.modelSourceComboBox.currentIndex = gui.widget.SOURCE_CHECKPOINT
    ui.checkpointPathLineEdit.currentPath = str(tmp_path / "litemedsam.pth")
    assert node.GetParameter("Checkpoint") == str(tmp_path / "litemedsam.pth")
    ui.checkpointPathLineEdit.currentPath = ""
    assert node.GetParameter("Checkpoint") == ""
    node.SetParameter("Direction", "down")  # the node changes (a script, a loaded scene): the panel is read back from it
    assert ui.checkpointPathLineEdit.currentPath == ""
