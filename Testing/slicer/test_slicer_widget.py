"""The module's widget driven as an annotator would: select nodes, place a box, press Propagate, restart
from a corrected slice, undo, cancel, close the scene, and mistakes. Real widget code, real logic, real MRML
(slicer-core: markups, selection and interaction nodes, the markups logic) and a real CT; only the Qt widgets of
SlideSAM.ui are stand-ins (Testing/slicer/standins/uiwidgets.py), built from the .ui file itself, and the run is polled
by firing the widget's timer by hand.  Each test builds its own panel (setup, then enter, as Slicer shows a module)
and its own prompt and segmentation: any one of them runs alone.
"""
import time
import types

import numpy as np
import pytest
import qt
import slicer
import vtk
from uiwidgets import PlaceWidget, load_ui

import SlideSAM
from SlideSAMLib.errors import InputError
from SlideSAMSlicer import geometry
from SlideSAMSlicer.shortcuts import SHORTCUTS
from SlideSAMSlicer.writer import EditRules, read_segment, save_segment_editor_state
from slicer_data import dice, lps_to_ras, refinement_clicks

RANGE = 4  # slices each side of the prompt: keeps the encoder cost of this module small
ORIENTATIONS = (("Red", "Axial"), ("Yellow", "Sagittal"), ("Green", "Coronal"))


@pytest.fixture(scope="module")
def env(mrml, data_dir, slidesam_model):
    from slicer_data import load_kidney_ct

    ct = load_kidney_ct(mrml, data_dir)
    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(mrml.scene)
    views = {}
    for name, orientation in ORIENTATIONS:
        views[name] = mrml.scene.AddNewNodeByClass("vtkMRMLSliceNode", name)
        views[name].SetLayoutName(name)
    layout = types.SimpleNamespace(sliceViewNames=lambda: list(views),
                                   # None for a name the layout does not have, as qMRMLLayoutManager::sliceWidget
                                   sliceWidget=lambda name: types.SimpleNamespace(mrmlSliceNode=lambda: views[name]) if name in views else None)
    errors = []  # what the user was shown
    settings = qt.QSettings()  # the application settings (Slicer.ini)

    def loadUI(path):
        root, widgets = load_ui(path)
        root.children = widgets
        return root

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(slicer, "app", types.SimpleNamespace(
            applicationLogic=slicer.app.applicationLogic, mrmlScene=slicer.app.mrmlScene, layoutManager=lambda: layout,
            setOverrideCursor=lambda cursor: None, restoreOverrideCursor=lambda: None, testingEnabled=lambda: False, settings=lambda: settings))
        mp.setattr(slicer.util, "loadUI", loadUI)
        mp.setattr(slicer.util, "childWidgetVariables", lambda root: types.SimpleNamespace(**root.children))
        mp.setattr(slicer.util, "mainWindow", lambda: None)  # as with --no-main-window
        mp.setattr(slicer.util, "errorDisplay", lambda text, **kwargs: errors.append(text))
        mp.setattr(slicer, "qSlicerMarkupsPlaceWidget", PlaceWidget, raising=False)
        yield types.SimpleNamespace(ct=ct, views=views, errors=errors, scene=mrml.scene, model=slidesam_model, mp=mp)


@pytest.fixture
def gui(env):
    """A fresh panel: no parameter node, views back to their orientations, nothing being placed."""
    scene = env.scene
    old = scene.GetSingletonNode("SlideSAM", "vtkMRMLScriptedModuleNode")
    if old is not None:
        scene.RemoveNode(old)
    for name, orientation in ORIENTATIONS:
        env.views[name].SetOrientation(orientation)
    interaction = slicer.app.applicationLogic().GetInteractionNode()
    interaction.SetPlaceModePersistence(False)
    interaction.SetCurrentInteractionMode(interaction.ViewTransform)
    env.errors.clear()
    qt.slot_exceptions.clear()
    panel = types.SimpleNamespace(isEntered=True)  # the module panel Slicer gives the widget
    widget = SlideSAM.SlideSAMWidget(panel)
    widget.setup()
    widget.logic.setModel(env.model)  # the session's model, loaded once
    widget.enter()
    yield types.SimpleNamespace(widget=widget, ui=widget.ui, ct=env.ct, views=env.views, errors=env.errors, scene=scene,
                                raised=qt.slot_exceptions, panel=panel, interaction=interaction)
    widget.exit()
    widget.cleanup()


def new_segmentation(gui, name):
    segmentation = gui.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    gui.ui.inputVolumeSelector.setCurrentNode(gui.ct.node)
    gui.ui.segmentationSelector.setCurrentNode(segmentation)
    return segmentation


