"""A run's slices shown in its segment while the engine works (the engine streams each slice as it accepts it).

One implementation for both front ends: the Slicer module flushes it from its poll timer, the web annotator
from its event loop (SlideSAMLib/web/preview.py).  `slice_done` may be called from any thread (the engine's
worker thread): it only stores the slice under a lock.  `flush` and `restore` touch MRML: main thread only.

The preview writes straight into the target segment (no undo step, no editor masking, no other segment); before
the result is written the segment is put back as it was, so the run stays one undo step whose "before" is the
segment before the run, and the result (with the editor's masking and overwrite rules) replaces what the preview
showed.  A segment that does not exist yet (first run) is created for the preview and removed again by
`restore`, so the result's write creates it as an undoable new segment; on an error nothing is left.
"""
import threading
import time
from typing import Callable, Dict, List, Optional

import numpy as np

FLUSH_S = 0.3  # at most this often the segment is rewritten (a 512 x 512 x 300 segment takes ~0.1-0.3 s to write)
IDLE_PER_WRITE = 3  # and only after IDLE_PER_WRITE times as long as the last write took: the preview takes at most a
#                     quarter of the GUI thread however large the volume (the Slicer timer checks `due`)


class SegmentPreview:
    def __init__(self, logic, job, on_write: Optional[Callable[[], None]] = None):
        """logic: SlideSAMLogic; job: the PropagationJob about to run (its axis is known); on_write: called after
        each write (the web page tells its views)."""
        from SlideSAMSlicer.writer import read_segment, stack_view

        self.axis, self.on_write = job.axis, on_write
        self.volume, self.segmentation = job.volume_node, job.segmentation_node
        self.segment_id, self.created = logic._targetSegment(self.segmentation, job.segment_id, self.volume)
        self.before = read_segment(self.segmentation, self.segment_id, self.volume)
        self.current = self.before.copy()
        self.stack = stack_view(self.current, self.axis)
        self._lock = threading.Lock()
        self._pending: Dict[int, np.ndarray] = {}
        self.shown: List[int] = []  # slices written so far (in order of writing)
        self.first_shown: Optional[float] = None  # time.perf_counter() of the first write
        self.last_write, self.write_s = float("-inf"), 0.0

    def slice_done(self, index: int, mask) -> None:
        """Any thread: keep the slice (a copy) until the next flush."""
        with self._lock:
            self._pending[int(index)] = np.array(mask, dtype=bool)

    def wait_s(self, now: Optional[float] = None) -> float:
        """Seconds until the next write may start: FLUSH_S, or IDLE_PER_WRITE x the last write's duration, after it ended."""
        now = time.perf_counter() if now is None else now
        return max(0.0, self.last_write + max(FLUSH_S, IDLE_PER_WRITE * self.write_s) - now)

    def due(self, now: Optional[float] = None) -> bool:
        """Slices are waiting and a write may start now."""
        with self._lock:
            waiting = bool(self._pending)
        return waiting and self.stack is not None and self.wait_s(now) == 0.0

    def flush(self) -> bool:
        """Main thread: write the waiting slices into the segment (one segment write, whatever their number)."""
        from SlideSAMSlicer.writer import write_segment

        with self._lock:
            pending, self._pending = self._pending, {}
        if self.stack is None or not pending:
            return False
        for index, mask in pending.items():
            if 0 <= index < len(self.stack) and mask.shape == self.stack.shape[1:]:
                self.stack[index] = mask
                self.shown.append(index)
        started = time.perf_counter()
        write_segment(self.current, self.segmentation, self.segment_id, self.volume)
        self.last_write = time.perf_counter()
        self.write_s = self.last_write - started
        self.first_shown = self.first_shown or self.last_write
        if self.on_write is not None:
            self.on_write()
        return True

    def flush_if_due(self) -> bool:
        return self.flush() if self.due() else False

    def restore(self, write: bool = True) -> None:
        """Main thread: put the segment back as it was before the run (a segment made for the preview goes again).
        Later slices are dropped; calling it twice does nothing more.  write=False (the scene is closing: writing a
        segment adds a temporary labelmap node to the scene): only a segment made for the preview is removed."""
        from SlideSAMSlicer.writer import write_segment

        with self._lock:
            self._pending = {}
        if self.stack is None:
            return
        self.stack = None
        if self.created:
            self.segmentation.GetSegmentation().RemoveSegment(self.segment_id)
        elif self.shown and write:
            write_segment(self.before, self.segmentation, self.segment_id, self.volume)
