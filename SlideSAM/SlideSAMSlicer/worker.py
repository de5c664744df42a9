"""A background job for the widget: the job's requests are sent from a Python thread, the GUI polls it.

The model runs in the engine process (or a server), not here: Slicer's main thread holds the GIL
while Qt waits for events, so a Python thread in Slicer's process gets it only during the main
thread's short Python ticks (issue 11 §1).  This thread only waits on a socket, which needs the
GIL once per progress line, so it keeps up.  In-process runs (`SlideSAMLogic(model=...)`, scripts)
use the same thread and are slowed by that.  The thread never touches MRML: the widget polls
`poll()` from a QTimer on the main thread and writes the result there.  Cancel sets a flag the engine checks between slices; slices already done
are kept (the engine returns them with `cancelled=True`).
"""
import threading
import traceback
from typing import Callable, Optional


class BackgroundJob:
    def __init__(self, work: Callable[[Callable[[float, str], None], Callable[[], bool]], object], name: str = "SlideSAM"):
        """`work(progress, cancel)` runs on the thread and returns the result."""
        self._work = work
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.fraction = 0.0
        self.message = "starting"
        self.result = None
        self.error: Optional[BaseException] = None
        self.error_trace = ""

    def _progress(self, fraction: float, message: str) -> None:
        self.fraction, self.message = float(fraction), str(message)

    def _run(self) -> None:
        try:
            self.result = self._work(self._progress, self._cancel.is_set)
        except BaseException as exc:  # reported to the main thread by poll(); nothing is lost
            self.error = exc
            self.error_trace = traceback.format_exc()

    def start(self) -> "BackgroundJob":
        self._thread.start()
        return self

    def cancel(self) -> None:
        self._cancel.set()
        self.message = "cancelling (finishing the current slice)"

    def poll(self):
        """(done, fraction, message) — call from the main thread's timer."""
        return (not self._thread.is_alive() and self._thread.ident is not None), self.fraction, self.message

    def wait(self, timeout: Optional[float] = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()
