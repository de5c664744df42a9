"""Writing propagated slices into one segment, honouring Segment Editor masking, with snapshot undo.

Only the slices a run replaces change; every other slice of the segment stays as it was.  Other
segments follow Segment Editor's overwrite mode, as Slicer applies it
(vtkSlicerSegmentEditorLogic::ModifySegmentByLabelmap, v5.8.1 / v5.10.0): *None* leaves every other
segment unchanged (the new one may overlap them), *Visible* removes what this run writes from the
visible segments only, *All* from every other segment.  Without an editor node nothing is masked
and no other segment changes.
All arrays are numpy (k, j, i) on the volume's voxel grid (the volume is the reference geometry).
"""
import logging
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional

import numpy as np
import slicer
import vtk
from vtk.util.numpy_support import vtk_to_numpy

from SlideSAMLib.errors import InputError

MAX_UNDO_STEPS = 10


def read_segment(segmentation_node, segment_id: str, volume_node) -> np.ndarray:
    """A uint8 copy of a segment on the volume's grid."""
    return (slicer.util.arrayFromSegmentBinaryLabelmap(segmentation_node, segment_id, volume_node) > 0).astype(np.uint8)


def _ijk_to_segmentation(volume_node, segmentation_node) -> vtk.vtkMatrix4x4:
    """The volume's IJK-to-RAS moved into the segmentation's own frame (its parent transform), linear only."""
    to_segmentation = vtk.vtkMatrix4x4()
    if not slicer.vtkMRMLTransformNode.GetMatrixTransformBetweenNodes(
            volume_node.GetParentTransformNode(), segmentation_node.GetParentTransformNode(), to_segmentation):
        raise InputError(
            f"'{volume_node.GetName()}' and '{segmentation_node.GetName()}' are under different transforms and the one between "
            "them is not linear: put the segmentation under the volume's transform, or harden the transform (Data module)")
    ijk_to_segmentation = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(ijk_to_segmentation)
    vtk.vtkMatrix4x4.Multiply4x4(to_segmentation, ijk_to_segmentation, ijk_to_segmentation)
    return ijk_to_segmentation


def check_grid(segmentation_node, segment_ids: Iterable[str], volume_node) -> None:
    """Refuse, in one line, to rewrite a segment that holds voxels on another grid than the volume's.

    A run is written on the volume's voxel grid, and the whole segment is replaced (ImportLabelmapToSegmentationNode
    gives it the imported labelmap's geometry: vtkSlicerSegmentationsModuleLogic.cxx, `AddRepresentation`). A segment
    stored on another grid (an oversampled segmentation, one made on another volume) would be resampled everywhere,
    not only on the slices the run replaces. A segment on the same lattice (a cropped extent of it) or empty is fine."""
    segmentation = segmentation_node.GetSegmentation()
    volume = slicer.util.arrayFromVTKMatrix(_ijk_to_segmentation(volume_node, segmentation_node))
    to_volume_ijk = np.linalg.inv(volume)
    spacing = np.linalg.norm(volume[:3, :3], axis=0)
    name = slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
    for sid in segment_ids:
        segment = segmentation.GetSegment(sid) if sid else None
        stored = segment.GetRepresentation(name) if segment is not None else None
        if stored is None or stored.IsEmpty() or stored.GetPointData().GetScalars() is None:
            continue
        matrix = vtk.vtkMatrix4x4()
        stored.GetImageToWorldMatrix(matrix)  # in the segmentation's frame
        grid = slicer.util.arrayFromVTKMatrix(matrix)
        offset = (to_volume_ijk @ grid[:, 3])[:3]  # its voxel 0 in the volume's IJK: whole numbers on the same lattice
        if np.allclose(grid[:3, :3], volume[:3, :3], atol=1e-4 * float(spacing.min())) and np.allclose(offset, np.rint(offset), atol=1e-3):
            continue
        scalars = vtk_to_numpy(stored.GetPointData().GetScalars())
        if not np.any(scalars == segment.GetLabelValue()):
            continue  # nothing stored: nothing to lose
        own = "x".join(f"{v:.3g}" for v in np.linalg.norm(grid[:3, :3], axis=0))
        theirs = "x".join(f"{v:.3g}" for v in spacing)
        raise InputError(
            f"segment '{segment.GetName()}' of '{segmentation_node.GetName()}' is stored on another voxel grid ({own} mm) than "
            f"'{volume_node.GetName()}' ({theirs} mm), and SlideSAM writes on the volume's grid, which would resample all of it: "
            f"write into a new segment, or resample the segmentation onto '{volume_node.GetName()}' (Segment Editor: Specify geometry)")


