"""The module's widget driven as an annotator would: select nodes, place a box, press Propagate, restart
from a corrected slice, undo, cancel, and mistakes. Real widget code, real logic, real MRML (slicer-core)
and a real CT; only the Qt widgets of SlideSAM.ui are stand-ins (Testing/slicer/standins/uiwidgets.py),
built from the .ui file itself, and the run is polled by firing the widget's timer by hand.
"""
import time
import types

import numpy as np
import pytest
import qt
import slicer
from uiwidgets import load_ui

import SlideSAM
from SlideSAMSlicer.shortcuts import SHORTCUTS
from SlideSAMSlicer.writer import read_segment
from slicer_data import dice, lps_to_ras

RANGE = 4  # slices each side of the prompt: keeps the encoder cost of this module small


@pytest.fixture(scope="module")
def gui(mrml, data_dir, slidesam_model):
    from slicer_data import load_kidney_ct

    ct = load_kidney_ct(mrml, data_dir)
    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(mrml.scene)
    views = {}
    for name, orientation in (("Red", "Axial"), ("Yellow", "Sagittal"), ("Green", "Coronal")):
        views[name] = mrml.scene.AddNewNodeByClass("vtkMRMLSliceNode", name)
        views[name].SetLayoutName(name)
        views[name].SetOrientation(orientation)
    layout = types.SimpleNamespace(sliceViewNames=lambda: list(views),
                                   sliceWidget=lambda name: types.SimpleNamespace(mrmlSliceNode=lambda: views[name]))
    errors = []  # what the user was shown
    qt.slot_exceptions.clear()

    def loadUI(path):
        root, widgets = load_ui(path)
        root.children = widgets
        return root

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(slicer, "app", types.SimpleNamespace(
            applicationLogic=slicer.app.applicationLogic, mrmlScene=slicer.app.mrmlScene, layoutManager=lambda: layout,
            setOverrideCursor=lambda cursor: None, restoreOverrideCursor=lambda: None, testingEnabled=lambda: False))
        mp.setattr(slicer.util, "loadUI", loadUI)
        mp.setattr(slicer.util, "childWidgetVariables", lambda root: types.SimpleNamespace(**root.children))
        mp.setattr(slicer.util, "mainWindow", lambda: None)
        mp.setattr(slicer.util, "errorDisplay", lambda text, **kwargs: errors.append(text))
        mp.setattr(slicer, "qSlicerMarkupsPlaceWidget", types.SimpleNamespace(ForcePlaceMultipleMarkups=2), raising=False)
        widget = SlideSAM.SlideSAMWidget(types.SimpleNamespace(isEntered=True))
        widget.setup()
        widget.logic.setModel(slidesam_model)  # the session's model, loaded once
        yield types.SimpleNamespace(widget=widget, ui=widget.ui, ct=ct, views=views, errors=errors, scene=mrml.scene,
                                    raised=qt.slot_exceptions)
        widget.cleanup()


def shortcut(gui, name):
    key = next(key for n, key, _ in SHORTCUTS if n == name)
    return next(s for s in gui.widget._shortcuts if s.key.text == key)


def run_to_end(gui, timeout=600):
    """Poll as Slicer's timer would until the run is over (Cancel is enabled exactly while one runs)."""
    deadline = time.time() + timeout
    while gui.ui.cancelButton.enabled:
        assert time.time() < deadline, "the run did not finish"
        time.sleep(0.05)
        gui.widget._timer.fire()


def ras_of(ct, ijk):
    return lps_to_ras(ct.image.TransformContinuousIndexToPhysicalPoint([float(c) for c in ijk]))


def show_slice(gui, k):
    """Move the axial view onto slice k of the CT."""
    gui.views["Red"].JumpSliceByOffsetting(*ras_of(gui.ct, (10, 10, k)))


