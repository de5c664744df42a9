"""Type a slice range and click a run button at once: the run uses the range typed, in a real headless Chromium.

The page (trame's client) pushes a typed value to the server only once its earlier pushes are answered, while a click
is sent at once.  When the server answers late (a loaded machine: test_web_restart.py pressed Restart at load 9 and ran
with the old range, session 8), a run that read the server's state used the range from before the last keystrokes.
Here the page's incoming WebSocket messages are held while the range is typed and the button clicked (HOLD_ANSWERS, an
init script: the browser sees the server's answers late, as on that machine), so the race is there every time, not
only under load; then they are let through.  Propagate, Restart and Refine each run on the range just typed, with no
wait between the last key and the click (SlideSAMLib/web/panel.py RUN_FIELDS: the fields go with the click).
"""
import pytest

from conftest import open_page
from webpage import KIDNEY_BOX, SLICE

SET = (SLICE - 1, SLICE + 1)  # the range the server holds before the first typed one (set and waited for)
PROPAGATE = (SLICE - 2, SLICE + 2)  # then typed and Propagate clicked at once: five slices of the left kidney (k 72..104)
RESTART = (SLICE - 3, SLICE + 3)  # typed and Restart clicked at once (from the prompt slice)
REFINE = (SLICE - 1, SLICE + 1)  # typed and Refine clicked at once: both ends differ from RESTART's
REFINE_INCLUDE = (30, 40, SLICE)  # on the left kidney (its left rim on slice 93), on the result

# The page's WebSocket hands incoming messages to the page's listeners only while window.slidesamHold is false; held
# ones are handed over, in order, by window.slidesamRelease() (it returns how many were held).
HOLD_ANSWERS = """
(() => {
  const Native = window.WebSocket, held = [];
  window.slidesamHold = false;
  window.slidesamRelease = () => {
    window.slidesamHold = false;
    const count = held.length;
    while (held.length) { const [listener, socket, event] = held.shift(); listener.call(socket, event); }
    return count;
  };
  const wrap = (listener) => function (event) {
    if (window.slidesamHold) { held.push([listener, this, event]); } else { listener.call(this, event); }
  };
  class HeldWebSocket extends Native {
    addEventListener(type, listener, options) {
      return super.addEventListener(type, type === 'message' && typeof listener === 'function' ? wrap(listener) : listener, options);
    }
    set onmessage(listener) { super.onmessage = typeof listener === 'function' ? wrap(listener) : listener; }
    get onmessage() { return super.onmessage; }
  }
  window.WebSocket = HeldWebSocket;
})();
"""


@pytest.fixture(scope="module")
def page(web_app, browser, tmp_path_factory):
    """This file's own page: the app with HOLD_ANSWERS in it."""
    context, web = open_page(web_app, browser, tmp_path_factory.mktemp("web_typed_range"), init_script=HOLD_ANSWERS)
    yield web
    context.close()


def _type_and_click(page, first: int, last: int, button_id: str) -> dict:
    """Hold the server's answers, type the range, click the button with no wait, let the answers through; the run's summary.

    Before the click the typed 'to' must still be unsent (trame's client keeps it among its dirty keys while an earlier
    push is unanswered): else the race was not set up and the test could not fail."""
    before = page.page.text_content("#slidesam-last")
    page.page.evaluate("window.slidesamHold = true")
    try:
        page.set_range(first, last, wait=False)
        unsent = page.page.evaluate("[...window.trame.state.dirtyKeys]")
        page.page.click(f"#{button_id}")
    finally:
        page.page.evaluate("window.slidesamRelease()")
    assert "slidesam_range_to" in unsent, f"the typed range had reached the server before the click (unsent: {unsent})"
    return page.finish(before)


def test_propagate_right_after_typing_the_range_runs_on_it(page):
    page.go_to_slice(SLICE)
    page.clear_prompts()
    segment = page.add_segment()
    page.place_box(*KIDNEY_BOX)
    page.set_range(*SET)  # the server holds SET (waited for)
    last = _type_and_click(page, *PROPAGATE, "slidesam-propagate")
    assert last["kind"] == "propagate" and last["segment"] == segment, last
    assert last["slice_range"] == list(PROPAGATE) and last["slices"] == list(PROPAGATE), last  # the kidney spans both ends


def test_restart_right_after_typing_the_range_runs_on_it(page):
    last = _type_and_click(page, *RESTART, "slidesam-restart")
    assert last["kind"] == "restart" and last["restart_slice"] == SLICE, last
    assert last["slice_range"] == list(RESTART) and last["slices"] == list(RESTART), last


def test_refine_right_after_typing_the_range_runs_on_it(page):
    page.place_points("slidesam-include", [REFINE_INCLUDE])
    last = _type_and_click(page, *REFINE, "slidesam-refine")
    assert last["kind"] == "refine" and last["refine_slice"] == SLICE, last
    first, end = last["span"]
    assert last["slice_range"] == list(REFINE) and REFINE[0] <= first <= SLICE <= end <= REFINE[1], last
