"""One propagation (a prompt, a restart or a refine) split into the part that may run on a thread and its report.

`PropagationJob.run` only sends its contract requests (SlideSAMLib.contract) to the volume's engine
session, no MRML, so the widget runs it on a worker thread; `SlideSAMLogic.applyJob` then writes the
result on the main thread.  The session is the same kind of object for every model source: the local
engine process, a SlideSAM server, or (scripts, tests) a Session in this process.
"""
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple


AXIS_NAMES = "IJK"


@dataclass
class PropagationJob:
    kind: str  # "segment", "restart" or "refine"
    volume_node: object
    segmentation_node: object
    segment_id: Optional[str]  # None or a name/ID that does not exist yet: created when the result is written
    axis: Optional[int]
    directions: Tuple[str, ...]
    slice_range: Optional[Tuple[int, int]]
    requests: List[object]  # contract.SegmentRequest or RefineRequest (one), or RestartRequest (one per direction)
    editor_node: object = None
    corrected_index: Optional[int] = None  # restart, refine: the corrected slice
    get_session: Optional[Callable[[], object]] = None  # returns the volume's contract session (may start the engine)
    results: List[object] = field(default_factory=list)  # contract.Result per request run

    def run(self, progress: Optional[Callable[[float, str], None]] = None, cancel: Optional[Callable[[], bool]] = None,
            slice_done: Optional[Callable[[int, object], None]] = None):
        """Engine calls only: safe on a worker thread.  slice_done(index, mask): each slice along `axis` as the
        engine accepts it (a bool 2D mask in the engine's stack order), for a front end that shows the run as it goes."""
        report = progress or (lambda fraction, message: None)
        report(0.0, "preparing the engine and the volume")
        session = self.get_session()
        n = len(self.requests)
        for step, request in enumerate(self.requests):
            if step and cancel is not None and cancel():
                break

            def part(fraction, message, step=step):
                report((step + fraction) / n, message)

            self.results.append(session.run(request, part, cancel, slice_done))
        report(1.0, "done")
        return self.results


@dataclass
class RunReport:
    """What a run did: returned by `SlideSAMLogic.segment` / `restart` / `refine`."""

    segmentId: str
    axis: int
    slices: List[int]  # slices whose propagated mask was written
    changedSlices: List[int]  # slices whose content actually changed (cleared ones included)
    info: List[dict]  # per slice: index, iou, stability, area, overlap, growth, accepted, reason
    stopped: Dict[str, str]  # "up"/"down" -> why propagation ended there
    cancelled: bool
    seconds: float
    encoderPasses: int
    createdSegment: bool = False
    prompt: str = ""  # how the prompt reached the model (SlideSAMLib.wire.PROMPT_KINDS)

    @property
    def scores(self) -> Dict[int, float]:
        """Predicted IoU of each accepted slice."""
        return {d["index"]: d["iou"] for d in self.info if d["accepted"]}

    def summary(self) -> str:
        if not self.slices:
            span = "no slice written"
        else:
            span = f"{len(self.slices)} slices ({AXIS_NAMES[self.axis]} {self.slices[0]}..{self.slices[-1]})"
        # SlideSAMLib is on the path once SlideSAM.py is loaded; stop_reasons is the standard library only, wire numpy only
        from SlideSAMLib.stop_reasons import describe_stops
        from SlideSAMLib.wire import PROMPT_KINDS

        stops = f"stopped {describe_stops(self.stopped)}" if self.stopped else "nothing was propagated"
        state = "cancelled, partial result kept; " if self.cancelled else ""
        how = f"; {PROMPT_KINDS[self.prompt]}" if self.prompt in ("click-search", "box+click-edits", "refine") else ""
        return f"{state}{span}; {stops}; {self.encoderPasses} encoder passes, {self.seconds:.1f} s{how}"