def test_panel_shortcuts_and_buttons_follow_the_selection(gui):
    ui, ct = gui.ui, gui.ct
    assert gui.widget.layout.widgets and gui.widget.layout.widgets[0].name == "SlideSAM"
    assert sorted(s.key.text for s in gui.widget._shortcuts) == sorted(key for _, key, _ in SHORTCUTS)
    ui.inputVolumeSelector.setCurrentNode(ct.node)
    ui.segmentationSelector.setCurrentNode(None)
    assert not ui.propagateButton.enabled  # no segmentation yet
    segmentation = gui.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "widget run")
    ui.segmentationSelector.setCurrentNode(segmentation)
    node = gui.widget.logic.getParameterNode()
    assert node.GetNodeReferenceID("InputVolume") == ct.node.GetID()
    assert node.GetNodeReferenceID("Segmentation") == segmentation.GetID()
    assert ui.propagateButton.enabled and not ui.restartButton.enabled and not ui.cancelButton.enabled and not ui.undoButton.enabled
    assert not ui.serverUrlLineEdit.enabled and not ui.testConnectionButton.enabled  # embedded source


def test_settings_round_trip_through_the_parameter_node_and_the_key_stays_out(gui):
    ui, node = gui.ui, gui.widget.logic.getParameterNode()
    ui.directionComboBox.currentIndex = ui.directionComboBox.findText("down")
    assert node.GetParameter("Direction") == "down"
    node.SetParameter("Direction", "both")  # e.g. a scene loaded with other settings
    assert ui.directionComboBox.currentText == "both"
    ui.apiKeyLineEdit.text = "secret-key"
    ui.serverUrlLineEdit.text = "http://gpu-box:8765"
    names = node.GetParameterNames() if hasattr(node, "GetParameterNames") else list(gui.widget.SETTINGS)
    assert all("secret-key" not in node.GetParameter(name) for name in names)
    assert node.GetParameter("ServerURL") == "http://gpu-box:8765"
    ui.apiKeyLineEdit.text = ""
    ui.serverUrlLineEdit.text = ""


def test_box_shortcut_creates_an_roi_in_place_mode(gui):
    ui = gui.ui
    assert ui.boxSelector.currentNode() is None
    shortcut(gui, "placeBox").emit("activated()")
    roi = ui.boxSelector.currentNode()
    assert roi is not None and roi.IsA("vtkMRMLMarkupsROINode")
    assert ui.boxPlaceWidget.currentNode() is roi and ui.boxPlaceWidget.placeModeEnabled


def test_propagate_button_writes_the_kidney_into_a_new_segment(gui):
    ui, ct = gui.ui, gui.ct
    roi = ui.boxSelector.currentNode()
    c0, c1 = (np.asarray(c) for c in ct.box_ras)
    roi.SetCenterWorld(*((c0 + c1) / 2))
    roi.SetSizeWorld(*np.abs(c1 - c0))
    show_slice(gui, ct.k)
    ui.sliceRangeCheckBox.checked = True
    ui.firstSliceSpinBox.value, ui.lastSliceSpinBox.value = ct.k - RANGE, ct.k + RANGE
    ui.propagateButton.click()
    assert ui.cancelButton.enabled and not ui.propagateButton.enabled  # running in the background
    run_to_end(gui)
    assert not gui.errors and not gui.raised, (gui.errors, gui.raised)
    segmentation, segmentId = ui.segmentationSelector.currentNode(), ui.segmentSelector.currentSegmentID()
    assert segmentId and gui.widget.logic.getParameterNode().GetParameter("SegmentID") == segmentId
    assert ui.progressBar.value == 100 and "slices (K" in ui.statusLabel.text
    mask = read_segment(segmentation, segmentId, ct.node)
    written = np.nonzero(mask.any(axis=(1, 2)))[0]
    assert ct.k in written and written.min() >= ct.k - RANGE and written.max() <= ct.k + RANGE
    inner = slice(ct.k - RANGE + 1, ct.k + RANGE)
    assert dice(mask[inner], ct.reference[inner]) > 0.8  # a lost or flipped geometry cannot reach this
    assert ui.undoButton.enabled and ui.restartButton.enabled and ui.propagateButton.enabled