def kidney_box(gui, name="kidney box"):
    """An ROI around the left kidney on its largest slice, selected as the box."""
    roi = gui.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", name)
    c0, c1 = (np.asarray(c) for c in gui.ct.box_ras)
    roi.SetCenterWorld(*((c0 + c1) / 2))
    roi.SetSizeWorld(*np.abs(c1 - c0))
    gui.ui.boxSelector.setCurrentNode(roi)
    return roi


def place_with_two_clicks(gui, ras_a, ras_b):
    """Two clicks in a slice view in Place mode, handled as Slicer's markups displayable manager does
    (vtkMRMLMarkupsDisplayableManager::GetWidgetForPlacement, v5.10.0): the points go into the active place node,
    unless it already holds as many defined points as it may — then the markups logic adds a new node of that class
    and the selection node makes it the active one.  Without persistence, place mode ends after the placement."""
    selection = slicer.app.applicationLogic().GetSelectionNode()
    assert gui.interaction.GetCurrentInteractionMode() == gui.interaction.Place
    node = gui.scene.GetNodeByID(selection.GetActivePlaceNodeID())
    if node is None or 0 <= node.GetMaximumNumberOfControlPoints() <= node.GetNumberOfDefinedControlPoints():
        node = slicer.modules.markups.logic().AddNewMarkupsNode(selection.GetActivePlaceNodeClassName())
        selection.SetReferenceActivePlaceNodeID(node.GetID())
    node.AddControlPointWorld(*ras_a)
    node.AddControlPointWorld(*ras_b)
    if not gui.interaction.GetPlaceModePersistence():
        gui.interaction.SetCurrentInteractionMode(gui.interaction.ViewTransform)
    return node


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


def in_slice_range(gui):
    """Tick "Only slices" and keep the run within RANGE slices of the kidney's prompt slice."""
    ui, ct = gui.ui, gui.ct
    ui.sliceRangeCheckBox.checked = True
    ui.firstSliceSpinBox.value, ui.lastSliceSpinBox.value = ct.k - RANGE, ct.k + RANGE


def propagate_kidney(gui, name):
    """Press Propagate with the kidney box on its prompt slice, within the range, into a new segmentation (returned)."""
    segmentation = new_segmentation(gui, name)
    kidney_box(gui)
    show_slice(gui, gui.ct.k)
    in_slice_range(gui)
    gui.ui.propagateButton.click()
    return segmentation


def press_propagate_on_the_kidney(gui):
    """Propagate the kidney box into the selected segmentation and wait for the run's end (no error)."""
    kidney_box(gui)
    show_slice(gui, gui.ct.k)
    in_slice_range(gui)
    gui.ui.propagateButton.click()
    run_to_end(gui)
    assert not gui.errors, gui.errors


def refinement_setup(gui, segmentation):
    """After a kidney run: its segment ID and voxels, the slice to refine (k + 1), that slice's exclude and include
    pixels (slicer_data.refinement_clicks), and two empty point lists set as the widget's include / exclude points."""
    ui, ct = gui.ui, gui.ct
    segmentId = ui.segmentSelector.currentSegmentID()
    before = read_segment(segmentation, segmentId, ct.node)
    k = ct.k + 1
    (ex, ey), (ix, iy) = refinement_clicks(before[k] > 0, ct.reference[k] > 0)
    include = gui.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "include")
    exclude = gui.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "exclude")
    ui.includePointsSelector.setCurrentNode(include)
    ui.excludePointsSelector.setCurrentNode(exclude)
    return segmentId, before, k, (ex, ey), (ix, iy), include, exclude


def corrected_kidney(gui, name, fixed):
    """A segment holding the reference kidney up to slice `fixed` (an annotator's correction there, empty above),
    selected, with `fixed` shown and the panel set to restart upwards within the range: (node, segment ID, before)."""
    ui, ct = gui.ui, gui.ct
    segmentation = new_segmentation(gui, name)
    segmentId = segmentation.GetSegmentation().AddEmptySegment("kidney", "kidney")
    edited = ct.reference.copy()
    edited[fixed + 1 :] = 0
    slicer.util.updateSegmentBinaryLabelmapFromArray(edited, segmentation, segmentId, ct.node)
    ui.segmentSelector.setCurrentNode(segmentation)
    ui.segmentSelector.setCurrentSegmentID(segmentId)
    before = read_segment(segmentation, segmentId, ct.node)
    show_slice(gui, fixed)
    ui.directionComboBox.currentIndex = ui.directionComboBox.findText("up")
    in_slice_range(gui)
    return segmentation, segmentId, before