def write_segment(array: np.ndarray, segmentation_node, segment_id: str, volume_node) -> None:
    """Replace a segment by a (k, j, i) array on the volume's grid.

    Not slicer.util.updateSegmentBinaryLabelmapFromArray: where the volume and the segmentation sit under different
    transforms (a registered volume, a new segmentation) it applies the transform between them twice. Its temporary
    labelmap takes the volume's transform (vtkSlicerVolumesLogic::CreateLabelVolumeFromVolume), and
    vtkSlicerSegmentationsModuleLogic::ImportLabelmapToSegmentationNode(labelmapNode, segmentationNode,
    updatedSegmentIDs) transforms the image, then passes the same transform on to be applied again (Slicer 5.6.2 and
    main, 2026-08). It also deep-copies the grey volume for each write. Here the labelmap is made in the
    segmentation's own frame (the volume's IJK-to-RAS moved there), so the import applies no transform."""
    ijk_to_segmentation = _ijk_to_segmentation(volume_node, segmentation_node)
    labelmap = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__temp__")
    try:
        labelmap.SetAndObserveTransformNodeID(segmentation_node.GetTransformNodeID())
        slicer.util.updateVolumeFromArray(labelmap, np.ascontiguousarray(array, dtype=np.uint8))
        labelmap.SetIJKToRASMatrix(ijk_to_segmentation)
        ids = vtk.vtkStringArray()
        ids.InsertNextValue(segment_id)
        if not slicer.modules.segmentations.logic().ImportLabelmapToSegmentationNode(labelmap, segmentation_node, ids):
            raise RuntimeError("Importing of segment failed.")  # what updateSegmentBinaryLabelmapFromArray raises
    finally:
        slicer.mrmlScene.RemoveNode(labelmap)


def save_segment_editor_state(segmentation_node) -> None:
    """Save Segment Editor's undo state now, before a run writes, so its Undo takes back exactly that run, not the run
    with the effect before it: SlideSAM's writes are not in its history (vtkSegmentationHistory restores the state
    saved before its last effect). Only where the Segment Editor's widget exists (Slicer sets
    slicer.modules.SegmentEditorWidget when it makes it: qSlicerScriptedLoadableModuleWidget::setPythonSource) and
    edits this segmentation."""
    editor = getattr(getattr(slicer.modules, "SegmentEditorWidget", None), "editor", None)
    node = editor.segmentationNode() if editor is not None else None
    if node is not None and node.GetID() == segmentation_node.GetID():
        editor.saveStateForUndo()  # qMRMLSegmentEditorWidget public slot (Slicer 5.6.2 and main)


def stack_view(array: np.ndarray, axis: int) -> np.ndarray:
    """A view of a (k, j, i) array with IJK `axis` first (the engine's slice stack order)."""
    return np.moveaxis(array, 2 - axis, 0)


def _visible_segment_ids(segmentation_node, segment_ids) -> List[str]:
    """The segments shown: the segment's own visibility only, as Slicer's GenerateEditMask and overwrite rule read it
    (a segmentation without a display node shows none)."""
    display = segmentation_node.GetDisplayNode()
    if display is None:
        return []
    return [sid for sid in segment_ids if display.GetSegmentVisibility(sid)]


def editor_applies(editor_node, segmentation_node) -> bool:
    """A Segment Editor node's settings belong to its own segmentation: they apply only when it edits this one."""
    return editor_node is not None and editor_node.GetSegmentationNode() is segmentation_node


def check_editor(editor_node, segmentation_node, volume_node) -> None:
    """Refuse, in one line, editor settings that cannot be applied to this run (before anything is computed)."""
    if not editor_applies(editor_node, segmentation_node):
        return
    if editor_node.GetMaskMode() == slicer.vtkMRMLSegmentationNode.EditAllowedInsideSingleSegment:
        mask_id = editor_node.GetMaskSegmentID()
        if not mask_id or segmentation_node.GetSegmentation().GetSegment(mask_id) is None:
            raise InputError("Segment Editor's editable area is 'inside a segment' but names none: pick the mask segment or set 'Everywhere'")
    if editor_node.GetSourceVolumeIntensityMask() and editor_node.GetSourceVolumeNode() is not volume_node:
        source = editor_node.GetSourceVolumeNode()
        raise InputError(
            f"Segment Editor's editable intensity range belongs to its source volume '{source.GetName() if source else 'none'}', "
            f"not '{volume_node.GetName()}': select '{volume_node.GetName()}' as Segment Editor's source volume, or turn the intensity range off"
        )


