"""SlideSAM: box or click on one slice, propagate through the organ with a three-slice SAM (Slide-SAM).

Module (metadata, help), a thin widget, the logic (also the scripting API) and a self-test.
The engine is SlideSAMLib (no Slicer, no Qt); SlideSAMSlicer holds the MRML-side helpers.
"""
import logging
import os
import sys
import threading

import numpy as np
import qt
import slicer
import vtk
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin


def _addEngineToPath():
    """In a source checkout SlideSAMLib sits beside this module's folder; installed, it sits beside this file."""
    here = os.path.dirname(os.path.abspath(__file__))
    parent = os.path.dirname(here)
    if not os.path.isdir(os.path.join(here, "SlideSAMLib")) and os.path.isfile(os.path.join(parent, "SlideSAMLib", "__init__.py")):
        if parent not in sys.path:
            sys.path.append(parent)


_addEngineToPath()

from SlideSAMLib.errors import InputError, SlideSAMError  # noqa: E402  (light: no torch)
from SlideSAMSlicer import dependencies, geometry  # noqa: E402
from SlideSAMSlicer.jobs import PropagationJob, RunReport  # noqa: E402
from SlideSAMSlicer.shortcuts import SHORTCUTS, shortcuts_help_html  # noqa: E402
from SlideSAMSlicer.writer import EditRules, SegmentWriter, read_segment, stack_view  # noqa: E402

