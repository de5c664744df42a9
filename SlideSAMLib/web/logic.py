"""What the SlideSAM panel does, on trame-slicer's real MRML scene, through the Slicer module's own logic.

Prompts are real markups nodes placed with the mouse in the slice views (an ROI for the box,
point lists for include / exclude clicks).  `SlideSAMLogic` (SlideSAM/SlideSAMSlicer/logic.py)
turns them into the engine's voxel prompt with `geometry`, the engine runs in its own process
(the page never waits on it: the job runs on a worker thread, its progress streams to the page and
each slice shows in the segment as the engine accepts it, `preview.LivePreview`), and `writer` puts the
result into one segment of the segmentation node, other segments untouched.
Each run is one step on trame-slicer's undo stack, the same stack as the editor's paint strokes.
Refine uses the include / exclude points placed since the last run (`SlideSAMLogic.prepareRefine`: one slice of the
segment's result corrected, the engine's `Result.span` replaced).
"""
import asyncio
import logging
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from ..errors import SlideSAMError
from ..stop_reasons import describe_stops
from .preview import LivePreview

log = logging.getLogger("slidesam.web")
BOX_NODE, INCLUDE_NODE, EXCLUDE_NODE = "SlideSAM box", "SlideSAM include", "SlideSAM exclude"


def _matrix(vtk_matrix):
    return [vtk_matrix.GetElement(r, c) for r in range(4) for c in range(4)]


