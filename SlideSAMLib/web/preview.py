"""A run's slices shown in its segment while the engine works (the engine streams each slice as it accepts it).

The preview writes straight into the target segment (no undo step, no editor masking); before the result is
written the segment is put back as it was, so the run stays one undo step whose "before" is the segment before
the run, and the result (with the editor's masking and overwrite rules) replaces what the preview showed.
"""
import time

import numpy as np

FLUSH_S = 0.3  # at most this often the segment is rewritten (a 512 x 512 x 300 segment takes ~0.1-0.3 s to write)


class LivePreview:
    def __init__(self, logic, editor, job, loop):
        """logic: SlideSAMLogic; editor: trame-slicer's SegmentationEditor; job: the PropagationJob about to run."""
        from SlideSAMSlicer.writer import read_segment, stack_view

        self.editor, self.loop, self.axis = editor, loop, job.axis
        self.volume, self.segmentation = job.volume_node, job.segmentation_node
        self.segment_id, self.created = logic._targetSegment(self.segmentation, job.segment_id, self.volume)
        self.before = read_segment(self.segmentation, self.segment_id, self.volume)
        self.current = self.before.copy()
        self.stack = stack_view(self.current, self.axis)
        self.pending, self.scheduled, self.shown, self.first_shown = {}, False, [], None

    def slice_done(self, index: int, mask) -> None:
        """Called by the engine's worker thread: hand the slice to the page's event loop."""
        self.loop.call_soon_threadsafe(self._add, int(index), np.asarray(mask, dtype=bool))

    def _add(self, index: int, mask: np.ndarray) -> None:
        self.pending[index] = mask
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_later(FLUSH_S, self._flush)

    def _flush(self) -> None:
        from SlideSAMSlicer.writer import write_segment

        self.scheduled = False
        if self.stack is None or not self.pending:
            return
        for index, mask in self.pending.items():
            if 0 <= index < len(self.stack) and mask.shape == self.stack.shape[1:]:
                self.stack[index] = mask
                self.shown.append(index)
        self.pending.clear()
        write_segment(self.current, self.segmentation, self.segment_id, self.volume)
        self.editor.active_segmentation.trigger_modified()
        self.first_shown = self.first_shown or time.perf_counter()

    def restore(self) -> None:
        """Put the segment back as it was before the run (a segment made for the preview goes again)."""
        from SlideSAMSlicer.writer import write_segment

        self.stack, self.pending = None, {}
        if self.created:
            self.segmentation.GetSegmentation().RemoveSegment(self.segment_id)
        elif self.shown:
            write_segment(self.before, self.segmentation, self.segment_id, self.volume)
