"""`SlideSAMLogic`: the module's logic and scripting API (no widget code, no Qt).

`import SlideSAM; SlideSAM.SlideSAMLogic()` still works: the module file re-exports it.
"""
import logging
import threading

import numpy as np
import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic

from SlideSAMLib.contract import RefineRequest, RestartRequest, SegmentRequest
from SlideSAMLib.errors import InputError
from SlideSAMSlicer import dependencies, geometry
from SlideSAMSlicer.jobs import PropagationJob, RunReport
from SlideSAMSlicer.writer import EditRules, SegmentWriter, check_grid, read_segment, stack_view

DIRECTIONS = ("both", "up", "down")
DEFAULT_SEGMENT_NAME = "SlideSAM"


class SlideSAMLogic(ScriptedLoadableModuleLogic):
    """The scripting API: segment / restart / refine / undo; one engine session per volume.

    Where the model runs (no model code ever runs in Slicer's process unless a model object is given):
    - "this computer" (the default): a local engine process (SlideSAMLib.engine_process.LocalEngine), started on
      first use with Slicer's Python or `enginePython`, kept between runs, restarted after a crash;
    - `server`: the URL of a `slidesam serve`, reached with the same client;
    - `model=`: an already loaded SlideSAMLib model in this process (scripts, tests).
    Coordinates in and out are RAS (world); the engine works in voxel IJK of the volume.
    """

    CONNECTION_TIMEOUT_S = 10.0  # "Test connection" runs on the GUI thread: fail fast
    ENGINE_PYTHON_SETTING = "SlideSAM/EnginePython"  # application setting: the Python the local engine runs with

    def __init__(self, model=None, checkpoint=None, device=None, server=None, apiKey=None, enginePython=None, engine=None):
        ScriptedLoadableModuleLogic.__init__(self)
        self._model = model
        self.checkpoint = checkpoint
        self.device = device
        self.server = server or None  # URL of a `slidesam serve`: the model runs there, this logic only talks to it
        self.apiKey = apiKey or None
        self.enginePython = enginePython or None
        self._engine = engine  # a LocalEngine; made on first use from checkpoint / device / enginePython
        self._ensured = set()  # Pythons whose packages were found complete
        self._modelLock = threading.Lock()
        self._sessions = {}  # volume node ID -> (image modified key, contract session)
        self._cache = None
        self.writer = SegmentWriter()
        self._lastAxis = {}  # (segmentation node ID, segment ID) -> IJK axis of the last run
        self._generation = 0  # bumped by clearState: a session made for an older scene is not kept

    # -- model and sessions ------------------------------------------------------
    def setModel(self, model):
        """Run in this process with an already loaded SlideSAMLib model (scripts, tests); None: back to the engine process."""
        with self._modelLock:
            self._model = model
        self._closeSessions()

    def setModelSource(self, checkpoint=None, device=None, server=None, apiKey=None, enginePython=None):
        """Where the model runs: a checkpoint file (None = the embedded LiteMedSAM) on a device ("auto", "cpu",
        "cuda", "mps") in the local engine process (run by `enginePython`, default Slicer's own); or `server`,
        the URL of a `slidesam serve` (with its API key)."""
        checkpoint = checkpoint or None
        device = None if device in (None, "", "auto") else device
        server, apiKey = (server.strip() or None) if server else None, apiKey or None
        enginePython = enginePython or None
        if server:
            from SlideSAMLib.client import SlideSAMClient

            SlideSAMClient(server)  # checks the URL now, with a one-line message
        new = (checkpoint, device, server, apiKey, enginePython)
        if new != (self.checkpoint, self.device, self.server, self.apiKey, self.enginePython):
            with self._modelLock:
                self.checkpoint, self.device, self.server, self.apiKey, self.enginePython = new
                self._model = None
                engine, self._engine = self._engine, None
            self._closeSessions()
            if engine is not None:  # its settings changed: a new one starts on the next run
                threading.Thread(target=engine.stop, name="slidesam-engine-stop", daemon=True).start()

    def _closeSessions(self):
        """Forget every volume's session; each is closed in the background (a dead server must not block the GUI)."""
        with self._modelLock:
            sessions = [entry[1] for entry in self._sessions.values()]
            self._sessions.clear()
        for session in sessions:
            threading.Thread(target=session.close, daemon=True).start()

    def clearState(self):
        """Forget everything kept under node IDs — sessions, undo steps, last axes — when the scene closes: a new
        scene reuses the IDs (vtkMRMLScene numbers nodes per class from 1 again).  The engine process stays."""
        with self._modelLock:
            self._generation += 1
        self._closeSessions()  # takes the lock itself
        self.writer.clear()
        self._lastAxis.clear()

    def stopEngine(self):
        """Stop the local engine process (module cleanup; it is also stopped when Slicer exits)."""
        self._closeSessions()
        with self._modelLock:
            engine, self._engine = self._engine, None
        if engine is not None:
            engine.stop()

    def engineSettingPython(self):
        """The Python named in the application settings (SlideSAM/EnginePython), or None."""
        settings = getattr(getattr(slicer, "app", None), "settings", None)
        value = settings().value(self.ENGINE_PYTHON_SETTING) if callable(settings) else None
        return str(value).strip() or None if value else None

    def setEngineSettingPython(self, python):
        """Save the application setting SlideSAM/EnginePython (the panel's Engine Python field); None or "" removes it.
        A machine's path, so QSettings (slicer.app.settings(), qSlicerCoreApplication.h:409), not the scene."""
        settings = slicer.app.settings()
        if python and python.strip():
            settings.setValue(self.ENGINE_PYTHON_SETTING, python.strip())
        else:
            settings.remove(self.ENGINE_PYTHON_SETTING)

    def enginePythonPath(self):
        """The Python the local engine runs with: `enginePython`, the setting, else Slicer's PythonSlicer."""
        from SlideSAMLib.engine_process import default_python

        return self.enginePython or self.engineSettingPython() or default_python()

    def engine(self):
        """The local engine (a LocalEngine; its process starts on first use)."""
        from SlideSAMLib.engine_process import LocalEngine

        with self._modelLock:
            if self._engine is None:
                self._engine = LocalEngine(self.enginePythonPath(), self.checkpoint, self.device,
                                           log=lambda line: logging.info(f"SlideSAM engine: {line}"))
            return self._engine

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

    def ensureDependencies(self, confirm=None, status=None):
        """Ask to install missing packages into the engine's Python (main thread only). False if the user declined.

        Raises a one-line SlideSAMError when that Python cannot run the engine (e.g. Slicer 5.8's Python 3.9)."""
        if self._model is not None or self.server:
            return True  # in this process with a given model, or a server: nothing to install here
        python = self.enginePythonPath()
        if python in self._ensured or (self._engine is not None and self._engine.alive()):
            return True
        if not dependencies.ensure_dependencies(python, confirm, status):
            return False
        self._ensured.add(python)
        return True

    def model(self):
        """The model given to this logic (in-process runs only)."""
        return self._model

    @staticmethod
    def _imageKey(volumeNode):
        """What a volume's session depends on: its voxels (modification times) and its voxel size (the session was given
        the spacing when it was made, and the stop rule measures mm along the slice axis; the Volumes module edits it in
        place). Not the directions, origin or a parent transform: prompts are converted with them at each run, so a
        rotated or moved volume keeps its embeddings."""
        image = volumeNode.GetImageData()
        scalars = image.GetPointData().GetScalars() if image is not None else None
        return (image.GetMTime() if image is not None else 0, scalars.GetMTime() if scalars is not None else 0,
                tuple(round(float(v), 9) for v in volumeNode.GetSpacing()))

    def _sessionGetter(self, volumeNode):
        """A callable returning the volume's contract session; the voxel copy is taken now (main thread) if a new one is needed."""
        volumeId, key = volumeNode.GetID(), self._imageKey(volumeNode)
        with self._modelLock:
            entry = self._sessions.get(volumeId)
        voxels = None if entry is not None and entry[0] == key else np.array(slicer.util.arrayFromVolume(volumeNode))
        spacing = volumeNode.GetSpacing()  # IJK voxel size: the stop rule measures lengths along the slice axis
        model, server, generation = self._model, self.server, self._generation
        geometryLps = geometry.itk_geometry(volumeNode) if model is None and voxels is not None else None
        # the engine object now, on the main thread: making it reads the application settings (QSettings)
        engine = self.engine() if model is None and not server else None

        def get():
            with self._modelLock:
                cached = self._sessions.get(volumeId) if generation == self._generation else None
            if cached is not None and cached[0] == key:
                return cached[1]
            if model is not None:
                from SlideSAMLib import EmbeddingCache, Session
                from SlideSAMLib.contract import InProcessSession

                if self._cache is None:
                    self._cache = EmbeddingCache()
                session = InProcessSession(Session(model, voxels, cache=self._cache, spacing=spacing), model.source)
            elif server:
                from SlideSAMLib.client import RemoteSession

                client = self.client()
                client.version()  # a version mismatch is reported before anything is uploaded
                session = RemoteSession(client, voxels, *geometryLps)
            else:
                from SlideSAMLib.engine_process import EngineSession

                session = EngineSession(engine, voxels, *geometryLps)
            with self._modelLock:
                if generation != self._generation:  # the scene closed meanwhile: its node IDs mean nothing now
                    return session
                old = self._sessions.get(volumeId)
                self._sessions[volumeId] = (key, session)  # replaces the session of an older version of the volume
            if old is not None:
                old[1].close()
            return session

        return get

    def session(self, volumeNode):
        """The contract session of a volume (created on first use, reused while the voxels are unchanged)."""
        return self._sessionGetter(volumeNode)()

    # -- checks -----------------------------------------------------------------
    @staticmethod
    def _checkNodes(volumeNode, segmentationNode, segmentId=None):
        if volumeNode is None or not volumeNode.IsA("vtkMRMLScalarVolumeNode") or volumeNode.GetImageData() is None:
            raise InputError("no input volume: select a loaded scalar volume")
        if volumeNode.GetImageData().GetNumberOfScalarComponents() != 1:
            raise InputError(f"volume '{volumeNode.GetName()}' has several components per voxel: select a grey-level volume")
        if segmentationNode is None or not segmentationNode.IsA("vtkMRMLSegmentationNode"):
            raise InputError("no output segmentation: select or create a segmentation node")
        # Slicer refuses to import a labelmap into a segmentation whose source representation is another one (a closed
        # surface imported from a model): vtkSlicerSegmentationsModuleLogic::ImportLabelmapToSegmentationNode, "is not
        # binary labelmap". Refused here, before any run, rather than after it.
        labelmap = slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
        source = segmentationNode.GetSegmentation().GetSourceRepresentationName()
        if source != labelmap:
            raise InputError(
                f"segmentation '{segmentationNode.GetName()}' is stored as '{source}', not as a binary labelmap: make binary "
                "labelmap its source representation (Segmentations module, Representations), or choose another segmentation")
        check_grid(segmentationNode, [SlideSAMLogic._existingSegment(segmentationNode, segmentId)], volumeNode)  # before the run (the writer checks again)

    @staticmethod
    def _checkDirection(direction):
        if direction not in DIRECTIONS:
            raise InputError(f"direction '{direction}' is not one of both, up, down")

    # -- jobs (prepare on the main thread, run anywhere, apply on the main thread) ---
    def prepareSegment(self, volumeNode, segmentationNode, segmentId=None, box=None, points=None, excludePoints=None,
                       direction="both", sliceRange=None, axis=None, sliceIndex=None, editorNode=None):
        self._checkNodes(volumeNode, segmentationNode, segmentId)
        self._checkDirection(direction)
        prompt = geometry.engine_prompt(volumeNode, box, points, excludePoints, geometry.resolve_axis(volumeNode, axis), sliceIndex)
        if prompt.box_ijk is None and not prompt.points_ijk:
            raise InputError("empty prompt: place a box, or at least one include point")
        request = SegmentRequest.of(direction=direction, slice_range=sliceRange, **prompt.engine_kwargs())
        return PropagationJob("segment", volumeNode, segmentationNode, segmentId, prompt.axis, (direction,), request.slice_range, [request],
                              editor_node=editorNode, get_session=self._sessionGetter(volumeNode))

    def prepareRestart(self, volumeNode, segmentationNode, segmentId, slice, axis=None, direction="both", sliceRange=None, editorNode=None):
        self._checkNodes(volumeNode, segmentationNode, segmentId)
        self._checkDirection(direction)
        ax, stack, largest = self._segmentStack(volumeNode, segmentationNode, segmentId, axis, "corrected")
        index = geometry.slice_of(volumeNode, slice, ax)
        n = geometry.dimensions(volumeNode)[ax]
        if not 0 <= index < n:
            raise InputError(f"slice {index} is outside the volume (0..{n - 1} along {geometry.AXIS_NAMES[ax]})")
        mask = stack[index].astype(bool)
        if not mask.any():
            raise InputError(f"segment '{segmentId}' is empty on slice {index} ({geometry.AXIS_NAMES[ax]}): draw the correction there first")
        dirs = ("up", "down") if direction == "both" else (direction,)
        requests = [RestartRequest.of(mask, index, ax, d, sliceRange, largest) for d in dirs]
        return PropagationJob("restart", volumeNode, segmentationNode, segmentId, ax, dirs, requests[0].slice_range, requests, editor_node=editorNode,
                              corrected_index=index, get_session=self._sessionGetter(volumeNode))

    def _segmentStack(self, volumeNode, segmentationNode, segmentId, axis, what):
        """(IJK axis, the segment as a slice stack along it, its largest slice's pixels) of an existing, non-empty segment."""
        if not segmentId or segmentationNode.GetSegmentation().GetSegment(segmentId) is None:
            raise InputError(f"segment '{segmentId}' is not in '{segmentationNode.GetName()}': select the segment you {what}")
        ax = geometry.resolve_axis(volumeNode, axis)
        if ax is None:
            ax = self._lastAxis.get((segmentationNode.GetID(), segmentId), 2)
        stack = stack_view(read_segment(segmentationNode, segmentId, volumeNode), ax)
        largest = int(np.count_nonzero(stack.reshape(len(stack), -1), axis=1).max())  # the stop rule measures against the organ's largest slice
        return ax, stack, largest

    def prepareRefine(self, volumeNode, segmentationNode, segmentId, points=None, excludePoints=None, axis=None, sliceRange=None, editorNode=None):
        """A refine job: include / exclude clicks (RAS) on one slice of the segment's propagated result correct that slice,
        then propagation runs from it both ways, each side until the new masks agree with the segment's (a local refinement:
        the segment's slices of `sliceRange`, default the whole axis, go with the request). The job replaces only the
        slices the engine names (the result's span) of that segment.

        points: [(ras, isInclude), ...] or a markups point list (selected points include, unselected exclude); excludePoints:
        a point list (or [(ras, _)]) of exclude clicks. axis: as in segment(); default the axis of this segment's last run, else K."""
        self._checkNodes(volumeNode, segmentationNode, segmentId)
        ax, stack, largest = self._segmentStack(volumeNode, segmentationNode, segmentId, axis, "want to refine")
        if not largest:
            raise InputError(f"segment '{segmentId}' is empty: propagate first, then refine the result with clicks")
        clicks = geometry.engine_prompt(volumeNode, None, points, excludePoints).points_ijk
        if not clicks:
            raise InputError("no refinement click: place include or exclude points on the slice to correct")
        coords = np.array([c for c, _ in clicks])
        indices = sorted({int(v) for v in np.rint(coords[:, ax])})
        if len(indices) > 1:
            raise InputError(f"the refinement clicks lie on slices {', '.join(map(str, indices))} along {geometry.AXIS_NAMES[ax]}: "
                             "place them all on the one slice you correct")
        index, n = indices[0], len(stack)
        if not 0 <= index < n:
            raise InputError(f"the refinement clicks are on slice {index}, outside the volume (0..{n - 1} along {geometry.AXIS_NAMES[ax]}): click on the image")
        coords[:, ax] = index  # on the slice exactly (they were within half a voxel of it)
        lo, hi = sorted(int(v) for v in sliceRange) if sliceRange is not None else (0, n - 1)
        current = {s: stack[s] > 0 for s in range(max(lo, 0), min(hi, n - 1) + 1) if s != index and stack[s].any()}  # a local refinement
        request = RefineRequest.of(stack[index].astype(bool), index, [(tuple(c), inc) for c, (_, inc) in zip(coords, clicks)], ax, sliceRange, largest, current)
        return PropagationJob("refine", volumeNode, segmentationNode, segmentId, ax, ("both",), request.slice_range, [request], editor_node=editorNode,
                              corrected_index=index, get_session=self._sessionGetter(volumeNode))

    @staticmethod
    def _existingSegment(segmentationNode, segmentId):
        """The ID of the segment `segmentId` names (an ID, else a name), or "" when there is none."""
        segmentation = segmentationNode.GetSegmentation()
        if not segmentId:
            return ""
        if segmentation.GetSegment(segmentId) is not None:
            return segmentId
        return segmentation.GetSegmentIdBySegmentName(segmentId)

    def _targetSegment(self, segmentationNode, segmentId, volumeNode):
        """(segment ID, created): an existing segment, or a new one named after `segmentId`."""
        segmentation = segmentationNode.GetSegmentation()
        existing = self._existingSegment(segmentationNode, segmentId)
        if existing:
            return existing, False
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
        elif job.kind == "refine":
            if results:
                masks = dict(results[0].slice_masks)
                first, last = results[0].span  # the engine's answer (session.refine_span): the slices this refine replaces
                replaced = set(range(first, last + 1))
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
            raise InputError("SlideSAM's engine packages are not installed: accept the installation, or install them with pip into the engine's Python")
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
            raise InputError("SlideSAM's engine packages are not installed: accept the installation, or install them with pip into the engine's Python")
        job.run(progress, cancel)
        return self.applyJob(job)

    def refine(self, volumeNode, segmentationNode, segmentId, points=None, excludePoints=None, axis=None, sliceRange=None,
               progress=None, cancel=None, editorNode=None):
        """Correct one slice of the segment's propagated result with include / exclude clicks (RAS, all on that slice), then
        propagate from it both ways until the new masks agree with the segment's, reusing the volume's embeddings. Replaces
        the slices the engine names (within `sliceRange`, default the whole axis) of this segment only, as one undo step.
        points / excludePoints / axis: as in prepareRefine()."""
        job = self.prepareRefine(volumeNode, segmentationNode, segmentId, points, excludePoints, axis, sliceRange, editorNode)
        if not self.ensureDependencies():
            raise InputError("SlideSAM's engine packages are not installed: accept the installation, or install them with pip into the engine's Python")
        job.run(progress, cancel)
        return self.applyJob(job)

    def undo(self, segmentationNode):
        """Revert the last SlideSAM run on this segmentation. False when there is nothing to undo."""
        return self.writer.undo(segmentationNode)

    def canUndo(self, segmentationNode):
        return self.writer.can_undo(segmentationNode)
