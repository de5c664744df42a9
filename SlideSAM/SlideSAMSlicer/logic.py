"""`SlideSAMLogic`: the module's logic and scripting API (no widget code, no Qt).

`import SlideSAM; SlideSAM.SlideSAMLogic()` still works: the module file re-exports it.
"""
import logging
import threading

import numpy as np
import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic

from SlideSAMLib.errors import InputError
from SlideSAMSlicer import dependencies, geometry
from SlideSAMSlicer.jobs import PropagationJob, RunReport
from SlideSAMSlicer.writer import EditRules, SegmentWriter, read_segment, stack_view

DIRECTIONS = ("both", "up", "down")
DEFAULT_SEGMENT_NAME = "SlideSAM"


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
        self._generation = 0  # bumped by clearState: a session made for an older scene is not kept

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

    def clearState(self):
        """Forget everything kept under node IDs — sessions, undo steps, last axes — when the scene closes: a new
        scene reuses the IDs (vtkMRMLScene numbers nodes per class from 1 again)."""
        with self._modelLock:
            self._generation += 1
            self._closeSessions()
        self.writer.clear()
        self._lastAxis.clear()

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

        server, generation = self.server, self._generation
        geometryLps = geometry.itk_geometry(volumeNode) if server and voxels is not None else None

        def get():
            with self._modelLock:
                cached = self._sessions.get(volumeId) if generation == self._generation else None
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
                if generation != self._generation:  # the scene closed meanwhile: its node IDs mean nothing now
                    return session
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
        try:  # all or nothing: the writer rolls back its own writes; a segment created for this run goes too
            rules = EditRules.from_editor(job.editor_node, segmentationNode, segmentId, volumeNode)
            changed = self.writer.apply(volumeNode, segmentationNode, segmentId, axis, masks, replaced, rules, created_segment=created)
        except Exception:
            if created:
                segmentationNode.GetSegmentation().RemoveSegment(segmentId)
            raise
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
