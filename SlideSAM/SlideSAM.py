"""SlideSAM: box or click on one slice, propagate through the organ with a three-slice SAM (Slide-SAM).

Module (metadata, help), a thin widget and a self-test; the logic (also the scripting API) is SlideSAMSlicer.logic.
The engine is SlideSAMLib (no Slicer, no Qt); SlideSAMSlicer holds the MRML-side helpers.
"""
import functools
import logging
import os
import sys
import traceback

import qt
import slicer
import vtk
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleWidget
from slicer.util import VTKObservationMixin


def _addEngineToPath():
    """In a source checkout SlideSAMLib sits beside this module's folder; installed, it sits beside this file."""
    here = os.path.dirname(os.path.abspath(__file__))
    parent = os.path.dirname(here)
    if not os.path.isdir(os.path.join(here, "SlideSAMLib")) and os.path.isfile(os.path.join(parent, "SlideSAMLib", "__init__.py")):
        if parent not in sys.path:
            sys.path.append(parent)


_addEngineToPath()

from SlideSAMLib.engine_process import check_python_path  # noqa: E402  (standard library only)
from SlideSAMLib.errors import InputError, SlideSAMError  # noqa: E402  (light: no torch)
from SlideSAMSlicer import geometry  # noqa: E402
from SlideSAMSlicer.logic import DEFAULT_SEGMENT_NAME, DIRECTIONS, SlideSAMLogic  # noqa: E402,F401  (re-exported: the scripting API)
from SlideSAMSlicer.selftest import SlideSAMTest  # noqa: E402,F401  (Slicer runs <ModuleName>Test from this module)
from SlideSAMSlicer.shortcuts import SHORTCUTS, shortcuts_help_html  # noqa: E402
from SlideSAMSlicer.writer import check_editor, save_segment_editor_state  # noqa: E402


