"""`slidesam serve --parent-pid PID`: stop the server when the process that started it is gone.

The local engine (engine_process.LocalEngine) passes Slicer's PID.  Slicer stops the engine itself on a normal
exit (module cleanup, atexit); this covers a crash or a kill, where no cleanup runs and the engine would stay
behind holding memory and a port.  Standard library only.
"""
import logging
import os
import threading
import time
from typing import Callable

_log = logging.getLogger("slidesam.server")
POLL_S = 2.0  # how often the parent is checked; one stat-like call, nothing measurable


def process_alive(pid: int) -> bool:
    """Whether process `pid` still runs (POSIX: signal 0; Windows: a handle that is not yet signalled)."""
    if os.name == "nt":
        import ctypes

        synchronize, wait_timeout = 0x00100000, 0x102
        kernel32 = ctypes.windll.kernel32
        handle = kernel32.OpenProcess(synchronize, False, pid)
        if not handle:
            return False
        try:
            return kernel32.WaitForSingleObject(handle, 0) == wait_timeout
        finally:
            kernel32.CloseHandle(handle)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


def watch_parent(pid: int, on_gone: Callable[[], None], poll_s: float = POLL_S) -> threading.Thread:
    """Start a daemon thread that calls `on_gone` once, after logging one line, when process `pid` has ended.
    On POSIX an orphaned child is re-parented, so a changed os.getppid() also counts as gone when `pid` was
    the parent at start."""
    was_parent = os.name != "nt" and os.getppid() == pid

    def gone() -> bool:
        return not process_alive(pid) or (was_parent and os.getppid() != pid)

    def loop() -> None:
        while True:
            time.sleep(poll_s)
            if gone():
                _log.warning("slidesam serve: the process that started it (PID %d) has ended: stopping", pid)
                on_gone()
                return

    thread = threading.Thread(target=loop, name="slidesam-parent-watch", daemon=True)
    thread.start()
    return thread