def test_panel_and_buttons_follow_the_selection(gui):
    ui, ct = gui.ui, gui.ct
    assert gui.widget.layout.widgets and gui.widget.layout.widgets[0].name == "SlideSAM"
    ui.inputVolumeSelector.setCurrentNode(ct.node)
    ui.segmentationSelector.setCurrentNode(None)
    assert not ui.propagateButton.enabled  # no segmentation yet
    segmentation = new_segmentation(gui, "widget run")
    node = gui.widget.logic.getParameterNode()
    assert node.GetNodeReferenceID("InputVolume") == ct.node.GetID()
    assert node.GetNodeReferenceID("Segmentation") == segmentation.GetID()
    assert ui.propagateButton.enabled and not ui.restartButton.enabled and not ui.cancelButton.enabled and not ui.undoButton.enabled
    assert not ui.serverUrlLineEdit.enabled and not ui.testConnectionButton.enabled  # embedded source


@pytest.mark.parametrize("main_window", [None, "main window"])
def test_shortcuts_act_only_while_the_module_is_shown(gui, monkeypatch, main_window):
    widget = gui.widget
    widget.exit()  # the user switches to another module
    monkeypatch.setattr(slicer.util, "mainWindow", lambda: main_window)
    assert widget._shortcuts == []
    widget.enter()
    assert sorted(s.key.text for s in widget._shortcuts) == sorted(key for _, key, _ in SHORTCUTS)
    assert all(s.parent is (main_window or gui.panel) for s in widget._shortcuts)  # --no-main-window: the module panel
    place_box = shortcut(gui, "placeBox")
    place_box.press()
    roi = gui.ui.boxSelector.currentNode()
    assert roi is not None and roi.IsA("vtkMRMLMarkupsROINode") and gui.ui.boxPlaceWidget.placeModeEnabled
    gui.ui.boxSelector.setCurrentNode(None)
    widget.exit()
    place_box.press()  # in another module the key does nothing here
    assert gui.ui.boxSelector.currentNode() is None and widget._shortcuts == []


def test_every_shortcut_runs_its_own_action(gui, monkeypatch):
    widget, ui, ran = gui.widget, gui.ui, []
    widget.exit()
    for method in ("onPropagate", "onRestart", "onRefine", "onCancel", "onUndo"):
        monkeypatch.setattr(widget, method, lambda method=method: ran.append(method))
    monkeypatch.setattr(widget, "startPlacing", lambda placeWidget, selector, className, name: ran.append((placeWidget.name, selector.name, className)))
    widget.enter()
    for name, _, _ in SHORTCUTS:
        shortcut(gui, name).press()
    assert ran == [("boxPlaceWidget", "boxSelector", "vtkMRMLMarkupsROINode"),
                   ("includePlaceWidget", "includePointsSelector", "vtkMRMLMarkupsFiducialNode"),
                   ("excludePlaceWidget", "excludePointsSelector", "vtkMRMLMarkupsFiducialNode"),
                   "onPropagate", "onRestart", "onRefine", "onCancel", "onUndo"]
    assert [name for name, _, _ in SHORTCUTS] == ["placeBox", "placeInclude", "placeExclude", "propagate", "restart", "refine", "cancel", "undo"]


def test_settings_are_kept_by_stable_keys_and_the_api_key_stays_out(gui):
    ui, node = gui.ui, gui.widget.logic.getParameterNode()
    ui.directionComboBox.currentIndex = ui.directionComboBox.findText("down")
    assert node.GetParameter("Direction") == "down"
    node.SetParameter("Direction", "both")  # e.g. a scene loaded with other settings
    assert ui.directionComboBox.currentText == "both"
    ui.modelSourceComboBox.currentIndex = gui.widget.SOURCE_SERVER
    assert node.GetParameter("ModelSource") == "server"  # not the entry's text, which a translation changes
    ui.modelSourceComboBox.items[gui.widget.SOURCE_CHECKPOINT] = "Fichier de poids"  # a translated panel
    node.SetParameter("ModelSource", "checkpoint")
    assert ui.modelSourceComboBox.currentIndex == gui.widget.SOURCE_CHECKPOINT
    node.SetParameter("Device", "cuda")
    assert ui.deviceComboBox.currentIndex == 2
    for name, keys in gui.widget.COMBO_KEYS.items():
        assert len(getattr(ui, name).items) == len(keys), name  # one key per entry of the .ui
    ui.apiKeyLineEdit.text = "secret-key"
    ui.serverUrlLineEdit.text = "http://gpu-box:8765"
    names = node.GetParameterNames() if hasattr(node, "GetParameterNames") else list(gui.widget.SETTINGS)
    assert all("secret-key" not in node.GetParameter(name) for name in names)
    assert node.GetParameter("ServerURL") == "http://gpu-box:8765"