class SlideSAMWebLogic:
    def __init__(self, server, slicer_app, engine_source: dict, engine_label: str):
        """engine_source: SlideSAMLogic's model source, {"server": URL, "apiKey": KEY} or {"engine": LocalEngine}."""
        from SlideSAMSlicer import geometry
        from SlideSAMSlicer.logic import SlideSAMLogic

        self.server, self.app, self.geometry = server, slicer_app, geometry
        self.logic = SlideSAMLogic(**engine_source)
        self._cancel = threading.Event()
        self._tasks = set()  # runs under way (see _start)
        self._prompt_view = None  # the slice node of the last prompt: "this slice" of a restart
        self._observed = []
        self._observed_points = set()
        self._used_points = set()  # (node ID, control point ID) of the points the runs so far had placed: not a refine's
        self.editor.active_segment_id_changed.connect(self._segment_changed)
        state = server.state
        state.update(
            dict(
                slidesam_engine=engine_label, slidesam_busy=False, slidesam_direction="both", slidesam_progress=0,
                slidesam_message="load a volume, then place a box", slidesam_error="", slidesam_can_undo=False,
                slidesam_basename="segmentation", slidesam_views={}, slidesam_last={}, slidesam_volume={},
                slidesam_range_on=False, slidesam_range_from="", slidesam_range_to="", slidesam_range_seen=[False, "", ""], slidesam_segment="",
                slidesam_prompt={"box_mm": [0, 0, 0], "include": 0, "exclude": 0, "placing": False},
            )
        )
        state.change("slidesam_range_on", "slidesam_range_from", "slidesam_range_to")(self._range_changed)

    # -- scene ------------------------------------------------------------------------------
    @property
    def editor(self):
        return self.app.segmentation_editor

    def on_volume_loaded(self, volume_node) -> None:
        self._prompt_view = None
        self.logic.clearState()  # an upload clears the scene, whose node IDs the next volume reuses
        self._observed_points.clear()  # an upload clears the scene: new prompt nodes
        self._used_points.clear()
        name = volume_node.GetName() or "segmentation"
        base = name
        for suffix in (".gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd"):
            base = base.removesuffix(suffix)
        self.server.state.slidesam_basename = base or "segmentation"
        for node, tag in self._observed:
            node.RemoveObserver(tag)
        self._observed = [(n, n.AddObserver("ModifiedEvent", self._views_changed)) for n in self._slice_nodes()]
        undo = self.editor.undo_stack
        if undo is not None and not getattr(self, "_undo_connected", False):
            for signal in undo.signals():
                signal.connect(self._undo_changed)
            self._undo_connected = True
        interaction = self.app.markups_logic.interaction_node
        if interaction is not None and interaction.GetID() not in self._observed_points:
            interaction.AddObserver("ModifiedEvent", self._prompt_changed)
            self._observed_points.add(interaction.GetID())
        self._views_changed()
        self._prompt_changed()
        spacing, origin, direction = self.geometry.itk_geometry(volume_node)  # what the engine is sent (ITK's LPS)
        self._set(volume={"name": name, "dims": list(self.geometry.dimensions(volume_node)), "spacing": spacing, "origin": origin, "direction": direction})
        self._set(message=f"loaded {name}: place a box (Box, then drag on a slice view)", error="")

    def _slice_nodes(self):
        return [self.app.scene.GetNthNodeByClass(i, "vtkMRMLSliceNode") for i in range(self.app.scene.GetNumberOfNodesByClass("vtkMRMLSliceNode"))]

    def _views_changed(self, *_):
        volume = self.editor.active_volume_node
        views = {}
        for node in self._slice_nodes():
            entry = {"xy_to_ras": _matrix(node.GetXYToRAS()), "dims": list(node.GetDimensions())[:2]}
            if volume is not None:
                try:
                    entry["axis"], entry["index"] = self.geometry.slice_view_axis_and_index(volume, node)
                except SlideSAMError:
                    entry["axis"] = entry["index"] = None
            views[node.GetName()] = entry
        if volume is not None:
            views["ijk_to_ras"] = [float(v) for v in self.geometry.ijk_to_world(volume).ravel()]
        with self.server.state:
            self.server.state.slidesam_views = views

    def _segment_changed(self, segment_id: str) -> None:
        """The segment the next Propagate writes into (the segment editor's active one; none: a new 'SlideSAM')."""
        segment = self.editor.get_segment(segment_id) if segment_id else None
        self._set(segment=segment.GetName() if segment is not None else "")

    def _undo_changed(self, *_):
        undo = self.editor.undo_stack
        with self.server.state:
            self.server.state.slidesam_can_undo = bool(undo is not None and undo.can_undo())

    def _range_changed(self, slidesam_range_on=False, slidesam_range_from="", slidesam_range_to="", **_) -> None:
        """"Only slices" as the server holds it, sent back to the page (a browser test waits for it where it needs the
        server's state; the run buttons do not: they send the fields with the click, see `propagate`)."""
        self._set(range_seen=[bool(slidesam_range_on), str(slidesam_range_from).strip(), str(slidesam_range_to).strip()])

    def _set(self, **values) -> None:
        with self.server.state:
            for key, value in values.items():
                self.server.state[f"slidesam_{key}"] = value

    # -- prompts ----------------------------------------------------------------------------
    def _node(self, name: str, node_class: str, fresh: bool = False):
        node = self.app.scene.GetFirstNodeByName(name)
        if node is not None and fresh:
            self.app.scene.RemoveNode(node)
            node = None
        if node is None:
            node = self.app.scene.AddNewNodeByClass(node_class, name)
            node.CreateDefaultDisplayNodes()
        return node

    def place_box(self) -> None:
        """A new ROI replaces the previous box: the next Propagate uses the box placed last."""
        roi = self._node(BOX_NODE, "vtkMRMLMarkupsROINode", fresh=True)
        roi.AddObserver(roi.PointModifiedEvent, self._prompt_changed)
        roi.AddObserver(roi.PointPositionDefinedEvent, self._prompt_changed)
        self.app.markups_logic.place_node(roi, False)
        self._set(message="drag a box around the structure on a slice view", error="")

    @staticmethod
    def _box_size(box):
        size = [0.0] * 3
        box.GetSizeWorld(size)
        return [round(v, 1) for v in size]

    def _prompt_changed(self, *_):
        """What the page shows of the prompt: the box's size (mm), the clicks placed, and whether a placement is under way."""
        box, include, exclude = self._prompt_nodes()
        count = lambda node: node.GetNumberOfDefinedControlPoints() if node is not None else 0  # noqa: E731
        interaction = self.app.markups_logic.interaction_node
        placing = interaction is not None and interaction.GetCurrentInteractionMode() == interaction.Place
        with self.server.state:
            self.server.state.slidesam_prompt = {
                "box_mm": self._box_size(box) if box is not None else [0, 0, 0], "include": count(include), "exclude": count(exclude),
                "placing": bool(placing),
            }

    def _place_points(self, name: str, colour) -> None:
        points = self._node(name, "vtkMRMLMarkupsFiducialNode")
        if points.GetID() not in self._observed_points:
            points.AddObserver(points.PointPositionDefinedEvent, self._prompt_changed)
            points.AddObserver(points.PointRemovedEvent, self._prompt_changed)
            self._observed_points.add(points.GetID())
        points.GetDisplayNode().SetSelectedColor(*colour)
        self.app.markups_logic.place_node(points, True)

    def place_include(self) -> None:
        self._place_points(INCLUDE_NODE, (0.2, 0.9, 0.2))
        self._set(message="click inside the structure (include points)", error="")

    def place_exclude(self) -> None:
        self._place_points(EXCLUDE_NODE, (0.9, 0.2, 0.2))
        self._set(message="click outside the structure (exclude points)", error="")

    def clear_prompts(self) -> None:
        self.app.markups_logic.disable_place_mode()
        for name in (BOX_NODE, INCLUDE_NODE, EXCLUDE_NODE):
            node = self.app.scene.GetFirstNodeByName(name)
            if node is not None:
                self.app.scene.RemoveNode(node)
        self._used_points.clear()
        self._prompt_changed()
        self._set(message="prompts cleared", error="")

    def _prompt_nodes(self):
        box = self.app.scene.GetFirstNodeByName(BOX_NODE)
        if box is not None and box.GetNumberOfControlPoints() == 0 and not self._box_size(box)[0]:
            box = None  # Box pressed, nothing placed yet (a finished ROI keeps its size and drops its points)
        include = self.app.scene.GetFirstNodeByName(INCLUDE_NODE)
        exclude = self.app.scene.GetFirstNodeByName(EXCLUDE_NODE)
        return box, include, exclude

    def _defined_points(self):
        """[((node ID, point ID), world RAS, include)] of the include and exclude points placed (not those still being placed)."""
        out = []
        for name, include in ((INCLUDE_NODE, True), (EXCLUDE_NODE, False)):
            node = self.app.scene.GetFirstNodeByName(name)
            for n in range(node.GetNumberOfControlPoints() if node is not None else 0):
                if node.GetNthControlPointPositionStatus(n) == node.PositionDefined:
                    position = [0.0] * 3
                    node.GetNthControlPointPositionWorld(n, position)
                    out.append(((node.GetID(), node.GetNthControlPointID(n)), position, include))
        return out

    def _refinement_clicks(self):
        """[(RAS, include)]: the points placed since the last run (those of earlier prompts were that run's)."""
        return [(ras, include) for key, ras, include in self._defined_points() if key not in self._used_points]

    # -- runs -------------------------------------------------------------------------------
    def _nodes(self):
        volume, segmentation = self.editor.active_volume_node, self.editor.active_segmentation_node
        if volume is None or segmentation is None:
            raise SlideSAMError("no volume loaded: open one with the upload button, or give its path to 'slidesam web IMAGE'")
        return volume, segmentation

    # The run buttons send the fields a run reads with the click itself (panel.RUN_FIELDS): the page pushes a typed
    # value to the server only once its earlier pushes are answered, while a click goes at once, so a run that read the
    # server's state could use the value from before the last keystroke (Testing/web/test_web_typed_range.py).
    def propagate(self, range_on, range_from, range_to, direction) -> None:
        self._start(self._propagate((range_on, range_from, range_to), direction))

    def restart(self, range_on, range_from, range_to, direction) -> None:
        self._start(self._restart((range_on, range_from, range_to), direction))

    def refine(self, range_on, range_from, range_to) -> None:
        self._start(self._refine((range_on, range_from, range_to)))

    def _start(self, run) -> None:
        """Start a run and return at once.  The page's connection handles one message at a time (wslink awaits each
        handler before reading the next), so a handler awaiting the whole run would hold back Cancel, downloads and
        every view interaction until the run ended."""
        task = asyncio.get_running_loop().create_task(run)
        self._tasks.add(task)  # the loop keeps only a weak reference to a task
        task.add_done_callback(self._tasks.discard)

    async def _propagate(self, range_fields, direction: str) -> None:
        def prepare():
            volume, segmentation = self._nodes()
            box, include, exclude = self._prompt_nodes()
            self.app.markups_logic.disable_place_mode()
            axis, index, view = self.geometry.pick_prompt_view(volume, self._slice_nodes(), box, include, exclude)
            self._prompt_view = view or self._prompt_view
            job = self.logic.prepareSegment(
                volume, segmentation, self.editor.get_active_segment_id() or None, box=box, points=include, excludePoints=exclude,
                direction=direction, sliceRange=self._slice_range(*range_fields), axis=axis, sliceIndex=index,
                editorNode=self.editor.editor_node,
            )
            request = job.requests[0]  # the contract's SegmentRequest, as the engine receives it
            return job, {"box_ijk": [list(map(float, c)) for c in request.box] if request.box else None,
                         "points_ijk": [[list(map(float, p.ijk)), bool(p.include)] for p in request.points], "axis": job.axis}

        await self._run("propagate", prepare)

    async def _restart(self, range_fields, direction: str) -> None:
        def prepare():
            volume, segmentation = self._nodes()
            segment_id = self.editor.get_active_segment_id()
            view = self._prompt_view or self.app.scene.GetFirstNodeByName("Red")
            axis, index = self.geometry.slice_view_axis_and_index(volume, view)
            job = self.logic.prepareRestart(volume, segmentation, segment_id, index, axis=axis, direction=direction,
                                            sliceRange=self._slice_range(*range_fields), editorNode=self.editor.editor_node)
            return job, {"restart_slice": index, "axis": axis}

        await self._run("restart", prepare)

    async def _refine(self, range_fields) -> None:
        def prepare():
            volume, segmentation = self._nodes()
            self.app.markups_logic.disable_place_mode()
            clicks = self._refinement_clicks()
            if not clicks:
                raise SlideSAMError("no refinement click placed since the last run: press Include or Exclude, click on the slice to correct, "
                                    "then Refine")
            segment_id = self.editor.get_active_segment_id()
            if not segment_id:
                raise SlideSAMError("no segment selected: select the segment to refine in the segment editor")
            axis, _index, view = self.geometry.pick_prompt_view(volume, self._slice_nodes(), None, clicks)  # none: the segment's last axis
            job = self.logic.prepareRefine(volume, segmentation, segment_id, points=clicks, axis=axis,
                                           sliceRange=self._slice_range(*range_fields), editorNode=self.editor.editor_node)
            self._prompt_view = view or self._prompt_view
            request = job.requests[0]  # the contract's RefineRequest, as the engine receives it
            return job, {"refine_slice": request.slice_index, "axis": job.axis,
                         "points_ijk": [[list(map(float, p.ijk)), bool(p.include)] for p in request.points]}

        await self._run("refine", prepare)

    @staticmethod
    def _slice_range(range_on, range_from, range_to):
        """(first, last) slice indices along the prompt's axis when "Only slices" is ticked, else None (the whole volume);
        the values are the page's fields as the run button sent them with its click (see `propagate`)."""
        if not range_on:
            return None
        try:
            first, last = (int(str(value).strip()) for value in (range_from, range_to))
        except ValueError:
            raise SlideSAMError(f"the slice range '{range_from}' to '{range_to}' is not two whole slice numbers: "
                                "type both, or untick 'Only slices'") from None
        return first, last

    async def _run(self, kind: str, prepare) -> None:
        """Prepare on the page's thread, run the engine on a worker thread, write the result back here."""
        from trame_slicer.segmentation.segmentation_undo_command import SegmentationLabelMapUndoCommand

        if self.server.state.slidesam_busy:
            return
        started = time.perf_counter()
        try:
            job, summary = prepare()
        except SlideSAMError as exc:
            self._set(error=str(exc), message="")
            return
        self._cancel.clear()
        self._set(busy=True, progress=0, error="", message=f"{kind}: starting")
        loop, first = asyncio.get_running_loop(), []

        def progress(fraction, message):
            if fraction > 0 and not first:
                first.append(time.perf_counter() - started)
            loop.call_soon_threadsafe(lambda: self._set(progress=round(100 * float(fraction)), message=f"{kind}: {message}"))

        preview = None
        try:
            if job.axis is not None:
                preview = LivePreview(self.logic, self.editor, job, loop)
            await loop.run_in_executor(None, job.run, progress, self._cancel.is_set, preview.slice_done if preview else None)
            if preview is not None:
                preview.restore()  # the run's one undo step starts from the segment as it was before it
            segmentation = self.editor.active_segmentation
            with SegmentationLabelMapUndoCommand.push_state_change(segmentation):
                report = self.logic.applyJob(job)
            segmentation.trigger_modified()
            self._used_points.update(key for key, _, _ in self._defined_points())  # this run's prompt: not the next refine's
            self.editor.set_active_segment_id(report.segmentId)
            self._show_prompt_in_other_views()
        except SlideSAMError as exc:
            self._restore(preview)
            self._set(busy=False, error=str(exc), message=f"{kind} failed")
            return
        except Exception as exc:  # an unexpected failure must not leave the page busy forever
            self._restore(preview)
            log.exception("SlideSAM web: %s failed", kind)
            self._set(busy=False, error=f"{kind} failed: {type(exc).__name__}: {exc}", message="")
            return
        total = time.perf_counter() - started
        slices = report.slices
        name = self.editor.get_segment(report.segmentId).GetName()
        span = f"{self.geometry.AXIS_NAMES[report.axis]} {slices[0]}..{slices[-1]}" if slices else "no slice"
        if job.kind == "refine" and job.results:  # what a refine replaced: the engine's span (a slice in it without a mask is cleared)
            first_replaced, last_replaced = job.results[0].span
            span = f"{span}, replacing {self.geometry.AXIS_NAMES[report.axis]} {first_replaced}..{last_replaced}"
        summary.update(kind=kind, segment_id=report.segmentId, segment=name, slices=[slices[0], slices[-1]] if slices else [],
                       slice_range=list(job.slice_range) if job.slice_range else None, prompt=report.prompt,
                       span=list(job.results[0].span) if job.kind == "refine" and job.results else None,
                       changed=len(report.changedSlices), cancelled=report.cancelled, stopped=report.stopped,
                       seconds_first_progress=round(first[0], 3) if first else None, seconds_total=round(total, 3),
                       shown_while_running=sorted(set(preview.shown)) if preview else [],
                       seconds_first_mask=round(preview.first_shown - started, 3) if preview and preview.first_shown else None)
        self._set(busy=False, progress=100, last=summary,
                  message=f"{'cancelled: kept' if report.cancelled else 'wrote'} {len(slices)} slices ({span}) into '{name}' in {total:.1f} s"
                          + ("" if report.cancelled else f"; stopped {describe_stops(report.stopped)}"))

    @staticmethod
    def _restore(preview) -> None:
        """A failed run leaves the segment as it was: the preview is taken back (a failure there is logged, the run's error shown)."""
        if preview is not None:
            try:
                preview.restore()
            except Exception:  # noqa: BLE001  (the run's own error is the one to show)
                log.exception("SlideSAM web: the preview could not be taken back")

    def _show_prompt_in_other_views(self) -> None:
        """Move the other slice views through the box's centre, so the result shows in all three."""
        box = self.app.scene.GetFirstNodeByName(BOX_NODE)
        if box is None:
            return
        centre = [0.0] * 3
        box.GetCenterWorld(centre)
        for node in self._slice_nodes():
            if node is not self._prompt_view:
                node.JumpSliceByOffsetting(*centre)

    def cancel(self) -> None:
        self._cancel.set()
        self._set(message="cancelling at the next slice window")

    def undo(self) -> None:
        """One undo for SlideSAM runs and editor strokes: trame-slicer's undo stack holds both."""
        undo = self.editor.undo_stack
        if undo is not None and undo.can_undo():
            undo.undo()
            self._set(message="undone", error="")

    # -- saving -----------------------------------------------------------------------------
    def _file_bytes(self, suffix: str, write) -> bytes:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"segmentation{suffix}"
            write(str(path))
            if not path.exists():
                raise SlideSAMError(f"writing the {suffix} file failed")
            return path.read_bytes()

    def segmentation_bytes(self, suffix: str) -> bytes:
        """The segmentation as a file: .seg.nrrd (all segments, names, colours) or a NIfTI label map."""
        import slicer

        _, segmentation = self._nodes()
        if suffix == ".seg.nrrd":
            def write(path):
                storage = slicer.vtkMRMLSegmentationStorageNode()
                storage.SetFileName(path)
                if not storage.WriteData(segmentation):
                    raise SlideSAMError(f"Slicer could not write {path}")
        else:
            def write(path):
                self.editor.export_segmentation_to_file(segmentation, path)
        return self._file_bytes(suffix, write)

    def _download(self, suffix: str):
        try:
            data = self.segmentation_bytes(suffix)
        except SlideSAMError as exc:
            self._set(error=str(exc))
            return None
        self._set(message=f"saved {len(data)} bytes as {suffix}", error="")
        return self.server.protocol.addAttachment(data)

    def save_seg_nrrd(self):
        return self._download(".seg.nrrd")

    def save_nifti(self):
        return self._download(".nii.gz")

    def segment_array(self, segment_id: str) -> np.ndarray:
        """A segment on the volume's grid, (k, j, i) uint8 (for checks)."""
        from SlideSAMSlicer.writer import read_segment

        volume, segmentation = self._nodes()
        return read_segment(segmentation, segment_id, volume)
