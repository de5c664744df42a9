"""`slidesam web --api-key`: refused beyond loopback without a key; with a key the page needs ?secret=KEY.

Nothing here listens beyond 127.0.0.1: the refusal happens before anything binds (the command exits first),
and the key is checked on a loopback app started with one.
"""
import subprocess
import sys

import pytest

from webpage import ROOT

KEY = "web13-test-key-0123456789"


@pytest.mark.parametrize("args, says", [
    (["--host", "0.0.0.0"], "--api-key"),
    (["--host", "192.0.2.10", "--api-key", "short"], "shorter than 8"),
])
def test_beyond_loopback_needs_a_long_key_and_nothing_binds(args, says):
    done = subprocess.run([sys.executable, "-m", "SlideSAMLib.cli", "web", *args, "--port", "0"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode != 0 and len(lines) == 1 and says in lines[0], (done.returncode, done.stderr)
    assert "http://" not in done.stderr + done.stdout  # it never announced (or started) a page


def _frames(page) -> list:
    frames = []
    page.on("websocket", lambda ws: ws.on("framereceived", lambda payload: frames.append(str(payload))))
    return frames


def test_with_a_key_the_page_needs_it(another_web, browser):
    url = another_web(["--api-key", KEY])
    context = browser.new_context()
    try:
        for query in ("", "?secret=wrong-key-0123456789"):
            page = context.new_page()
            frames = _frames(page)
            page.goto(url + query)
            deadline_ms = 120_000
            step = 0
            while not any("Authentication failed" in f for f in frames):
                page.wait_for_timeout(250)  # frames arrive on the page's event loop
                step += 250
                assert step < deadline_ms, f"no authentication error for {query or 'no key'}: {frames[-3:]}"
            assert page.locator("#slidesam-panel").count() == 0  # the app was never sent
            page.close()
        page = context.new_page()
        page.goto(url + f"?secret={KEY}")
        page.wait_for_selector("#slidesam-panel", timeout=120_000)
        assert "load a volume" in page.text_content("#slidesam-message")
    finally:
        context.close()