@dataclass
class EditRules:
    """What an edit may change: Segment Editor's editable area, intensity range and overwrite mode."""

    editable: Optional[np.ndarray] = None  # bool (k, j, i); None = everywhere
    overwritten_ids: List[str] = field(default_factory=list)  # other segments that lose the voxels this run writes

    @classmethod
    def from_editor(cls, editor_node, segmentation_node, segment_id: str, volume_node) -> "EditRules":
        """Without an editor node, or with one that edits another segmentation, nothing is masked and no other
        segment changes.  Editable areas follow vtkMRMLSegmentationNode::GenerateEditMask: "inside all / visible
        segments" includes the edited segment itself, "outside" excludes it."""
        if editor_node is None:
            return cls()
        if not editor_applies(editor_node, segmentation_node):
            logging.info("SlideSAM: the Segment Editor edits another segmentation; its masking and overwrite settings do not apply here")
            return cls()
        check_editor(editor_node, segmentation_node, volume_node)
        segmentation = segmentation_node.GetSegmentation()
        all_ids = list(segmentation.GetSegmentIDs())
        others = [sid for sid in all_ids if sid != segment_id]
        arrays: Dict[str, np.ndarray] = {}

        def union(ids: Iterable[str]) -> np.ndarray:
            out = np.zeros(tuple(reversed(volume_node.GetImageData().GetDimensions())), dtype=bool)
            for sid in ids:
                if sid not in arrays:
                    arrays[sid] = read_segment(segmentation_node, sid, volume_node) > 0
                out |= arrays[sid]
            return out

        visible = _visible_segment_ids(segmentation_node, all_ids)
        node_class = slicer.vtkMRMLSegmentationNode
        mode = editor_node.GetMaskMode()
        editable = None
        if mode == node_class.EditAllowedInsideAllSegments:
            editable = union(all_ids)
        elif mode == node_class.EditAllowedInsideVisibleSegments:
            editable = union(visible)
        elif mode == node_class.EditAllowedOutsideAllSegments:
            editable = ~union(others)
        elif mode == node_class.EditAllowedOutsideVisibleSegments:
            editable = ~union([sid for sid in visible if sid != segment_id])
        elif mode == node_class.EditAllowedInsideSingleSegment:
            editable = union([editor_node.GetMaskSegmentID()])
        if editor_node.GetSourceVolumeIntensityMask():
            lo, hi = editor_node.GetSourceVolumeIntensityMaskRange()
            voxels = slicer.util.arrayFromVolume(volume_node)
            in_range = (voxels >= lo) & (voxels <= hi)
            editable = in_range if editable is None else editable & in_range
        overwrite = editor_node.GetOverwriteMode()
        editor_class = slicer.vtkMRMLSegmentEditorNode
        if overwrite == editor_class.OverwriteNone:
            overwritten = []
        elif overwrite == editor_class.OverwriteVisibleSegments:
            overwritten = [sid for sid in visible if sid != segment_id]
        else:  # OverwriteAllSegments, and Slicer's default for any other value
            overwritten = others
        return cls(editable=editable, overwritten_ids=overwritten)


@dataclass
class UndoStep:
    segmentation_id: str
    previous: Dict[str, np.ndarray]  # segment id -> packed bits of its previous array
    shape: tuple
    created_segment: Optional[str]
    volume_id: str
    changed: Dict[str, np.ndarray] = field(default_factory=dict)  # segment id -> packed bits of the voxels the run changed


