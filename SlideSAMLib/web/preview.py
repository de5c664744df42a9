"""The web annotator's live preview: the shared SegmentPreview (SlideSAM/SlideSAMSlicer/preview.py, one
implementation for both front ends), flushed from the page's event loop FLUSH_S after a slice arrives (later if
writes are slow, as the shared rule says), the
page's views told of each write.  SlideSAMSlicer is imported when a preview is made (the host puts it on the path)."""


class LivePreview:
    def __init__(self, logic, editor, job, loop):
        """logic: SlideSAMLogic; editor: trame-slicer's SegmentationEditor; job: the PropagationJob about to run."""
        from SlideSAMSlicer.preview import FLUSH_S, SegmentPreview

        self.preview = SegmentPreview(logic, job, on_write=lambda: editor.active_segmentation.trigger_modified())
        self.loop, self.flush_s, self.scheduled = loop, FLUSH_S, False

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
            self.loop.call_later(max(self.flush_s, self.preview.wait_s()), self._flush)  # the shared pacing rule

    def _flush(self) -> None:
        self.scheduled = False
        self.preview.flush()

    def restore(self) -> None:
        self.preview.restore()
