"""The web annotator's live preview: the shared SegmentPreview (SlideSAM/SlideSAMSlicer/preview.py, one
implementation for both front ends), flushed from the page's event loop when the shared rule allows (`wait_s`: a
run's first slice at once, as the Slicer module's timer does; then at most every FLUSH_S, later if writes are slow),
the page's views told of each write.  SlideSAMSlicer is imported when a preview is made (the host puts it on the path)."""


class LivePreview:
    def __init__(self, logic, editor, job, loop):
        """logic: SlideSAMLogic; editor: trame-slicer's SegmentationEditor; job: the PropagationJob about to run."""
        from SlideSAMSlicer.preview import SegmentPreview

        self.preview = SegmentPreview(logic, job, on_write=lambda: editor.active_segmentation.trigger_modified())
        self.loop, self.scheduled = loop, False

    @property
    def shown(self):
        return self.preview.shown

    @property
    def first_shown(self):
        return self.preview.first_shown

    def slice_done(self, index: int, mask) -> None:
        """Called by the engine's worker thread: keep the slice, and have the page's event loop write it soon."""
        self.preview.slice_done(index, mask)
        self.loop.call_soon_threadsafe(self._schedule)

    def _schedule(self) -> None:
        if not self.scheduled:
            self.scheduled = True
            # the shared pacing rule. It used to wait FLUSH_S before the first write too: a refine done within 0.3 s
            # of its first slice (a quiet machine, 2026-12-03) then showed nothing while it ran.
            self.loop.call_later(self.preview.wait_s(), self._flush)

    def _flush(self) -> None:
        self.scheduled = False
        self.preview.flush()

    def restore(self) -> None:
        self.preview.restore()