def test_a_checkpoint_folder_can_be_chosen(gui, tmp_path):
    adapter = tmp_path / "adapter"  # what 'slidesam train' writes: a folder
    adapter.mkdir()
    gui.ui.modelSourceComboBox.currentIndex = gui.widget.SOURCE_CHECKPOINT
    gui.ui.checkpointPathLineEdit.currentPath = str(adapter)
    assert gui.widget.logic.getParameterNode().GetParameter("Checkpoint") == str(adapter)
    gui.ui.checkpointPathLineEdit.currentPath = str(tmp_path / "litemedsam.pth")
    assert gui.widget.logic.getParameterNode().GetParameter("Checkpoint") == str(tmp_path / "litemedsam.pth")


def test_a_box_is_placed_once_even_after_placing_points(gui):
    ui = gui.ui
    assert ui.boxPlaceWidget.placeMultipleMarkups == PlaceWidget.ForcePlaceSingleMarkup
    ui.includePointsSelector.setCurrentNode(gui.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "include"))
    ui.includePlaceWidget.setPlaceModeEnabled(True)  # the user clicks the place button beside the include points
    assert gui.interaction.GetPlaceModePersistence()  # many include points per placement
    ui.boxSelector.setCurrentNode(gui.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "box"))
    ui.boxPlaceWidget.setPlaceModeEnabled(True)  # then the one beside the box
    assert ui.boxPlaceWidget.placeModeEnabled and not gui.interaction.GetPlaceModePersistence()
    roi = place_with_two_clicks(gui, *gui.ct.box_ras)
    assert roi is ui.boxSelector.currentNode()
    assert gui.interaction.GetCurrentInteractionMode() == gui.interaction.ViewTransform  # no third click starts another ROI


def test_a_box_placement_abandoned_with_esc_keeps_the_box_propagate_uses(gui, monkeypatch):
    # Slicer adds the next ROI as soon as the mouse moves over a view in Place mode (the active ROI is full:
    # vtkMRMLMarkupsDisplayableManager::GetWidgetForPlacement on a MouseMoveEvent) and makes it the active place node;
    # the box selector follows it. Esc then leaves that ROI without a point: Propagate said "has no area yet".
    ui, ct = gui.ui, gui.ct
    new_segmentation(gui, "abandoned")
    show_slice(gui, ct.k)
    shortcut(gui, "placeBox").press()
    first = place_with_two_clicks(gui, *ct.box_ras)
    shortcut(gui, "placeBox").press()
    selection = slicer.app.applicationLogic().GetSelectionNode()
    hover = slicer.modules.markups.logic().AddNewMarkupsNode("vtkMRMLMarkupsROINode")  # the mouse enters a view
    selection.SetReferenceActivePlaceNodeID(hover.GetID())
    assert ui.boxSelector.currentNode() is hover
    gui.interaction.SetCurrentInteractionMode(gui.interaction.ViewTransform)  # Esc
    used = []

    def prepare(volume, segmentation, segmentId, box=None, **kwargs):
        used.append(box)
        raise InputError("stopped by the test")

    monkeypatch.setattr(gui.widget.logic, "prepareSegment", prepare)
    ui.propagateButton.click()
    assert used == [first] and ui.boxSelector.currentNode() is first


def test_restart_without_a_red_view_uses_the_first_slice_view(gui, monkeypatch):
    # A layout without a view named Red (a custom layout): sliceWidget("Red") is None; it raised AttributeError.
    yellow = gui.views["Yellow"]  # (the scene's first node named Yellow is a colour table)
    only_yellow = types.SimpleNamespace(sliceViewNames=lambda: ["Yellow"],
                                        sliceWidget=lambda name: types.SimpleNamespace(mrmlSliceNode=lambda: yellow) if name == "Yellow" else None)
    monkeypatch.setattr(slicer.app, "layoutManager", lambda: only_yellow)
    assert gui.widget._firstSliceNode() is yellow
    monkeypatch.setattr(slicer.app, "layoutManager", lambda: types.SimpleNamespace(sliceViewNames=lambda: [], sliceWidget=lambda name: None))
    with pytest.raises(InputError, match="^no slice view is shown"):
        gui.widget._firstSliceNode()