#
# Module
#
class SlideSAM(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "SlideSAM"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["SlideSAM contributors"]
        self.parent.helpText = (
            "<p>Prompt-driven 3D segmentation: place a box (click two opposite corners; a new box replaces the one used), "
            "optionally include / exclude points, on one slice of any "
            "slice view aligned with the volume, press <b>Propagate</b>, and a three-slice Segment-Anything model follows "
            "the structure slice by slice into the selected segment. Fix a slice with Segment Editor, then "
            "<b>Restart from this slice</b> to propagate again from the correction (only that side is replaced); or place include / "
            "exclude points on a slice of the result and press <b>Refine with points</b>: they correct that slice, which propagates "
            "again both ways. "
            "<b>Undo</b> reverts the last run. Segment Editor's editable area, intensity range and overwrite settings are honoured.</p>"
            "<p>Model: the embedded LiteMedSAM (CPU is fine), a checkpoint file, or a <b>SlideSAM server</b> "
            "(<code>slidesam serve</code> on a GPU machine: enter its URL and API key, press <b>Test connection</b>; "
            "Slicer then needs no torch).</p>"
            + shortcuts_help_html()
            + "<p>Scripting: <code>import SlideSAM; logic = SlideSAM.SlideSAMLogic(); "
            "logic.segment(volumeNode, segmentationNode, 'kidney', box=(rasCorner1, rasCorner2))</code>.</p>"
        )
        self.parent.acknowledgementText = (
            "SlideSAM implements the method of Quan Quan et al., <i>Slide-SAM: Medical SAM Meets Sliding Window</i>, "
            "MIDL 2024 (Medical Imaging with Deep Learning), arXiv 2311.10121. The default model is LiteMedSAM "
            "(MedSAM, Ma et al., Nature Communications 2024) adapted to three slices by the Slide-SAM recipe."
        )


#
# Widget
#
class SlideSAMWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Thin GUI: collects the prompt and options, runs the logic's job on a worker thread, shows progress."""

    POLL_MS = 100
    # Each tick first waits this long on the worker, releasing the GIL: Slicer's event loop keeps it between ticks, so
    # the worker's socket transfer otherwise moves only during ticks. Measured with Testing/slicer/gil_harness.py
    # --large (a 512 x 512 x 300 int16 CT's first run, its upload included; benchmarks/RESULTS_engine_process.md,
    # session 13): 8.5-9.6 s with no wait, 6.1-6.8 s with 5 ms, 5.5-5.7 s with 10 ms, 5.2 s with the GIL released
    # throughout. 10 ms of every 100 ms is the GUI's cost while a run goes.
    POLL_YIELD_S = 0.010
    SOURCE_EMBEDDED, SOURCE_CHECKPOINT, SOURCE_SERVER = range(3)  # model source combo box entries
    # combo box -> the stable key of each entry, in the .ui's order: what the parameter node stores (not the shown text)
    COMBO_KEYS = {
        "directionComboBox": DIRECTIONS,
        "modelSourceComboBox": ("embedded", "checkpoint", "server"),
        "deviceComboBox": ("auto", "cpu", "cuda", "mps"),
    }
    # parameter node key -> (ui widget name, kind)
    SETTINGS = {
        "Direction": ("directionComboBox", "combo"),
        "SliceRangeEnabled": ("sliceRangeCheckBox", "check"),
        "FirstSlice": ("firstSliceSpinBox", "spin"),
        "LastSlice": ("lastSliceSpinBox", "spin"),
        "ModelSource": ("modelSourceComboBox", "combo"),
        "Checkpoint": ("checkpointPathLineEdit", "path"),
        "Device": ("deviceComboBox", "combo"),
        "ServerURL": ("serverUrlLineEdit", "text"),  # the API key is kept out of the scene: it would be saved with it
        "HonourEditorMasking": ("editorMaskingCheckBox", "check"),
    }
    NODE_REFERENCES = {
        "InputVolume": "inputVolumeSelector",
        "Segmentation": "segmentationSelector",
        "Box": "boxSelector",
        "IncludePoints": "includePointsSelector",
        "ExcludePoints": "excludePointsSelector",
    }

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._updatingGUI = False
        self._job = None
        self._background = None
        self._preview = None  # the running job's slices shown in its segment (SlideSAMSlicer/preview.py)
        self._timer = None
        self._shortcuts = []
        self._promptView = None
        self._selectionNode = None
        self._activePlaceNodeID = None
        self._replacedBoxID = None  # the box a new ROI replaced in the box selector (see _box)

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SlideSAM.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = SlideSAMLogic()
        self.ui.segmentSelector.segmentationNodeSelectorVisible = False
        self.ui.boxPlaceWidget.setMRMLScene(slicer.mrmlScene)
        self.ui.includePlaceWidget.setMRMLScene(slicer.mrmlScene)
        self.ui.excludePlaceWidget.setMRMLScene(slicer.mrmlScene)
        # One box per placement (persistence off: a second click does not start another ROI); many points per list.
        self.ui.boxPlaceWidget.placeMultipleMarkups = slicer.qSlicerMarkupsPlaceWidget.ForcePlaceSingleMarkup
        self.ui.includePlaceWidget.placeMultipleMarkups = slicer.qSlicerMarkupsPlaceWidget.ForcePlaceMultipleMarkups
        self.ui.excludePlaceWidget.placeMultipleMarkups = slicer.qSlicerMarkupsPlaceWidget.ForcePlaceMultipleMarkups
        self._timer = qt.QTimer()
        self._timer.setInterval(self.POLL_MS)
        self._timer.connect("timeout()", self.onPoll)

        for key, name in self.NODE_REFERENCES.items():
            getattr(self.ui, name).connect("currentNodeChanged(vtkMRMLNode*)", self.updateParameterNodeFromGUI)
        self.ui.segmentationSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.ui.segmentSelector.setCurrentNode)
        self.ui.segmentSelector.connect("currentSegmentChanged(QString)", self.updateParameterNodeFromGUI)
        self.ui.boxSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.ui.boxPlaceWidget.setCurrentNode)
        # A new box (made here, in the selector, or by Slicer when placing again) takes the volume's axes before its clicks
        self.ui.boxSelector.connect("currentNodeChanged(vtkMRMLNode*)", lambda node: geometry.align_roi_to_volume(node, self.ui.inputVolumeSelector.currentNode()))
        self.ui.includePointsSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.ui.includePlaceWidget.setCurrentNode)
        self.ui.excludePointsSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.ui.excludePlaceWidget.setCurrentNode)
        for key, (name, kind) in self.SETTINGS.items():
            widget = getattr(self.ui, name)
            signal = {"combo": "currentIndexChanged(int)", "check": "toggled(bool)", "spin": "valueChanged(int)", "path": "currentPathChanged(QString)",
                      "text": "textChanged(QString)"}[kind]
            for sig in (signal, "validInputChanged(bool)") if kind == "path" else (signal,):  # as the Engine Python field below
                widget.connect(sig, self.updateParameterNodeFromGUI)
        self.ui.propagateButton.connect("clicked(bool)", self.onPropagate)
        self.ui.restartButton.connect("clicked(bool)", self.onRestart)
        self.ui.refineButton.connect("clicked(bool)", self.onRefine)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.undoButton.connect("clicked(bool)", self.onUndo)
        self.ui.testConnectionButton.connect("clicked(bool)", self.onTestConnection)
        self.ui.apiKeyLineEdit.text = os.environ.get("SLIDESAM_API_KEY", "")
        self.ui.enginePythonPathLineEdit.currentPath = self.logic.engineSettingPython() or ""  # an application setting, not the scene's
        for signal in ("currentPathChanged(QString)", "validInputChanged(bool)"):  # cleared: only validInputChanged (CTK updateHasValidInput)
            self.ui.enginePythonPathLineEdit.connect(signal, self.onEnginePythonChanged)

        self._selectionNode = slicer.app.applicationLogic().GetSelectionNode()
        self._activePlaceNodeID = self._selectionNode.GetActivePlaceNodeID()
        self.addObserver(self._selectionNode, self._selectionNode.ActivePlaceNodeIDChangedEvent, self.onActivePlaceNodeChanged)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()
        self.updateButtons()

    def cleanup(self):
        self._abandonRun("the module was closed")
        self.uninstallShortcuts()
        self.removeObservers()
        if self.logic is not None:
            self.logic.stopEngine()  # the local engine process goes with the module (an atexit hook also stops it)

    # -- shortcuts: active only while the module is shown (Slicer calls enter / exit), as Segment Editor does ----
    def installShortcuts(self):
        self.uninstallShortcuts()
        actions = {"placeBox": lambda: self.startPlacing(self.ui.boxPlaceWidget, self.ui.boxSelector, "vtkMRMLMarkupsROINode", "SlideSAM box"),
                   "placeInclude": lambda: self.startPlacing(self.ui.includePlaceWidget, self.ui.includePointsSelector, "vtkMRMLMarkupsFiducialNode", "SlideSAM include"),
                   "placeExclude": lambda: self.startPlacing(self.ui.excludePlaceWidget, self.ui.excludePointsSelector, "vtkMRMLMarkupsFiducialNode", "SlideSAM exclude"),
                   "propagate": self.onPropagate, "restart": self.onRestart, "refine": self.onRefine, "cancel": self.onCancel, "undo": self.onUndo}
        parent = slicer.util.mainWindow() or self.parent  # Slicer started with --no-main-window: the module panel
        for name, key, _text in SHORTCUTS:
            shortcut = qt.QShortcut(qt.QKeySequence(key), parent)
            shortcut.connect("activated()", actions[name])
            self._shortcuts.append(shortcut)

    def uninstallShortcuts(self):
        for shortcut in self._shortcuts:
            shortcut.setEnabled(False)
            shortcut.deleteLater()
        self._shortcuts = []

    def enter(self):
        self.installShortcuts()
        self.initializeParameterNode()

    def exit(self):
        self.uninstallShortcuts()

    # -- scene close: nothing may be written into the closing scene, nothing kept under its node IDs -------------
    def _abandonRun(self, reason, sceneCloses=False):
        """Stop following a running job: it is cancelled, its result dropped unwritten, the slices it showed taken
        back (in a closing scene only a segment made for them goes: nothing is written into it)."""
        if self._timer is not None:
            self._timer.stop()
        if self._background is not None:
            self._background.cancel()
            if self._preview is not None and self._job.segmentation_node.GetScene() is not None:
                self._preview.restore(write=not sceneCloses)
            self._background = self._job = self._preview = None
            self.ui.progressBar.value = 0
            self.ui.statusLabel.text = f"cancelled: {reason}; nothing was written"
            self.updateButtons()

    def onSceneStartClose(self, caller, event):
        self._abandonRun("the scene was closed", sceneCloses=True)
        self.logic.clearState()
        self._promptView = self._replacedBoxID = None
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        self._activePlaceNodeID = self._selectionNode.GetActivePlaceNodeID() if self._selectionNode else None
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        node = self.logic.getParameterNode()
        if not node.GetNodeReference("InputVolume"):
            # the first grey-level volume: GetFirstNodeByClass would also return a labelmap (a subclass), which the
            # input selector (showChildNodeTypes false) cannot show
            volume = next((v for v in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode") if not v.IsA("vtkMRMLLabelMapVolumeNode")), None)
            if volume:
                node.SetNodeReferenceID("InputVolume", volume.GetID())
        self.setParameterNode(node)

    def setParameterNode(self, node):
        if self._parameterNode is not None:
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        self._parameterNode = node
        if node is not None:
            self.addObserver(node, vtk.vtkCommand.ModifiedEvent, self.updateGUIFromParameterNode)
        self.updateGUIFromParameterNode()

    def updateGUIFromParameterNode(self, caller=None, event=None):
        node = self._parameterNode
        if node is None or self._updatingGUI:
            return
        self._updatingGUI = True
        try:
            for key, name in self.NODE_REFERENCES.items():
                getattr(self.ui, name).setCurrentNode(node.GetNodeReference(key))
            if node.GetParameter("SegmentID"):
                self.ui.segmentSelector.setCurrentSegmentID(node.GetParameter("SegmentID"))
            for key, (name, kind) in self.SETTINGS.items():
                value, widget = node.GetParameter(key), getattr(self.ui, name)
                if not value:
                    continue
                if kind == "combo":
                    keys = self.COMBO_KEYS[name]
                    if value in keys:
                        widget.currentIndex = keys.index(value)
                    else:
                        logging.warning(f"SlideSAM: ignoring saved {key} '{value}' (not one of {', '.join(keys)})")
                elif kind == "check":
                    widget.checked = value == "true"
                elif kind == "spin":
                    widget.value = int(value)
                elif kind == "text":
                    widget.text = value
                else:
                    widget.currentPath = value
        finally:
            self._updatingGUI = False
        self.updateButtons()

    def updateParameterNodeFromGUI(self, *args):
        node = self._parameterNode
        if node is None or self._updatingGUI:
            return
        wasModifying = node.StartModify()
        for key, name in self.NODE_REFERENCES.items():
            node.SetNodeReferenceID(key, getattr(self.ui, name).currentNodeID)
        node.SetParameter("SegmentID", self._segmentId() or "")
        for key, (name, kind) in self.SETTINGS.items():
            widget = getattr(self.ui, name)
            value = {"combo": lambda: self._comboKey(name), "check": lambda: "true" if widget.checked else "false",
                     "spin": lambda: str(widget.value), "path": lambda: widget.currentPath, "text": lambda: widget.text}[kind]()
            node.SetParameter(key, value)
        node.EndModify(wasModifying)
        self.updateButtons()

    def _segmentId(self):
        """The selected segment if the selected segmentation has it, else None (a new segment): Slicer's selector keeps the
        previous segmentation's ID when the new one has no segments (qMRMLSegmentSelectorWidget::populateSegmentCombobox)."""
        segmentation, segmentId = self.ui.segmentationSelector.currentNode(), self.ui.segmentSelector.currentSegmentID()
        return segmentId if segmentId and segmentation is not None and segmentation.GetSegmentation().GetSegment(segmentId) else None

    def _comboKey(self, name):
        keys, index = self.COMBO_KEYS[name], getattr(self.ui, name).currentIndex
        return keys[index] if 0 <= index < len(keys) else ""

    def updateButtons(self):
        busy = self._background is not None
        node = self._parameterNode
        ready = node is not None and node.GetNodeReference("InputVolume") is not None and node.GetNodeReference("Segmentation") is not None
        self.ui.propagateButton.enabled = ready and not busy
        self.ui.restartButton.enabled = self.ui.refineButton.enabled = ready and not busy and self._segmentId() is not None
        self.ui.cancelButton.enabled = busy
        self.ui.undoButton.enabled = not busy and self.logic.canUndo(self.ui.segmentationSelector.currentNode())
        source = self.ui.modelSourceComboBox.currentIndex
        self.ui.checkpointPathLineEdit.enabled = source == self.SOURCE_CHECKPOINT
        self.ui.deviceComboBox.enabled = self.ui.enginePythonPathLineEdit.enabled = source != self.SOURCE_SERVER
        for widget in (self.ui.serverUrlLineEdit, self.ui.apiKeyLineEdit):
            widget.enabled = source == self.SOURCE_SERVER
        self.ui.testConnectionButton.enabled = source == self.SOURCE_SERVER and not busy

    # -- prompts ----------------------------------------------------------------------------
    def startPlacing(self, placeWidget, selector, className, name):
        if selector.currentNode() is None:
            node = slicer.mrmlScene.AddNewNodeByClass(className, name)
            node.CreateDefaultDisplayNodes()
            if "exclude" in name:
                node.GetDisplayNode().SetSelectedColor(0.9, 0.2, 0.2)
            selector.setCurrentNode(node)
        if className == "vtkMRMLMarkupsROINode":
            geometry.align_roi_to_volume(selector.currentNode(), self.ui.inputVolumeSelector.currentNode())
        placeWidget.setCurrentNode(selector.currentNode())
        placeWidget.setPlaceModeEnabled(True)

    def onActivePlaceNodeChanged(self, caller, event):
        """Follow a markups node Slicer creates while one of the prompts is being placed.

        An ROI keeps one control point once placed; placing again makes Slicer's markups displayable manager add a
        new ROI node and make it the active place node (vtkMRMLMarkupsDisplayableManager::GetWidgetForPlacement).
        The prompt selectors follow it, as the Markups module's own panel does, so Propagate uses the box just drawn.
        """
        previous, self._activePlaceNodeID = self._activePlaceNodeID, caller.GetActivePlaceNodeID()
        node = slicer.mrmlScene.GetNodeByID(self._activePlaceNodeID) if self._activePlaceNodeID else None
        interaction = slicer.app.applicationLogic().GetInteractionNode()
        if node is None or not previous or interaction is None or interaction.GetCurrentInteractionMode() != interaction.Place:
            return
        selectors = (self.ui.boxSelector, self.ui.includePointsSelector, self.ui.excludePointsSelector)
        if any(selector.currentNode() is node for selector in selectors):
            # a prompt's own node made active (qSlicerMarkupsPlaceWidget::setPlaceModeEnabled calls SetActiveList before
            # it sets Place mode, so switching from include to exclude placing arrives here still in Place mode)
            return
        for selector in selectors:
            current = selector.currentNode()
            if current is not None and current.GetID() == previous and node.GetClassName() == current.GetClassName():
                if selector is self.ui.boxSelector:
                    self._replacedBoxID = previous  # Slicer makes the new ROI when the mouse enters a view: see _box
                selector.setCurrentNode(node)

    def _box(self):
        """The box Propagate uses. Slicer adds the new ROI as soon as the mouse moves over a view in Place mode
        (vtkMRMLMarkupsDisplayableManager::GetWidgetForPlacement), so a placement abandoned with Esc leaves the box
        selector on an ROI without a point: then the box it replaced is used again (and selected again)."""
        box = self.ui.boxSelector.currentNode()
        replaced = slicer.mrmlScene.GetNodeByID(self._replacedBoxID) if self._replacedBoxID else None
        if box is not None and box.GetNumberOfDefinedControlPoints() == 0 and replaced is not None and replaced.GetNumberOfDefinedControlPoints() > 0:
            self.ui.boxSelector.setCurrentNode(replaced)
            return replaced
        return box

    def _firstSliceNode(self):
        """Restart / refine without a prompt view of this session: the first of _sliceNodes (Red when it is shown)."""
        nodes = self._sliceNodes()
        if not nodes:
            raise InputError("no slice view is shown: choose a layout with a slice view, show the corrected slice in it, and try again")
        return nodes[0]

    def _sliceNodes(self):
        """The slice views, those shown in the layout first and Red first among equals. sliceViewNames() is in no set
        order (the keys of qMRMLLayoutViewFactory's QHash) and also names the views of earlier layouts, kept unmapped
        (beginSetupLayout: SetMappedInLayout(false)); sliceWidget returns None for a name the layout does not have."""
        layoutManager = slicer.app.layoutManager()
        widgets = [layoutManager.sliceWidget(name) for name in layoutManager.sliceViewNames()]
        nodes = [widget.mrmlSliceNode() for widget in widgets if widget is not None]
        return sorted(nodes, key=lambda node: (not node.IsViewVisibleInLayout(), node.GetLayoutName() != "Red"))

    # -- runs ------------------------------------------------------------------------------
    def _applyModelSource(self):
        source = self.ui.modelSourceComboBox.currentIndex
        if source == self.SOURCE_SERVER:
            if not self.ui.serverUrlLineEdit.text.strip():
                raise InputError("no server URL: enter the address of a machine running 'slidesam serve', e.g. http://gpu-box:8765")
            self.logic.setModelSource(server=self.ui.serverUrlLineEdit.text, apiKey=self.ui.apiKeyLineEdit.text)
        else:
            python = self.ui.enginePythonPathLineEdit.currentPath.strip() or None  # None: the setting, else PythonSlicer
            if python:
                check_python_path(python)
            self.logic.setModelSource(self.ui.checkpointPathLineEdit.currentPath if source == self.SOURCE_CHECKPOINT else None,
                                      self._comboKey("deviceComboBox"), enginePython=python)

    def onEnginePythonChanged(self, *args):
        """Save the Engine Python field (empty: Slicer's own PythonSlicer) and say at once, in one line, when it names no program
        (its version is checked when a run starts the engine)."""
        python = self.ui.enginePythonPathLineEdit.currentPath.strip()
        self.logic.setEngineSettingPython(python or None)
        try:
            if python:
                check_python_path(python)
            self.ui.statusLabel.text = "engine Python: " + (python or "PythonSlicer (Slicer's own)")
        except SlideSAMError as exc:
            self.ui.statusLabel.text = str(exc)

    def onTestConnection(self):
        # slicer.util.tryWithErrorDisplay shows the error and re-raises it: the label is set whatever happens.
        self.ui.statusLabel.text = "connecting..."
        message = "no connection to the server"
        try:
            with slicer.util.tryWithErrorDisplay("SlideSAM cannot use the server", waitCursor=True):
                self._applyModelSource()
                message = self.logic.testConnection()
        finally:
            self.ui.statusLabel.text = message

    def _options(self):
        self._applyModelSource()
        sliceRange = (self.ui.firstSliceSpinBox.value, self.ui.lastSliceSpinBox.value) if self.ui.sliceRangeCheckBox.checked else None
        editor = slicer.mrmlScene.GetSingletonNode("SegmentEditor", "vtkMRMLSegmentEditorNode") if self.ui.editorMaskingCheckBox.checked else None
        return self._comboKey("directionComboBox"), sliceRange, editor

    def _startOrReport(self, title, prepare):
        """Prepare a job and start it; a mistake is shown (tryWithErrorDisplay re-raises it to the console) and the
        panel still says that nothing started."""
        started = False
        try:
            with slicer.util.tryWithErrorDisplay(title, waitCursor=True):
                started = self._start(prepare())
        finally:
            if not started:
                self.ui.progressBar.value = 0
                self.ui.statusLabel.text = "not started"
            self.updateButtons()

    def onPropagate(self):
        if self._background is not None:
            return

        def prepare():
            volume, segmentation = self.ui.inputVolumeSelector.currentNode(), self.ui.segmentationSelector.currentNode()
            box, include, exclude = self._box(), self.ui.includePointsSelector.currentNode(), self.ui.excludePointsSelector.currentNode()
            direction, sliceRange, editor = self._options()
            axis, index, view = geometry.pick_prompt_view(volume, self._sliceNodes(), box, include, exclude) if volume else (None, None, None)
            self._promptView = view
            return self.logic.prepareSegment(volume, segmentation, self._segmentId(), box=box, points=include,
                                             excludePoints=exclude, direction=direction, sliceRange=sliceRange, axis=axis, sliceIndex=index, editorNode=editor)

        self._startOrReport("SlideSAM could not start", prepare)

    def onRestart(self):
        if self._background is not None:
            return

        def prepare():
            volume, segmentation = self.ui.inputVolumeSelector.currentNode(), self.ui.segmentationSelector.currentNode()
            direction, sliceRange, editor = self._options()
            view = self._promptView or self._firstSliceNode()
            axis, index = geometry.slice_view_axis_and_index(volume, view)
            return self.logic.prepareRestart(volume, segmentation, self._segmentId(), index, axis=axis,
                                             direction=direction, sliceRange=sliceRange, editorNode=editor)

        self._startOrReport("SlideSAM could not restart", prepare)

    def onRefine(self):
        if self._background is not None:
            return

        def prepare():
            volume, segmentation = self.ui.inputVolumeSelector.currentNode(), self.ui.segmentationSelector.currentNode()
            _direction, sliceRange, editor = self._options()  # a refine propagates both ways
            view = self._promptView or self._firstSliceNode()
            axis, index = geometry.slice_view_axis_and_index(volume, view)
            clicks = geometry.clicks_on_slice(volume, axis, index, self.ui.includePointsSelector.currentNode(), self.ui.excludePointsSelector.currentNode())
            if not clicks:
                raise InputError(f"no include or exclude point on slice {index} ({geometry.AXIS_NAMES[axis]}) shown in view '{view.GetName()}': "
                                 "place them on the slice to correct, then press Refine")
            return self.logic.prepareRefine(volume, segmentation, self._segmentId(), points=clicks, axis=axis,
                                            sliceRange=sliceRange, editorNode=editor)

        self._startOrReport("SlideSAM could not refine", prepare)

    def _showInstallProgress(self, line):
        """pip's progress while the engine's packages install (after the user agreed): shown as it comes."""
        self.ui.statusLabel.text = line
        # repaint only: with user input delivered too, a second Propagate or a scene close could run inside this start
        # (as SampleData.py does while it downloads)
        slicer.app.processEvents(qt.QEventLoop.ExcludeUserInputEvents)

    def _start(self, job):
        check_editor(job.editor_node, job.segmentation_node, job.volume_node)  # refused now rather than after the run
        if not self.logic.ensureDependencies(status=self._showInstallProgress):
            return False
        from SlideSAMSlicer.preview import SegmentPreview
        from SlideSAMSlicer.worker import BackgroundJob

        save_segment_editor_state(job.segmentation_node)  # Segment Editor's Undo then takes back this run alone
        preview = SegmentPreview(self.logic, job) if job.axis is not None else None  # masks shown as they come
        self._job, self._preview = job, preview
        self._background = BackgroundJob(functools.partial(job.run, slice_done=self._preview.slice_done if self._preview else None)).start()
        self.ui.progressBar.value = 0
        self.ui.statusLabel.text = "running"
        self._timer.start()
        self.updateButtons()
        return True

    def onCancel(self):
        if self._background is not None:
            self._background.cancel()

    def onPoll(self):
        if self._background is None:  # a tick queued before the run was abandoned
            self._timer.stop()
            return
        self._background.wait(self.POLL_YIELD_S)
        done, fraction, message = self._background.poll()
        self.ui.progressBar.value = int(round(100 * fraction))
        self.ui.statusLabel.text = message
        if not done:
            if self._preview is not None:
                self._preview.flush_if_due()  # one segment write at most, at most every FLUSH_S
            return
        self._timer.stop()
        background, job, preview = self._background, self._job, self._preview
        self._background = self._job = self._preview = None
        try:
            if preview is not None and job.segmentation_node.GetScene() is not None:
                self.ui.statusLabel.text = "failed: the slices shown during the run could not be taken back"
                with slicer.util.tryWithErrorDisplay("SlideSAM could not take back the slices shown during the run; the result was not written"):
                    preview.restore()  # the result's one undo step starts from the segment as it was; on an error nothing stays
            if background.error is not None:
                if isinstance(background.error, SlideSAMError):
                    slicer.util.errorDisplay(str(background.error), windowTitle="SlideSAM")
                else:
                    logging.error(background.error_trace)
                    slicer.util.errorDisplay(f"SlideSAM failed: {background.error}", windowTitle="SlideSAM", detailedText=background.error_trace)
                self.ui.statusLabel.text = "failed: nothing was written"
                return
            self._applyFinished(job)
        finally:
            self.updateButtons()

    def _applyFinished(self, job):
        """Write a finished job; if that fails, say so and that nothing was written (the writer is all-or-nothing)."""
        try:
            if job.segmentation_node.GetScene() is None or job.volume_node.GetScene() is None:
                raise InputError("the volume or segmentation of this run was removed from the scene")
            report = self.logic.applyJob(job)
        except Exception as exc:  # noqa: BLE001 - shown to the user with its trace, then the panel is left consistent
            trace = traceback.format_exc()
            if not isinstance(exc, SlideSAMError):
                logging.error(trace)
            self.ui.progressBar.value = 0
            self.ui.statusLabel.text = "failed: nothing was written"
            slicer.util.errorDisplay(f"SlideSAM could not write the result, nothing was written: {exc}", windowTitle="SlideSAM", detailedText=trace)
            return
        self.ui.segmentSelector.setCurrentSegmentID(report.segmentId)
        self.ui.progressBar.value = 100
        self.ui.statusLabel.text = report.summary()

    def onUndo(self):
        if self._background is not None:
            return
        self.ui.statusLabel.text = "undo failed"
        segmentation, segmentId = self.ui.segmentationSelector.currentNode(), self._segmentId()
        try:
            with slicer.util.tryWithErrorDisplay("SlideSAM could not undo"):
                self.ui.statusLabel.text = "last run undone" if self.logic.undo(segmentation) else "nothing to undo"
            if segmentId and segmentation.GetSegmentation().GetSegment(segmentId) is None:  # the run had made it; Slicer's
                self.ui.segmentSelector.setCurrentSegmentID("")  # selector then picks the first other segment: None, as before the run
        finally:
            self.updateButtons()
