"""`slidesam serve --parent-pid`: the engine stops when the process that started it dies without cleanup
(a crashed Slicer), and refuses a PID that is not running."""
import subprocess
import sys

from server_testing import ROOT, ServerProcess

from SlideSAMLib.engine_process import LocalEngine


def _reaped_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_the_server_stops_when_its_parent_is_killed(tmp_path):
    parent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(900)"])
    server = ServerProcess(tmp_path, "--parent-pid", str(parent.pid))
    try:
        server.wait_ready()
        assert server.proc.poll() is None
        parent.kill()  # no cleanup runs, as when Slicer crashes
        parent.wait(timeout=30)  # reaped, as Slicer's own parent would
        assert server.proc.wait(timeout=120) == 0
        assert f"(PID {parent.pid}) has ended: stopping" in server.log_path.read_text()
    finally:
        if parent.poll() is None:
            parent.kill()
        server.stop()


def test_a_parent_pid_that_is_not_running_is_refused_in_one_line():
    pid = _reaped_pid()
    run = subprocess.run([sys.executable, "-m", "SlideSAMLib.cli", "serve", "--parent-pid", str(pid)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert lines[-1].endswith(f"--parent-pid {pid} is not a running process: give the PID of the process that should own the server")


def test_the_local_engine_names_its_own_process_as_parent():
    import os

    command = LocalEngine(python=sys.executable).command(1234, "/k")
    assert command[command.index("--parent-pid") + 1] == str(os.getpid())