def test_views_shown_in_the_layout_are_tried_first_and_red_among_equals(gui, monkeypatch):
    # sliceViewNames() is in no set order (the keys of qMRMLLayoutViewFactory's QHash) and still names the views of
    # earlier layouts, unmapped (qMRMLLayoutViewFactory::beginSetupLayout). A click where the hidden Red plane crosses
    # the shown Yellow one was taken as an axial prompt when Red came first.
    views, ct = gui.views, gui.ct
    names = ["Green", "Yellow", "Red"]
    layout = types.SimpleNamespace(sliceViewNames=lambda: names,
                                   sliceWidget=lambda name: types.SimpleNamespace(mrmlSliceNode=lambda: views[name]) if name in views else None)
    monkeypatch.setattr(slicer.app, "layoutManager", lambda: layout)
    assert gui.widget._sliceNodes()[0] is views["Red"]  # none mapped (this harness): Red first among equals
    click = ras_of(ct, (60, 50, ct.k))
    for view in views.values():
        view.JumpSliceByOffsetting(*click)
    assert geometry.pick_prompt_view(ct.node, gui.widget._sliceNodes(), points=[(click, True)])[2] is views["Red"]
    try:
        for name in names:
            views[name].SetMappedInLayout(name != "Red")  # a layout with Green and Yellow only (Red kept, hidden)
        assert gui.widget._sliceNodes() == [views["Green"], views["Yellow"], views["Red"]]
        assert gui.widget._firstSliceNode() is views["Green"]
        axis, _, view = geometry.pick_prompt_view(ct.node, gui.widget._sliceNodes(), points=[(click, True)])
        assert view is views["Green"] and axis == 1
    finally:
        for view in views.values():
            view.SetMappedInLayout(False)


def test_switching_from_include_to_exclude_placing_keeps_both_lists(gui):
    # Persistent placement leaves Slicer in Place mode after each include click; the exclude place button then makes
    # the exclude list the active place node before it sets Place mode (qSlicerMarkupsPlaceWidget::setPlaceModeEnabled),
    # so the active-place-node change arrives in Place mode with the include list as the previous node. The include
    # selector followed it to the exclude list before (audit of session 13): the include points were lost.
    ui = gui.ui
    include = gui.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "include")
    exclude = gui.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "exclude")
    ui.includePointsSelector.setCurrentNode(include)
    ui.excludePointsSelector.setCurrentNode(exclude)
    ui.includePlaceWidget.setPlaceModeEnabled(True)
    include.AddControlPointWorld(*gui.ct.box_ras[0])
    assert gui.interaction.GetCurrentInteractionMode() == gui.interaction.Place  # persistent: still placing
    ui.excludePlaceWidget.setPlaceModeEnabled(True)
    assert ui.includePointsSelector.currentNode() is include and ui.excludePointsSelector.currentNode() is exclude
    ui.includePlaceWidget.setPlaceModeEnabled(True)  # and back
    assert ui.includePointsSelector.currentNode() is include and ui.excludePointsSelector.currentNode() is exclude


@pytest.mark.parametrize("how", ["place button", "shortcut"])
def test_drawing_a_new_box_replaces_the_box_propagate_uses(gui, monkeypatch, how):
    ui, ct = gui.ui, gui.ct
    new_segmentation(gui, "new box")
    show_slice(gui, ct.k)

    def place_box():
        if how == "shortcut":
            shortcut(gui, "placeBox").press()
        else:
            ui.boxPlaceWidget.setPlaceModeEnabled(True)

    if how == "place button":
        ui.boxSelector.setCurrentNode(gui.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "SlideSAM box"))
    place_box()
    first = place_with_two_clicks(gui, *ct.box_ras)
    assert first is ui.boxSelector.currentNode() and first.GetName() == "SlideSAM box"
    (i0, j0, _), (i1, j1, _) = ct.box_ijk
    corners = [ras_of(ct, (i0 + 5, j0 + 4, ct.k)), ras_of(ct, (i1 - 3, j1 - 6, ct.k))]  # the annotator draws a tighter box
    place_box()
    second = place_with_two_clicks(gui, *corners)
    assert second is not first  # Slicer made a new ROI: the first one keeps its single control point
    assert ui.boxSelector.currentNode() is second and ui.boxPlaceWidget.currentNode() is second
    used = []

    def prepare(volume, segmentation, segmentId, box=None, **kwargs):
        used.append(geometry.engine_prompt(volume, box, axis=kwargs["axis"], index=kwargs["sliceIndex"]).box_ijk)
        raise InputError("stopped by the test")

    monkeypatch.setattr(gui.widget.logic, "prepareSegment", prepare)
    ui.propagateButton.click()
    np.testing.assert_allclose(used[0], [(i0 + 5, j0 + 4, ct.k), (i1 - 3, j1 - 6, ct.k)], atol=1e-6)


