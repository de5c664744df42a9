"""Writing propagated slices into one segment, honouring Segment Editor masking, with snapshot undo.

Only the slices a run replaces change; every other slice of the segment, and every other
segment, stays as it was — except where a Segment Editor node explicitly allows overwriting
other segments, in which case the voxels this run adds are removed from them (Slicer's rule).
All arrays are numpy (k, j, i) on the volume's voxel grid (the volume is the reference geometry).
"""
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional

import numpy as np
import slicer

from SlideSAMLib.errors import InputError

MAX_UNDO_STEPS = 10


def read_segment(segmentation_node, segment_id: str, volume_node) -> np.ndarray:
    """A uint8 copy of a segment on the volume's grid."""
    return (slicer.util.arrayFromSegmentBinaryLabelmap(segmentation_node, segment_id, volume_node) > 0).astype(np.uint8)


def write_segment(array: np.ndarray, segmentation_node, segment_id: str, volume_node) -> None:
    slicer.util.updateSegmentBinaryLabelmapFromArray(np.ascontiguousarray(array, dtype=np.uint8), segmentation_node, segment_id, volume_node)


def stack_view(array: np.ndarray, axis: int) -> np.ndarray:
    """A view of a (k, j, i) array with IJK `axis` first (the engine's slice stack order)."""
    return np.moveaxis(array, 2 - axis, 0)


def _segment_visible(segmentation_node, segment_id: str) -> bool:
    display = segmentation_node.GetDisplayNode()
    if display is None:
        return True
    return bool(display.GetVisibility()) and bool(display.GetSegmentVisibility(segment_id))


@dataclass
class EditRules:
    """What an edit may change: Segment Editor's editable area, intensity range and overwrite mode."""

    editable: Optional[np.ndarray] = None  # bool (k, j, i); None = everywhere
    protected: Optional[np.ndarray] = None  # bool: voxels of other segments that must not be taken
    overwritten_ids: List[str] = field(default_factory=list)  # other segments that lose the voxels this run adds

    @classmethod
    def from_editor(cls, editor_node, segmentation_node, segment_id: str, volume_node) -> "EditRules":
        """Without an editor node, nothing is masked and no other segment is touched (overlap is allowed)."""
        if editor_node is None:
            return cls()
        segmentation = segmentation_node.GetSegmentation()
        others = [sid for sid in segmentation.GetSegmentIDs() if sid != segment_id]
        arrays: Dict[str, np.ndarray] = {}

        def union(ids: Iterable[str]) -> np.ndarray:
            out = np.zeros(tuple(reversed(volume_node.GetImageData().GetDimensions())), dtype=bool)
            for sid in ids:
                if sid not in arrays:
                    arrays[sid] = read_segment(segmentation_node, sid, volume_node) > 0
                out |= arrays[sid]
            return out

        visible = [sid for sid in others if _segment_visible(segmentation_node, sid)]
        node_class = slicer.vtkMRMLSegmentationNode
        mode = editor_node.GetMaskMode()
        editable = None
        if mode == node_class.EditAllowedInsideAllSegments:
            editable = union(others)
        elif mode == node_class.EditAllowedInsideVisibleSegments:
            editable = union(visible)
        elif mode == node_class.EditAllowedOutsideAllSegments:
            editable = ~union(others)
        elif mode == node_class.EditAllowedOutsideVisibleSegments:
            editable = ~union(visible)
        elif mode == node_class.EditAllowedInsideSingleSegment:
            mask_id = editor_node.GetMaskSegmentID()
            if not mask_id or segmentation.GetSegment(mask_id) is None:
                raise InputError("Segment Editor's editable area is 'inside a segment' but names none: pick the mask segment or set 'Everywhere'")
            editable = union([mask_id])
        if editor_node.GetSourceVolumeIntensityMask():
            lo, hi = editor_node.GetSourceVolumeIntensityMaskRange()
            in_range = (slicer.util.arrayFromVolume(volume_node) >= lo) & (slicer.util.arrayFromVolume(volume_node) <= hi)
            editable = in_range if editable is None else editable & in_range
        overwrite = editor_node.GetOverwriteMode()
        editor_class = slicer.vtkMRMLSegmentEditorNode
        if overwrite == editor_class.OverwriteAllSegments:
            overwritten = others
        elif overwrite == editor_class.OverwriteVisibleSegments:
            overwritten = visible
        else:
            overwritten = []
        kept = [sid for sid in others if sid not in overwritten]
        protected = union(kept) if kept else None
        return cls(editable=editable, protected=protected, overwritten_ids=list(overwritten))


@dataclass
class UndoStep:
    segmentation_id: str
    previous: Dict[str, np.ndarray]  # segment id -> packed bits of its previous array
    shape: tuple
    created_segment: Optional[str]
    volume_id: str


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
        protected = stack_view(rules.protected, axis) if rules.protected is not None else None
        for s in sorted(set(replaced_slices)):
            mask = slice_masks.get(s)
            target = np.zeros(new_stack.shape[1:], dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
            if protected is not None:  # never take voxels of segments that may not be overwritten
                target &= ~protected[s] | (cur_stack[s] > 0)
            if editable is not None:  # outside the editable area the segment keeps what it had
                target = np.where(editable[s], target, cur_stack[s] > 0)
            new_stack[s] = target
        added = (new > 0) & (current == 0)
        previous = {segment_id: np.packbits(current)}
        others_new = {}
        if added.any():
            for sid in rules.overwritten_ids:
                other = read_segment(segmentation_node, sid, volume_node)
                if np.any(other[added]):
                    previous[sid] = np.packbits(other)
                    other[added] = 0
                    others_new[sid] = other
        changed = [int(s) for s in range(new_stack.shape[0]) if not np.array_equal(new_stack[s], cur_stack[s])]
        self._push(UndoStep(segmentation_node.GetID(), previous, current.shape, segment_id if created_segment else None, volume_node.GetID()))
        was_modifying = segmentation_node.StartModify()
        try:
            if changed:
                write_segment(new, segmentation_node, segment_id, volume_node)
            for sid, array in others_new.items():
                write_segment(array, segmentation_node, sid, volume_node)
        finally:
            segmentation_node.EndModify(was_modifying)
        return changed

    def _push(self, step: UndoStep) -> None:
        steps = self._undo.setdefault(step.segmentation_id, [])
        steps.append(step)
        del steps[:-MAX_UNDO_STEPS]

    def can_undo(self, segmentation_node) -> bool:
        return bool(segmentation_node is not None and self._undo.get(segmentation_node.GetID()))

    def undo(self, segmentation_node) -> bool:
        """Restore the segments the last run changed (and remove a segment it created). False if nothing to undo."""
        if not self.can_undo(segmentation_node):
            return False
        step = self._undo[segmentation_node.GetID()].pop()
        volume_node = segmentation_node.GetScene().GetNodeByID(step.volume_id)
        if volume_node is None:
            raise InputError("the volume of the run to undo was removed from the scene: undo is not possible")
        segmentation = segmentation_node.GetSegmentation()
        size = int(np.prod(step.shape))
        was_modifying = segmentation_node.StartModify()
        try:
            for sid, packed in step.previous.items():
                if segmentation.GetSegment(sid) is None:
                    continue
                if sid == step.created_segment:
                    segmentation.RemoveSegment(sid)
                    continue
                array = np.unpackbits(packed, count=size).reshape(step.shape)
                write_segment(array, segmentation_node, sid, volume_node)
        finally:
            segmentation_node.EndModify(was_modifying)
        return True