def test_restart_from_the_shown_slice_replaces_one_side_and_undo_restores(gui):
    ui, ct = gui.ui, gui.ct
    segmentation, segmentId = ui.segmentationSelector.currentNode(), ui.segmentSelector.currentSegmentID()
    fixed = ct.k + 2
    edited = read_segment(segmentation, segmentId, ct.node)
    edited[fixed] = ct.reference[fixed]  # the annotator's correction with Segment Editor
    edited[fixed + 1 :] = 0
    slicer.util.updateSegmentBinaryLabelmapFromArray(edited, segmentation, segmentId, ct.node)
    before = read_segment(segmentation, segmentId, ct.node)
    show_slice(gui, fixed)
    ui.directionComboBox.currentIndex = ui.directionComboBox.findText("up")
    ui.restartButton.click()
    run_to_end(gui)
    assert not gui.errors and not gui.raised, (gui.errors, gui.raised)
    after = read_segment(segmentation, segmentId, ct.node)
    np.testing.assert_array_equal(after[: fixed + 1], before[: fixed + 1])  # the corrected slice and below untouched
    assert after[fixed + 1 : ct.k + RANGE + 1].any()  # the upper side propagated again from the correction
    ui.undoButton.click()
    assert ui.statusLabel.text == "last run undone"
    np.testing.assert_array_equal(read_segment(segmentation, segmentId, ct.node), before)
    ui.directionComboBox.currentIndex = ui.directionComboBox.findText("both")


def test_cancel_button_keeps_a_partial_result(gui):
    ui, ct = gui.ui, gui.ct
    segmentation = gui.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "widget cancel")
    ui.segmentationSelector.setCurrentNode(segmentation)
    show_slice(gui, ct.k)
    ui.sliceRangeCheckBox.checked = False  # the whole volume: far more than can finish before Cancel
    ui.propagateButton.click()
    ui.cancelButton.click()
    run_to_end(gui)
    assert ui.statusLabel.text.startswith("cancelled, partial result kept")
    written = np.nonzero(read_segment(segmentation, ui.segmentSelector.currentSegmentID(), ct.node).any(axis=(1, 2)))[0]
    assert ct.k in written and written.tolist() == list(range(written[0], written[-1] + 1))


def test_mistakes_get_one_message_and_start_nothing(gui):
    ui, ct = gui.ui, gui.ct
    segmentation = gui.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "widget mistakes")
    ui.segmentationSelector.setCurrentNode(segmentation)
    ui.modelSourceComboBox.currentIndex = gui.widget.SOURCE_SERVER
    assert ui.serverUrlLineEdit.enabled and ui.testConnectionButton.enabled and not ui.deviceComboBox.enabled
    assert not gui.raised
    ui.propagateButton.click()
    assert len(gui.errors) == 1 and "no server URL" in gui.errors[0]
    assert [type(e).__name__ for e in gui.raised] == ["InputError"]  # shown, and left in the Python console
    assert not ui.cancelButton.enabled and segmentation.GetSegmentation().GetNumberOfSegments() == 0
    ui.modelSourceComboBox.currentIndex = gui.widget.SOURCE_EMBEDDED
    gui.errors.clear()
    gui.raised.clear()
    # A click on an oblique view: refused with the fix, not propagated along some other axis.
    view = gui.views["Red"]
    matrix = view.GetSliceToRAS()
    angle = np.radians(20)
    matrix.SetElement(1, 1, np.cos(angle)), matrix.SetElement(1, 2, -np.sin(angle))
    matrix.SetElement(2, 1, np.sin(angle)), matrix.SetElement(2, 2, np.cos(angle))
    centre = (np.asarray(ct.box_ras[0]) + np.asarray(ct.box_ras[1])) / 2
    for row in range(3):
        matrix.SetElement(row, 3, centre[row])
    view.UpdateMatrices()
    for name in ("Yellow", "Green"):  # keep the other views away from the click
        gui.views[name].JumpSliceByOffsetting(*(centre + 500.0))
    points = gui.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "oblique click")
    points.AddControlPoint(*centre)
    box = ui.boxSelector.currentNode()
    ui.boxSelector.setCurrentNode(None)
    ui.includePointsSelector.setCurrentNode(points)
    ui.propagateButton.click()
    assert len(gui.errors) == 1 and "oblique" in gui.errors[0] and "Rotate to volume plane" in gui.errors[0], gui.errors
    assert not ui.cancelButton.enabled and segmentation.GetSegmentation().GetNumberOfSegments() == 0
    ui.includePointsSelector.setCurrentNode(None)
    ui.boxSelector.setCurrentNode(box)
    view.SetOrientation("Axial")