DIRECTIONS = ("both", "up", "down")
DEFAULT_SEGMENT_NAME = "SlideSAM"


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
            "<p>Prompt-driven 3D segmentation: draw a box (and optionally include / exclude points) on one slice of any "
            "slice view aligned with the volume, press <b>Propagate</b>, and a three-slice Segment-Anything model follows "
            "the structure slice by slice into the selected segment. Fix a slice with Segment Editor, then "
            "<b>Restart from this slice</b> to propagate again from the correction (only that side is replaced). "
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
# Logic
#
class SlideSAMLogic(ScriptedLoadableModuleLogic):
    """The scripting API: segment / restart / undo; one engine Session per volume, one model per logic.

    Coordinates in and out are RAS (world); the engine works in voxel IJK of the volume.
    """

    CONNECTION_TIMEOUT_S = 10.0  # "Test connection" runs on the GUI thread: fail fast

    def __init__(self, model=None, checkpoint=None, device=None, server=None, apiKey=None):
        ScriptedLoadableModuleLogic.__init__(self)
        self._model = model
        self.checkpoint = checkpoint
        self.device = device
        self.server = server or None  # URL of a `slidesam serve`: the model runs there, this logic only talks to it
        self.apiKey = apiKey or None
        self._modelLock = threading.Lock()
        self._sessions = {}  # volume node ID -> (image modified key, Session)
        self._cache = None
        self.writer = SegmentWriter()
        self._lastAxis = {}  # (segmentation node ID, segment ID) -> IJK axis of the last run

    # -- model and sessions ------------------------------------------------------
    def setModel(self, model):
        """Use an already loaded SlideSAMLib model (e.g. shared between logics or tests)."""
        with self._modelLock:
            self._model = model
            self._sessions.clear()

    def setModelSource(self, checkpoint=None, device=None, server=None, apiKey=None):
        """Where the model runs: a checkpoint file (None = the embedded LiteMedSAM) on a device ("auto", "cpu",
        "cuda", "mps"), loaded on next use; or `server`, the URL of a `slidesam serve` (with its API key)."""
        checkpoint = checkpoint or None
        device = None if device in (None, "", "auto") else device
        server, apiKey = (server.strip() or None) if server else None, apiKey or None
        if server:
            from SlideSAMLib.client import SlideSAMClient

            SlideSAMClient(server)  # checks the URL now, with a one-line message
        if (checkpoint, device, server, apiKey) != (self.checkpoint, self.device, self.server, self.apiKey):
            with self._modelLock:
                self.checkpoint, self.device, self.server, self.apiKey = checkpoint, device, server, apiKey
                self._model = None
                self._closeSessions()

    def _closeSessions(self):
        """Forget every volume's session; server-side ones are closed in the background (a dead server must not block the GUI)."""
        remote = [entry[1] for entry in self._sessions.values() if hasattr(entry[1], "close")]
        self._sessions.clear()
        for session in remote:
            threading.Thread(target=session.close, daemon=True).start()

    def client(self, timeout=None):
        """A SlideSAMClient for the configured server."""
        from SlideSAMLib.client import DEFAULT_TIMEOUT_S, SlideSAMClient

        if not self.server:
            raise InputError("no SlideSAM server is set: enter its URL (e.g. http://gpu-box:8765)")
        return SlideSAMClient(self.server, api_key=self.apiKey, timeout=timeout or DEFAULT_TIMEOUT_S)

    def testConnection(self):
        """One line describing the server (version, model, device); raises a one-line SlideSAMError when it cannot be used."""
        info = self.client(timeout=self.CONNECTION_TIMEOUT_S).version()
        clicks = "clicks as point prompts" if info.get("supports_points") else "clicks by box search"
        return f"connected: SlideSAM {info.get('version')} on {info.get('device')}, model {info.get('model')} ({clicks})"

    def ensureDependencies(self, confirm=None):
        """Ask to install missing Python packages (main thread only). False if the user declined."""
        if self._model is not None or self.server:
            return True  # a server client needs numpy only
        return dependencies.ensure_dependencies(confirm)

    def model(self):
        """The loaded model (loads it on first use; safe to call from the worker thread)."""
        with self._modelLock:
            if self._model is None:
                from SlideSAMLib import load_model

                self._model = load_model(self.checkpoint, self.device)
                logging.info(f"SlideSAM: model {self._model.source} on {self._model.device}")
            return self._model

    @staticmethod
    def _imageKey(volumeNode):
        image = volumeNode.GetImageData()
        scalars = image.GetPointData().GetScalars() if image is not None else None
        return (image.GetMTime() if image is not None else 0, scalars.GetMTime() if scalars is not None else 0)

    def _sessionGetter(self, volumeNode):
        """A callable returning the volume's Session; the voxel copy is taken now (main thread) if a new one is needed."""
        volumeId, key = volumeNode.GetID(), self._imageKey(volumeNode)
        entry = self._sessions.get(volumeId)
        voxels = None if entry is not None and entry[0] == key else np.array(slicer.util.arrayFromVolume(volumeNode))
        spacing = volumeNode.GetSpacing()  # IJK voxel size: the stop rule measures lengths along the slice axis

        server = self.server
        geometryLps = geometry.itk_geometry(volumeNode) if server and voxels is not None else None

        def get():
            with self._modelLock:
                cached = self._sessions.get(volumeId)
            if cached is not None and cached[0] == key:
                return cached[1]
            if server:
                from SlideSAMLib.client import RemoteSession

                client = self.client()
                client.version()  # a version mismatch is reported before anything is uploaded
                session = RemoteSession(client, voxels, *geometryLps)
            else:
                from SlideSAMLib import EmbeddingCache, Session

                model = self.model()
                if self._cache is None:
                    self._cache = EmbeddingCache()
                session = Session(model, voxels, cache=self._cache, spacing=spacing)
            with self._modelLock:
                old = self._sessions.get(volumeId)
                self._sessions[volumeId] = (key, session)  # replaces the session of an older version of the volume
            if old is not None and hasattr(old[1], "close"):
                old[1].close()
            return session

        return get

    def session(self, volumeNode):
        """The engine Session of a volume (created on first use, reused while the voxels are unchanged)."""
        return self._sessionGetter(volumeNode)()

    # -- checks -----------------------------------------------------------------
    @staticmethod
    def _checkNodes(volumeNode, segmentationNode):
        if volumeNode is None or not volumeNode.IsA("vtkMRMLScalarVolumeNode") or volumeNode.GetImageData() is None:
            raise InputError("no input volume: select a loaded scalar volume")
        if volumeNode.GetImageData().GetNumberOfScalarComponents() != 1:
            raise InputError(f"volume '{volumeNode.GetName()}' has several components per voxel: select a grey-level volume")
        if segmentationNode is None or not segmentationNode.IsA("vtkMRMLSegmentationNode"):
            raise InputError("no output segmentation: select or create a segmentation node")

    @staticmethod
    def _checkDirection(direction):
        if direction not in DIRECTIONS:
            raise InputError(f"direction '{direction}' is not one of both, up, down")

    # -- jobs (prepare on the main thread, run anywhere, apply on the main thread) ---
    def prepareSegment(self, volumeNode, segmentationNode, segmentId=None, box=None, points=None, excludePoints=None,
                       direction="both", sliceRange=None, axis=None, sliceIndex=None, editorNode=None):
        self._checkNodes(volumeNode, segmentationNode)
        self._checkDirection(direction)
        prompt = geometry.engine_prompt(volumeNode, box, points, excludePoints, geometry.resolve_axis(volumeNode, axis), sliceIndex)
        if prompt.box_ijk is None and not prompt.points_ijk:
            raise InputError("empty prompt: place a box, or at least one include point")
        return PropagationJob("segment", volumeNode, segmentationNode, segmentId, prompt.axis, (direction,), sliceRange,
                              editor_node=editorNode, engine_prompt=prompt.engine_kwargs(), get_session=self._sessionGetter(volumeNode))

    def prepareRestart(self, volumeNode, segmentationNode, segmentId, slice, axis=None, direction="both", sliceRange=None, editorNode=None):
        self._checkNodes(volumeNode, segmentationNode)
        self._checkDirection(direction)
        if not segmentId or segmentationNode.GetSegmentation().GetSegment(segmentId) is None:
            raise InputError(f"segment '{segmentId}' is not in '{segmentationNode.GetName()}': select the segment you corrected")
        ax = geometry.resolve_axis(volumeNode, axis)
        if ax is None:
            ax = self._lastAxis.get((segmentationNode.GetID(), segmentId), 2)
        index = geometry.slice_of(volumeNode, slice, ax)
        n = geometry.dimensions(volumeNode)[ax]
        if not 0 <= index < n:
            raise InputError(f"slice {index} is outside the volume (0..{n - 1} along {geometry.AXIS_NAMES[ax]})")
        stack = stack_view(read_segment(segmentationNode, segmentId, volumeNode), ax)
        mask = stack[index].astype(bool)
        largest = int(np.count_nonzero(stack.reshape(len(stack), -1), axis=1).max())  # the stop rule measures against the organ's largest slice
        if not mask.any():
            raise InputError(f"segment '{segmentId}' is empty on slice {index} ({geometry.AXIS_NAMES[ax]}): draw the correction there first")
        dirs = ("up", "down") if direction == "both" else (direction,)
        return PropagationJob("restart", volumeNode, segmentationNode, segmentId, ax, dirs, sliceRange, editor_node=editorNode,
                              corrected_index=index, corrected_mask=mask, largest_area=largest, get_session=self._sessionGetter(volumeNode))

    def _targetSegment(self, segmentationNode, segmentId, volumeNode):
        """(segment ID, created): an existing segment, or a new one named after `segmentId`."""
        segmentation = segmentationNode.GetSegmentation()
        if segmentId and segmentation.GetSegment(segmentId) is not None:
            return segmentId, False
        if segmentId:
            byName = segmentation.GetSegmentIdBySegmentName(segmentId)
            if byName:
                return byName, False
        if segmentation.GetNumberOfSegments() == 0 and segmentationNode.GetNodeReference(
            slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()) is None:
            segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(volumeNode)
        if segmentationNode.GetDisplayNode() is None:
            segmentationNode.CreateDefaultDisplayNodes()
        newId = segmentation.AddEmptySegment(segmentId or "", segmentId or DEFAULT_SEGMENT_NAME)
        return newId, True

    def applyJob(self, job):
        """Write a finished job's result into its segment (main thread). Returns a RunReport."""
        results = job.results
        volumeNode, segmentationNode = job.volume_node, job.segmentation_node
        segmentId, created = self._targetSegment(segmentationNode, job.segment_id, volumeNode)
        axis = results[0].axis if results else job.axis
        masks, replaced = {}, set()
        if job.kind == "segment":
            if results:
                masks = dict(results[0].slice_masks)
                replaced = set(masks)
        else:
            n = geometry.dimensions(volumeNode)[axis]
            lo, hi = sorted(job.slice_range) if job.slice_range else (0, n - 1)
            for result, direction in zip(results, job.directions):
                side = [s for s in result.slices if s != job.corrected_index]
                masks.update({s: result.slice_masks[s] for s in side})
                if result.cancelled:  # keep what lies beyond the slices the new run reached
                    replaced.update(side)
                elif direction == "up":
                    replaced.update(range(job.corrected_index + 1, hi + 1))
                else:
                    replaced.update(range(lo, job.corrected_index))
        rules = EditRules.from_editor(job.editor_node, segmentationNode, segmentId, volumeNode)
        changed = self.writer.apply(volumeNode, segmentationNode, segmentId, axis, masks, replaced, rules, created_segment=created)
        self._lastAxis[(segmentationNode.GetID(), segmentId)] = axis
        info = [i.as_dict() for r in results for i in r.info]
        stopped = {}
        for r in results:
            stopped.update(r.stopped)
        return RunReport(
            segmentId=segmentId, axis=axis, slices=sorted(masks), changedSlices=changed, info=info, stopped=stopped,
            cancelled=any(r.cancelled for r in results), seconds=sum(r.seconds for r in results),
            encoderPasses=sum(r.encoder_passes for r in results), createdSegment=created,
            prompt=results[0].prompt if results else "",
        )

    # -- scripting API -------------------------------------------------------------
    def segment(self, volumeNode, segmentationNode, segmentId=None, box=None, points=None, direction="both", sliceRange=None,
                progress=None, cancel=None, excludePoints=None, axis=None, sliceIndex=None, editorNode=None):
        """Propagate from a prompt on one slice into `segmentId` (created, named so, if it names no segment).

        box: (rasCorner1, rasCorner2) or a vtkMRMLMarkupsROINode; points: [(ras, isInclude), ...] or a markups
        point list (selected points include, unselected exclude); excludePoints: a point list of exclude clicks.
        direction: "both", "up" (increasing slice index) or "down"; sliceRange: (first, last) slice indices.
        axis / sliceIndex: pin the slice (0/1/2, "I"/"J"/"K", an RAS normal or a slice node); default: from the prompt.
        editorNode: a vtkMRMLSegmentEditorNode whose masking and overwrite settings apply.
        progress(fraction, message), cancel() -> bool: called during the run. Returns a RunReport.
        """
        job = self.prepareSegment(volumeNode, segmentationNode, segmentId, box, points, excludePoints, direction, sliceRange,
                                  axis, sliceIndex, editorNode)
        if not self.ensureDependencies():
            raise InputError("SlideSAM's Python packages are not installed: accept the installation, or install them with pip")
        job.run(progress, cancel)
        return self.applyJob(job)

    def restart(self, volumeNode, segmentationNode, segmentId, slice, axis=None, direction="both", sliceRange=None,
                progress=None, cancel=None, editorNode=None):
        """Propagate again from the segment's (corrected) mask on `slice` (an index, or an RAS point on it).

        Replaces only the slices beyond it in `direction` ("up", "down" or "both"); the corrected slice is kept.
        axis: as in segment(); default the axis of this segment's last run, else K.
        """
        job = self.prepareRestart(volumeNode, segmentationNode, segmentId, slice, axis, direction, sliceRange, editorNode)
        if not self.ensureDependencies():
            raise InputError("SlideSAM's Python packages are not installed: accept the installation, or install them with pip")
        job.run(progress, cancel)
        return self.applyJob(job)

    def undo(self, segmentationNode):
        """Revert the last SlideSAM run on this segmentation. False when there is nothing to undo."""
        return self.writer.undo(segmentationNode)

    def canUndo(self, segmentationNode):
        return self.writer.can_undo(segmentationNode)