def test_a_box_drawn_on_a_volume_turned_against_ras_is_the_rectangle_drawn(gui, monkeypatch):
    # Slicer's two-click box is the bounding box of the clicks in the ROI's own axes, RAS for a new ROI
    # (vtkMRMLMarkupsROINode::UpdateBoundingBoxROIFromControlPoints): on a volume turned 15 degrees about S the
    # rectangle drawn became 1 x 1.37 of its size. Each new box, ours or the one Slicer makes when placing again,
    # now takes the volume's axes before its clicks.
    ui, ct = gui.ui, gui.ct
    turned = gui.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "turned CT")
    turned.SetAndObserveImageData(ct.node.GetImageData())
    ijk_to_ras = vtk.vtkMatrix4x4()
    ct.node.GetIJKToRASMatrix(ijk_to_ras)
    rotation = vtk.vtkTransform()
    rotation.RotateZ(15)
    vtk.vtkMatrix4x4.Multiply4x4(rotation.GetMatrix(), ijk_to_ras, ijk_to_ras)
    turned.SetIJKToRASMatrix(ijk_to_ras)
    segmentation = gui.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "turned")
    ui.inputVolumeSelector.setCurrentNode(turned)
    ui.segmentationSelector.setCurrentNode(segmentation)
    (i0, j0, _), (i1, j1, _) = ct.box_ijk
    drawn = [[(i0, j0, ct.k), (i1, j1, ct.k)], [(i0 + 5, j0 + 4, ct.k), (i1 - 3, j1 - 6, ct.k)]]
    gui.views["Red"].JumpSliceByOffsetting(*geometry.ijk_to_ras(turned, [[10, 10, ct.k]])[0])
    used = []

    def prepare(volume, segmentation, segmentId, box=None, **kwargs):
        used.append(geometry.engine_prompt(volume, box, axis=kwargs["axis"], index=kwargs["sliceIndex"]).box_ijk)
        raise InputError("stopped by the test")

    monkeypatch.setattr(gui.widget.logic, "prepareSegment", prepare)
    boxes = []
    for corners in drawn:  # the first box is made by the shortcut, the second by Slicer when placing again
        shortcut(gui, "placeBox").press()
        boxes.append(place_with_two_clicks(gui, *geometry.ijk_to_ras(turned, corners)))
        ui.propagateButton.click()
    assert boxes[0] is not boxes[1] and ui.boxSelector.currentNode() is boxes[1]
    np.testing.assert_allclose(used, drawn, atol=1e-6)


def test_propagate_button_writes_the_kidney_into_a_new_segment(gui):
    ui, ct = gui.ui, gui.ct
    segmentation = propagate_kidney(gui, "propagate")
    assert ui.cancelButton.enabled and not ui.propagateButton.enabled  # running in the background
    run_to_end(gui)
    assert not gui.errors and not gui.raised, (gui.errors, gui.raised)
    segmentId = ui.segmentSelector.currentSegmentID()
    assert segmentId and gui.widget.logic.getParameterNode().GetParameter("SegmentID") == segmentId
    assert ui.progressBar.value == 100 and "slices (K" in ui.statusLabel.text
    assert "stopped up (higher slice indices): " in ui.statusLabel.text and "; down (lower slice indices): " in ui.statusLabel.text  # in words
    mask = read_segment(segmentation, segmentId, ct.node)
    written = np.nonzero(mask.any(axis=(1, 2)))[0]
    assert ct.k in written and written.min() >= ct.k - RANGE and written.max() <= ct.k + RANGE
    inner = slice(ct.k - RANGE + 1, ct.k + RANGE)
    assert dice(mask[inner], ct.reference[inner]) > 0.8  # a lost or flipped geometry cannot reach this
    assert ui.undoButton.enabled and ui.restartButton.enabled and ui.propagateButton.enabled