class SegmentWriter:
    """Writes runs into segments and keeps per-segmentation undo snapshots (one step per run)."""

    def __init__(self):
        self._undo: Dict[str, List[UndoStep]] = {}

    def apply(
        self,
        volume_node,
        segmentation_node,
        segment_id: str,
        axis: int,
        slice_masks: Dict[int, np.ndarray],
        replaced_slices: Iterable[int],
        rules: EditRules,
        created_segment: bool = False,
    ) -> List[int]:
        """Replace `replaced_slices` (along `axis`) of the segment by `slice_masks` (missing = cleared).

        Returns the slices whose content changed. One undo step is recorded.
        """
        current = read_segment(segmentation_node, segment_id, volume_node)
        new = current.copy()
        new_stack, cur_stack = stack_view(new, axis), stack_view(current, axis)
        editable = stack_view(rules.editable, axis) if rules.editable is not None else None
        written = np.zeros(new.shape, dtype=bool)  # what this run paints: other segments it may overwrite lose it
        written_stack = stack_view(written, axis)
        for s in sorted(set(replaced_slices)):
            mask = slice_masks.get(s)
            target = np.zeros(new_stack.shape[1:], dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
            if editable is not None:  # outside the editable area the segment keeps what it had
                written_stack[s] = target & editable[s]
                target = np.where(editable[s], target, cur_stack[s] > 0)
            else:
                written_stack[s] = target
            new_stack[s] = target
        previous = {segment_id: np.packbits(current)}
        run_changed = {}  # segment id -> packed bits of the voxels this run changes (what Undo puts back)
        others_new = {}
        if written.any():
            for sid in rules.overwritten_ids:
                other = read_segment(segmentation_node, sid, volume_node)
                if np.any(other[written]):
                    previous[sid] = np.packbits(other)
                    run_changed[sid] = np.packbits(written & (other > 0))
                    other[written] = 0
                    others_new[sid] = other
        changed = [int(s) for s in range(new_stack.shape[0]) if not np.array_equal(new_stack[s], cur_stack[s])]
        writes = ([(segment_id, new)] if changed else []) + list(others_new.items())
        check_grid(segmentation_node, [sid for sid, _ in writes], volume_node)  # before anything is written
        done = []
        was_modifying = segmentation_node.StartModify()
        try:
            for sid, array in writes:
                write_segment(array, segmentation_node, sid, volume_node)
                done.append(sid)
        except Exception:
            for sid in done:  # all or nothing: put back what was already written, then report
                size = int(np.prod(current.shape))
                write_segment(np.unpackbits(previous[sid], count=size).reshape(current.shape), segmentation_node, sid, volume_node)
            raise
        finally:
            segmentation_node.EndModify(was_modifying)
        if changed:
            run_changed[segment_id] = np.packbits(new != current)
        self._push(UndoStep(segmentation_node.GetID(), previous, current.shape, segment_id if created_segment else None, volume_node.GetID(),
                            run_changed))
        return changed

    def clear(self) -> None:
        """Forget every undo step (a new scene reuses node IDs)."""
        self._undo.clear()

    def _push(self, step: UndoStep) -> None:
        steps = self._undo.setdefault(step.segmentation_id, [])
        steps.append(step)
        del steps[:-MAX_UNDO_STEPS]

    def can_undo(self, segmentation_node) -> bool:
        return bool(segmentation_node is not None and self._undo.get(segmentation_node.GetID()))

    def undo(self, segmentation_node) -> bool:
        """Put back the voxels the last run changed, as they were before it (and remove a segment it created); edits
        made since to other voxels stay (painting another slice after a run, then Undo, keeps the paint). False if
        nothing to undo."""
        if not self.can_undo(segmentation_node):
            return False
        step = self._undo[segmentation_node.GetID()].pop()
        volume_node = segmentation_node.GetScene().GetNodeByID(step.volume_id)
        if volume_node is None:
            raise InputError("the volume of the run to undo was removed from the scene: undo is not possible")
        segmentation = segmentation_node.GetSegmentation()
        if tuple(reversed(volume_node.GetImageData().GetDimensions())) != tuple(step.shape):
            raise InputError(f"volume '{volume_node.GetName()}' has other dimensions than at the run: undo is not possible")
        present = [sid for sid in step.previous if segmentation.GetSegment(sid) is not None]
        check_grid(segmentation_node, [sid for sid in present if sid != step.created_segment and sid in step.changed], volume_node)
        size = int(np.prod(step.shape))
        was_modifying = segmentation_node.StartModify()
        try:
            for sid in present:
                if sid == step.created_segment:
                    segmentation.RemoveSegment(sid)
                elif sid in step.changed:  # else the run left it as it was
                    changed = np.unpackbits(step.changed[sid], count=size).reshape(step.shape).astype(bool)
                    previous = np.unpackbits(step.previous[sid], count=size).reshape(step.shape)
                    array = read_segment(segmentation_node, sid, volume_node)
                    array[changed] = previous[changed]
                    write_segment(array, segmentation_node, sid, volume_node)
        finally:
            segmentation_node.EndModify(was_modifying)
        return True
