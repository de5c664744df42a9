"""Browser tests of `slidesam web`: a real `slidesam serve` (the engine) and the real web app, both on 127.0.0.1.

They run in the web environment (.ci/web: trame-slicer, playwright, Debian's chromium), with the
engine in a Python that has torch ($SLIDESAM_ENGINE_PYTHON, e.g. the main .venv).  Anywhere else
every test here is skipped with the reason.  Run: pytest --confcutdir=Testing/web Testing/web
(--confcutdir keeps the main suite's conftest, which needs torch, out of the web environment).
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from webpage import CT, DATA, ROOT
SERVER_START_S = 300  # model load on a loaded CI machine


def _missing() -> str:
    for module in ("trame_slicer", "playwright", "slicerio", "SimpleITK"):
        try:
            __import__(module)
        except ImportError:
            return f"{module} is not installed here: the browser tests run in the web environment (.ci/web)"
    if not _chromium():
        return "no Chromium found (apt-get install chromium, or set SLIDESAM_CHROMIUM)"
    if not _engine_python():
        return "no engine Python: set SLIDESAM_ENGINE_PYTHON to a Python with SlideSAM's engine and server (e.g. .venv/bin/python)"
    if not CT.exists():
        return f"test data not found at {DATA}"
    return ""


def _chromium() -> str:
    return os.environ.get("SLIDESAM_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser") or ""


def _engine_python() -> str:
    python = os.environ.get("SLIDESAM_ENGINE_PYTHON", "")
    return python if python and Path(python).exists() else ""


def pytest_collection_modifyitems(config, items):
    reason = _missing()
    if reason:
        for item in items:
            if Path(str(item.fspath)).parent == Path(__file__).parent:
                item.add_marker(pytest.mark.skip(reason=reason))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, process, seconds: float, log: Path) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(url, timeout=5).read()
            return
        except OSError:
            time.sleep(1)
    raise RuntimeError(f"{url} did not answer within {seconds} s: {log.read_text()[-2000:]}")


def _stop(process) -> None:
    """Stop a process this fixture started, by its PID."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="session")
def web_app(tmp_path_factory):
    """(page URL, engine URL): `slidesam serve` and `slidesam web example_ct --server` on free loopback ports."""
    folder = tmp_path_factory.mktemp("web_app")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VTK_DEFAULT_OPENGL_WINDOW": "vtkEGLRenderWindow"}
    engine_port, web_port = free_port(), free_port()
    engine_url, web_url = f"http://127.0.0.1:{engine_port}", f"http://127.0.0.1:{web_port}/"
    serve_log, web_log = folder / "serve.log", folder / "web.log"
    serve = subprocess.Popen(
        [_engine_python(), "-m", "SlideSAMLib.cli", "serve", "--host", "127.0.0.1", "--port", str(engine_port), "--device", "cpu"],
        cwd=ROOT, env=env, stdout=serve_log.open("w"), stderr=subprocess.STDOUT,
    )
    web = None
    try:
        _wait_http(engine_url + "/version", serve, SERVER_START_S, serve_log)
        web = subprocess.Popen(
            [sys.executable, "-m", "SlideSAMLib.cli", "web", str(CT), "--host", "127.0.0.1", "--port", str(web_port), "--server", engine_url],
            cwd=ROOT, env=env, stdout=web_log.open("w"), stderr=subprocess.STDOUT,
        )
        _wait_http(web_url, web, SERVER_START_S, web_log)
        yield web_url, engine_url
    finally:
        if web is not None:
            _stop(web)
        _stop(serve)


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=_chromium(), args=["--no-sandbox", "--disable-gpu"])
        yield chromium
        chromium.close()
