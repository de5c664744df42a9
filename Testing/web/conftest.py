"""Browser tests of `slidesam web`: a real `slidesam serve` (the engine) and the real web app, both on 127.0.0.1.

They run in the web environment (.ci/web: trame-slicer, playwright, Debian's chromium), with the
engine in a Python that has torch ($SLIDESAM_ENGINE_PYTHON, e.g. the main .venv).  Anywhere else
every test here is skipped with the reason.  Run: pytest --confcutdir=Testing/web Testing/web
(--confcutdir keeps the main suite's conftest, which needs torch, out of the web environment).
"""
import json
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

from webpage import CT, DATA, ROOT, TIMINGS, WebPage

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


def web_env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "VTK_DEFAULT_OPENGL_WINDOW": "vtkEGLRenderWindow"}


def start_web(args, log: Path):
    """`slidesam web ARGS` on 127.0.0.1 (its output in `log`); stop it with `stop`."""
    return subprocess.Popen([sys.executable, "-m", "SlideSAMLib.cli", "web", "--host", "127.0.0.1", *args], cwd=ROOT, env=web_env(),
                            stdout=log.open("w"), stderr=subprocess.STDOUT)


@pytest.fixture
def another_web(web_app, tmp_path):
    """start(ARGS) -> page URL: one more `slidesam web ARGS --server (the test engine)` on a free loopback port,
    answering; stopped by its PID when the test ends."""
    started = []

    def start(args):
        port = free_port()
        log = tmp_path / f"web{len(started)}.log"
        process = start_web([*args, "--port", str(port), "--server", web_app[1]], log)
        started.append(process)
        url = f"http://127.0.0.1:{port}/"
        _wait_http(url, process, SERVER_START_S, log)
        return url

    yield start
    for process in started:
        _stop(process)


@pytest.fixture(scope="session")
def web_app(tmp_path_factory):
    """(page URL, engine URL): `slidesam serve` and `slidesam web example_ct --server` on free loopback ports."""
    folder = tmp_path_factory.mktemp("web_app")
    env = web_env()
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
        web = start_web([str(CT), "--port", str(web_port), "--server", engine_url], web_log)
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


def open_page(web_app, browser, folder, init_script: str = ""):
    """(context, WebPage) on the app, once its volume and axial view are shown; `init_script` runs before the page's own."""
    url, engine_url = web_app
    context = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True)
    if init_script:
        context.add_init_script(init_script)
    p = context.new_page()
    started = time.perf_counter()
    p.goto(url)
    web = WebPage(p)
    web.wait_for("JSON.parse(document.querySelector('#slidesam-volume').textContent).dims.length === 3", 300_000)
    web.view_box("Red")  # the axial view's image is on the page
    TIMINGS.setdefault("page_load_s", round(time.perf_counter() - started, 1))
    web.engine_url = engine_url
    web.folder = folder
    return context, web


@pytest.fixture(scope="module")
def page(web_app, browser, tmp_path_factory):
    """A browser page on the app, once its volume and axial view are shown (one per test file: a user's session).

    The app's state is the server's, shared by every page: a test file starts from what earlier ones left."""
    context, web = open_page(web_app, browser, tmp_path_factory.mktemp("web_page"))
    yield web
    (web.folder / "timings.json").write_text(json.dumps(TIMINGS, indent=1))
    print("web timings:", TIMINGS)
    context.close()