def test_segment_editor_saves_its_undo_state_before_a_run_on_its_segmentation(gui, monkeypatch):
    # Stand-in for the Segment Editor's widget (slicer.modules.SegmentEditorWidget.editor, a qMRMLSegmentEditorWidget):
    # its saveStateForUndo slot and segmentationNode(). Saved before the run writes anything, so Segment Editor's Undo
    # takes back this run only; not saved for an editor on another segmentation, nor without an editor widget.
    saved = []

    class Editor:
        def __init__(self, node):
            self.node = node

        def segmentationNode(self):
            return self.node

        def saveStateForUndo(self):
            saved.append(self.node.GetSegmentation().GetNumberOfSegments())

    other = gui.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "edited elsewhere")
    monkeypatch.setattr(slicer.modules, "SegmentEditorWidget", types.SimpleNamespace(editor=Editor(other)), raising=False)
    save_segment_editor_state(new_segmentation(gui, "not the editor's"))
    assert saved == []
    segmentation = new_segmentation(gui, "the editor's")
    slicer.modules.SegmentEditorWidget.editor.node = segmentation
    press_propagate_on_the_kidney(gui)
    assert saved == [0]  # once, before the run's segment existed
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 1
    monkeypatch.delattr(slicer.modules, "SegmentEditorWidget")
    save_segment_editor_state(segmentation)  # no editor widget made yet: nothing to do, no error
    assert saved == [0]


def test_restart_from_the_shown_slice_replaces_one_side_and_undo_restores(gui):
    ui, ct = gui.ui, gui.ct
    fixed = ct.k + 2
    segmentation, segmentId, before = corrected_kidney(gui, "restart", fixed)
    ui.restartButton.click()
    run_to_end(gui)
    assert not gui.errors and not gui.raised, (gui.errors, gui.raised)
    after = read_segment(segmentation, segmentId, ct.node)
    np.testing.assert_array_equal(after[: fixed + 1], before[: fixed + 1])  # the corrected slice and below untouched
    assert after[fixed + 1 : ct.k + RANGE + 1].any()  # the upper side propagated again from the correction
    ui.undoButton.click()
    assert ui.statusLabel.text == "last run undone"
    np.testing.assert_array_equal(read_segment(segmentation, segmentId, ct.node), before)


def test_refine_with_the_points_on_the_shown_slice_and_undo_restores(gui):
    ui, ct = gui.ui, gui.ct
    segmentation = propagate_kidney(gui, "refine")
    run_to_end(gui)
    segmentId, before, k, (ex, ey), (ix, iy), include, exclude = refinement_setup(gui, segmentation)
    include.AddControlPointWorld(*ras_of(ct, (ix, iy, ct.k - 2)))  # an earlier point on another slice: not this refine's
    show_slice(gui, k)
    ui.refineButton.click()  # nothing placed on slice k yet
    assert gui.errors and "no include or exclude point on slice" in gui.errors[-1] and ui.statusLabel.text == "not started"
    assert [type(e).__name__ for e in gui.raised] == ["InputError"]  # shown, and left in the Python console
    np.testing.assert_array_equal(read_segment(segmentation, segmentId, ct.node), before)
    include.AddControlPointWorld(*ras_of(ct, (ix, iy, k)))
    exclude.AddControlPointWorld(*ras_of(ct, (ex, ey, k)))
    gui.errors.clear()
    gui.raised.clear()
    shortcut(gui, "refine").press()
    run_to_end(gui)
    assert not gui.errors and not gui.raised, (gui.errors, gui.raised)
    after = read_segment(segmentation, segmentId, ct.node)
    assert after[k, ey, ex] == 0 and after[k, iy, ix] == 1 and not np.array_equal(after[k], before[k])
    assert "0 encoder passes" in ui.statusLabel.text  # the run's windows are reused
    ui.undoButton.click()
    np.testing.assert_array_equal(read_segment(segmentation, segmentId, ct.node), before)


def test_cancel_button_keeps_a_partial_result(gui):
    ui, ct = gui.ui, gui.ct
    segmentation = new_segmentation(gui, "cancel")
    kidney_box(gui)
    show_slice(gui, ct.k)
    ui.sliceRangeCheckBox.checked = False  # the whole volume: far more than can finish before Cancel
    ui.propagateButton.click()
    ui.cancelButton.click()
    run_to_end(gui)
    assert ui.statusLabel.text.startswith("cancelled, partial result kept")
    written = np.nonzero(read_segment(segmentation, ui.segmentSelector.currentSegmentID(), ct.node).any(axis=(1, 2)))[0]
    assert ct.k in written and written.tolist() == list(range(written[0], written[-1] + 1))