#
# Widget
#
class SlideSAMWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Thin GUI: collects the prompt and options, runs the logic's job on a worker thread, shows progress."""

    POLL_MS = 100
    SOURCE_EMBEDDED, SOURCE_CHECKPOINT, SOURCE_SERVER = range(3)  # model source combo box entries
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
        self._timer = None
        self._shortcuts = []
        self._promptView = None

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
        self.ui.includePointsSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.ui.includePlaceWidget.setCurrentNode)
        self.ui.excludePointsSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.ui.excludePlaceWidget.setCurrentNode)
        for key, (name, kind) in self.SETTINGS.items():
            widget = getattr(self.ui, name)
            signal = {"combo": "currentIndexChanged(int)", "check": "toggled(bool)", "spin": "valueChanged(int)", "path": "currentPathChanged(QString)",
                      "text": "textChanged(QString)"}[kind]
            widget.connect(signal, self.updateParameterNodeFromGUI)
        self.ui.propagateButton.connect("clicked(bool)", self.onPropagate)
        self.ui.restartButton.connect("clicked(bool)", self.onRestart)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.ui.undoButton.connect("clicked(bool)", self.onUndo)
        self.ui.testConnectionButton.connect("clicked(bool)", self.onTestConnection)
        self.ui.apiKeyLineEdit.text = os.environ.get("SLIDESAM_API_KEY", "")

        actions = {"placeBox": lambda: self.startPlacing(self.ui.boxPlaceWidget, self.ui.boxSelector, "vtkMRMLMarkupsROINode", "SlideSAM box"),
                   "placeInclude": lambda: self.startPlacing(self.ui.includePlaceWidget, self.ui.includePointsSelector, "vtkMRMLMarkupsFiducialNode", "SlideSAM include"),
                   "placeExclude": lambda: self.startPlacing(self.ui.excludePlaceWidget, self.ui.excludePointsSelector, "vtkMRMLMarkupsFiducialNode", "SlideSAM exclude"),
                   "propagate": self.onPropagate, "restart": self.onRestart, "cancel": self.onCancel, "undo": self.onUndo}
        for name, key, _text in SHORTCUTS:
            shortcut = qt.QShortcut(qt.QKeySequence(key), slicer.util.mainWindow())
            shortcut.connect("activated()", actions[name])
            self._shortcuts.append(shortcut)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()
        self.updateButtons()

    def cleanup(self):
        self.onCancel()
        if self._timer is not None:
            self._timer.stop()
        for shortcut in self._shortcuts:
            shortcut.setParent(None)
        self._shortcuts = []
        self.removeObservers()

    # -- parameter node (plain get/set: works in every Slicer 5 version) ------------------
    def onSceneStartClose(self, caller, event):
        self.onCancel()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def enter(self):
        self.initializeParameterNode()

    def initializeParameterNode(self):
        node = self.logic.getParameterNode()
        if not node.GetNodeReference("InputVolume"):
            volume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
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
                    widget.currentIndex = max(0, widget.findText(value))
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
        node.SetParameter("SegmentID", self.ui.segmentSelector.currentSegmentID() or "")
        for key, (name, kind) in self.SETTINGS.items():
            widget = getattr(self.ui, name)
            value = {"combo": lambda: widget.currentText, "check": lambda: "true" if widget.checked else "false",
                     "spin": lambda: str(widget.value), "path": lambda: widget.currentPath, "text": lambda: widget.text}[kind]()
            node.SetParameter(key, value)
        node.EndModify(wasModifying)
        self.updateButtons()

    def updateButtons(self):
        busy = self._background is not None
        node = self._parameterNode
        ready = node is not None and node.GetNodeReference("InputVolume") is not None and node.GetNodeReference("Segmentation") is not None
        self.ui.propagateButton.enabled = ready and not busy
        self.ui.restartButton.enabled = ready and not busy and bool(self.ui.segmentSelector.currentSegmentID())
        self.ui.cancelButton.enabled = busy
        self.ui.undoButton.enabled = not busy and self.logic.canUndo(self.ui.segmentationSelector.currentNode())
        source = self.ui.modelSourceComboBox.currentIndex
        self.ui.checkpointPathLineEdit.enabled = source == self.SOURCE_CHECKPOINT
        self.ui.deviceComboBox.enabled = source != self.SOURCE_SERVER
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
        placeWidget.setCurrentNode(selector.currentNode())
        placeWidget.setPlaceModeEnabled(True)

    def _sliceNodes(self):
        layoutManager = slicer.app.layoutManager()
        return [layoutManager.sliceWidget(name).mrmlSliceNode() for name in layoutManager.sliceViewNames()]

    # -- runs ------------------------------------------------------------------------------
    def _applyModelSource(self):
        source = self.ui.modelSourceComboBox.currentIndex
        if source == self.SOURCE_SERVER:
            if not self.ui.serverUrlLineEdit.text.strip():
                raise InputError("no server URL: enter the address of a machine running 'slidesam serve', e.g. http://gpu-box:8765")
            self.logic.setModelSource(server=self.ui.serverUrlLineEdit.text, apiKey=self.ui.apiKeyLineEdit.text)
        else:
            self.logic.setModelSource(self.ui.checkpointPathLineEdit.currentPath if source == self.SOURCE_CHECKPOINT else None,
                                      self.ui.deviceComboBox.currentText)

    def onTestConnection(self):
        self.ui.statusLabel.text = "connecting..."
        message = "no connection to the server"
        with slicer.util.tryWithErrorDisplay("SlideSAM cannot use the server", waitCursor=True):
            self._applyModelSource()
            message = self.logic.testConnection()
        self.ui.statusLabel.text = message

    def _options(self):
        self._applyModelSource()
        sliceRange = (self.ui.firstSliceSpinBox.value, self.ui.lastSliceSpinBox.value) if self.ui.sliceRangeCheckBox.checked else None
        editor = slicer.mrmlScene.GetSingletonNode("SegmentEditor", "vtkMRMLSegmentEditorNode") if self.ui.editorMaskingCheckBox.checked else None
        return self.ui.directionComboBox.currentText, sliceRange, editor

    def onPropagate(self):
        if self._background is not None:
            return
        with slicer.util.tryWithErrorDisplay("SlideSAM could not start", waitCursor=True):
            volume, segmentation = self.ui.inputVolumeSelector.currentNode(), self.ui.segmentationSelector.currentNode()
            box, include, exclude = self.ui.boxSelector.currentNode(), self.ui.includePointsSelector.currentNode(), self.ui.excludePointsSelector.currentNode()
            direction, sliceRange, editor = self._options()
            axis, index, view = geometry.pick_prompt_view(volume, self._sliceNodes(), box, include, exclude) if volume else (None, None, None)
            self._promptView = view
            job = self.logic.prepareSegment(volume, segmentation, self.ui.segmentSelector.currentSegmentID() or None, box=box, points=include,
                                            excludePoints=exclude, direction=direction, sliceRange=sliceRange, axis=axis, sliceIndex=index, editorNode=editor)
            self._start(job)

    def onRestart(self):
        if self._background is not None:
            return
        with slicer.util.tryWithErrorDisplay("SlideSAM could not restart", waitCursor=True):
            volume, segmentation = self.ui.inputVolumeSelector.currentNode(), self.ui.segmentationSelector.currentNode()
            direction, sliceRange, editor = self._options()
            view = self._promptView or slicer.app.layoutManager().sliceWidget("Red").mrmlSliceNode()
            axis, index = geometry.slice_view_axis_and_index(volume, view)
            job = self.logic.prepareRestart(volume, segmentation, self.ui.segmentSelector.currentSegmentID(), index, axis=axis,
                                            direction=direction, sliceRange=sliceRange, editorNode=editor)
            self._start(job)

    def _start(self, job):
        if not self.logic.ensureDependencies():
            return
        from SlideSAMSlicer.worker import BackgroundJob

        self._job = job
        self._background = BackgroundJob(job.run).start()
        self.ui.progressBar.value = 0
        self.ui.statusLabel.text = "running"
        self._timer.start()
        self.updateButtons()

    def onCancel(self):
        if self._background is not None:
            self._background.cancel()

    def onPoll(self):
        done, fraction, message = self._background.poll()
        self.ui.progressBar.value = int(round(100 * fraction))
        self.ui.statusLabel.text = message
        if not done:
            return
        self._timer.stop()
        background, job = self._background, self._job
        self._background = self._job = None
        try:
            if background.error is not None:
                if isinstance(background.error, SlideSAMError):
                    slicer.util.errorDisplay(str(background.error), windowTitle="SlideSAM")
                else:
                    logging.error(background.error_trace)
                    slicer.util.errorDisplay(f"SlideSAM failed: {background.error}", windowTitle="SlideSAM", detailedText=background.error_trace)
                self.ui.statusLabel.text = "failed"
                return
            report = self.logic.applyJob(job)
            self.ui.segmentSelector.setCurrentSegmentID(report.segmentId)
            self.ui.progressBar.value = 100
            self.ui.statusLabel.text = report.summary()
        finally:
            self.updateButtons()

    def onUndo(self):
        if self._background is None:
            with slicer.util.tryWithErrorDisplay("SlideSAM could not undo"):
                self.ui.statusLabel.text = "last run undone" if self.logic.undo(self.ui.segmentationSelector.currentNode()) else "nothing to undo"
            self.updateButtons()



