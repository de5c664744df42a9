"""Restart from this slice while its preview shows, in a real headless Chromium against the real engine process.

The left kidney of example_ct is propagated over five slices; then Restart from its prompt slice over seventeen
("Only slices" widened).  While the restart runs the segment already holds slices the first run never reached (read
through the page's .seg.nrrd download while it goes on) and no other run can start (Propagate, Restart, Refine
disabled); at its end the corrected slice is kept bit-identical, the slices beyond the range are untouched, and one
Undo gives back the five-slice result exactly (the preview's writes are no undo steps of their own).
"""
import json
import time

import numpy as np

from webpage import KIDNEY_BOX, SLICE

FIRST = (SLICE - 2, SLICE + 2)  # the first run: five slices of the left kidney (k 72..104)
WIDER = (SLICE - 8, SLICE + 8)  # the restart's range: twelve slices the first run did not reach
RUN_BUTTONS = ("#slidesam-propagate", "#slidesam-restart", "#slidesam-refine")


def _slices(mask: np.ndarray) -> list:
    return sorted(int(k) for k in np.nonzero(mask.any(axis=(1, 2)))[0])


def test_restart_shows_its_slices_while_running_and_one_undo_takes_it_back(page):
    page.go_to_slice(SLICE)
    page.clear_prompts()
    segment = page.add_segment()
    page.place_box(*KIDNEY_BOX)
    page.set_range(*FIRST)
    first = page.run("slidesam-propagate")
    assert first["segment"] == segment and first["slices"] == list(FIRST), first
    before = page.segments(page.folder)
    assert _slices(before[segment]) == list(range(FIRST[0], FIRST[1] + 1))

    page.set_range(*WIDER)
    started = page.start("slidesam-restart")
    page.wait_for(f"!document.querySelector('#slidesam-cancel').disabled || document.querySelector('#slidesam-last').textContent !== {json.dumps(started)}",
                  120_000)  # running (or already done: then the assertion below says so)
    deadline, new, disabled = time.time() + 300, [], []
    while time.time() < deadline:  # the server's segment, read through a download while the restart still runs
        running = page.page.is_enabled("#slidesam-cancel")
        disabled = [page.page.is_disabled(b) for b in RUN_BUTTONS]
        new = [k for k in _slices(page.segments(page.folder)[segment]) if not FIRST[0] <= k <= FIRST[1]]
        if new or not running:
            break
    assert running and new and all(disabled), (running, new, disabled, page.text("slidesam-message"), page.text("slidesam-error"),
                                                page.text("slidesam-last"))  # the restart's own slices, shown mid-run
    last = page.finish(started)
    assert last["kind"] == "restart" and last["restart_slice"] == SLICE and last["slice_range"] == list(WIDER), last
    assert set(new) <= set(last["shown_while_running"]), (new, last["shown_while_running"])

    after = page.segments(page.folder)
    restarted = after[segment]
    np.testing.assert_array_equal(restarted[SLICE], before[segment][SLICE])  # the corrected slice is kept
    beyond = [k for k in range(len(restarted)) if not WIDER[0] <= k <= WIDER[1]]
    assert not restarted[beyond].any()  # nothing beyond the range
    assert set(_slices(restarted)) > set(_slices(before[segment]))  # it went on past the first run's slices

    undone = page.undo(lambda segments: np.array_equal(segments[segment], before[segment]))
    for name, mask in before.items():
        np.testing.assert_array_equal(undone[name], mask, err_msg=f"segment '{name}' after one undo")