def test_closing_the_scene_mid_run_writes_nothing_and_forgets_node_ids(gui):
    ui, ct, logic = gui.ui, gui.ct, gui.widget.logic
    segmentation = new_segmentation(gui, "closed")
    segmentId = segmentation.GetSegmentation().AddEmptySegment("earlier", "earlier")
    logic.writer.apply(ct.node, segmentation, segmentId, 2, {ct.k: ct.reference[ct.k]}, [ct.k], EditRules())  # an earlier run: undoable
    assert logic.canUndo(segmentation)
    kidney_box(gui)
    show_slice(gui, ct.k)
    ui.sliceRangeCheckBox.checked = False
    ui.propagateButton.click()
    background = gui.widget._background
    assert background is not None and ui.cancelButton.enabled
    gui.scene.StartState(gui.scene.CloseState)  # what vtkMRMLScene::Clear does around removing the nodes
    gui.scene.RemoveNode(segmentation)
    gui.scene.EndState(gui.scene.CloseState)
    assert background.wait(300)  # the engine saw the cancel
    for _ in range(3):
        gui.widget._timer.fire()
    assert not gui.raised and not gui.errors, (gui.raised, gui.errors)
    assert not gui.widget._timer.isActive() and not ui.cancelButton.enabled
    assert ui.statusLabel.text == "cancelled: the scene was closed; nothing was written"
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 1  # nothing written into the removed node
    assert not logic.canUndo(segmentation) and not logic._sessions and not logic._lastAxis  # IDs a new scene reuses


def test_a_failure_while_writing_is_shown_and_nothing_is_written(gui):
    ui, ct = gui.ui, gui.ct
    segmentation = new_segmentation(gui, "write fails")
    kidney_box(gui)
    show_slice(gui, ct.k)
    ui.sliceRangeCheckBox.checked = True
    ui.firstSliceSpinBox.value, ui.lastSliceSpinBox.value = ct.k - 1, ct.k + 1
    editor = gui.scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
    editor.SetSingletonTag("SegmentEditor")
    editor.SetAndObserveSegmentationNode(segmentation)
    editor.SetAndObserveSourceVolumeNode(ct.node)
    try:
        ui.propagateButton.click()
        assert ui.cancelButton.enabled
        other = gui.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "another scan")
        editor.SetAndObserveSourceVolumeNode(other)  # changed in Segment Editor during the run
        editor.SetSourceVolumeIntensityMask(True)
        run_to_end(gui)
        assert not gui.raised, gui.raised
        assert len(gui.errors) == 1 and "nothing was written" in gui.errors[0] and "another scan" in gui.errors[0], gui.errors
        assert ui.statusLabel.text == "failed: nothing was written" and ui.progressBar.value == 0
        assert segmentation.GetSegmentation().GetNumberOfSegments() == 0 and ui.propagateButton.enabled
    finally:
        gui.scene.RemoveNode(editor)


def test_mistakes_get_one_message_and_the_panel_says_nothing_started(gui):
    ui, ct = gui.ui, gui.ct
    segmentation = new_segmentation(gui, "mistakes")
    ui.modelSourceComboBox.currentIndex = gui.widget.SOURCE_SERVER
    assert ui.serverUrlLineEdit.enabled and ui.testConnectionButton.enabled and not ui.deviceComboBox.enabled
    ui.propagateButton.click()
    assert len(gui.errors) == 1 and "no server URL" in gui.errors[0]
    assert [type(e).__name__ for e in gui.raised] == ["InputError"]  # shown, and left in the Python console
    assert ui.statusLabel.text == "not started" and ui.propagateButton.enabled and not ui.cancelButton.enabled
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 0
    ui.serverUrlLineEdit.text = "http://127.0.0.1:9"  # nothing listens there
    ui.testConnectionButton.click()
    assert len(gui.errors) == 2 and ui.statusLabel.text == "no connection to the server" and ui.testConnectionButton.enabled
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
    ui.includePointsSelector.setCurrentNode(points)
    ui.propagateButton.click()
    assert len(gui.errors) == 1 and "oblique" in gui.errors[0] and "Rotate to volume plane" in gui.errors[0], gui.errors
    assert not ui.cancelButton.enabled and segmentation.GetSegmentation().GetNumberOfSegments() == 0
    assert ui.statusLabel.text == "not started"


def test_a_failed_undo_is_shown_and_the_buttons_still_follow(gui):
    ui, ct, logic = gui.ui, gui.ct, gui.widget.logic
    volume = gui.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "removed later")
    volume.SetAndObserveImageData(ct.node.GetImageData())
    segmentation = new_segmentation(gui, "undo fails")
    segmentId = segmentation.GetSegmentation().AddEmptySegment("s", "s")
    logic.writer.apply(volume, segmentation, segmentId, 2, {ct.k: ct.reference[ct.k]}, [ct.k], EditRules())
    gui.widget.updateButtons()
    assert ui.undoButton.enabled
    gui.scene.RemoveNode(volume)
    ui.undoButton.click()
    assert len(gui.errors) == 1 and "undo is not possible" in gui.errors[0]
    assert ui.statusLabel.text == "undo failed" and not ui.undoButton.enabled  # that step is gone: nothing left to undo