#
# Self-test (runs inside Slicer)
#
class SlideSAMTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_propagate_restart_undo()

    def test_propagate_restart_undo(self):
        import SampleData

        self.delayDisplay("Loading CTChest sample")
        volumeNode = SampleData.downloadSample("CTChest")
        segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        logic = SlideSAMLogic()
        # A box around the trachea/airway region on one axial slice, in voxel coordinates turned into RAS.
        dims = volumeNode.GetImageData().GetDimensions()
        k = dims[2] // 2
        corners = geometry.ijk_to_ras(volumeNode, [(dims[0] * 0.42, dims[1] * 0.30, k), (dims[0] * 0.58, dims[1] * 0.45, k)])
        self.delayDisplay("Propagating")
        report = logic.segment(volumeNode, segmentationNode, "structure", box=(corners[0], corners[1]), sliceRange=(k - 5, k + 5))
        self.assertIn(k, report.slices)
        self.assertTrue(all(k - 5 <= s <= k + 5 for s in report.slices))
        before = read_segment(segmentationNode, report.segmentId, volumeNode)
        self.assertGreater(int(before.sum()), 0)
        restart = logic.restart(volumeNode, segmentationNode, report.segmentId, k, direction="up", sliceRange=(k - 5, k + 5))
        after = read_segment(segmentationNode, report.segmentId, volumeNode)
        np.testing.assert_array_equal(after[: k + 1], before[: k + 1])  # the other side is untouched
        self.assertTrue(logic.undo(segmentationNode))
        np.testing.assert_array_equal(read_segment(segmentationNode, report.segmentId, volumeNode), before)
        self.delayDisplay(f"Test passed: {report.summary()} / restart: {restart.summary()}")
