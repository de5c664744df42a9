"""Refine with points in `slidesam web`, driven in a real headless Chromium against the real engine process.

The left kidney of example_ct is propagated over nine slices (the right kidney, in another segment, beside it); then an
include and an exclude click on a slice inside the result, placed with the mouse, and **Refine with points** with
"Only slices" narrowed to five slices around it: the exclude voxel goes, the include voxel stays, every slice outside
the engine's span (`Result.span`, within those five) is bit-identical, the span holds the engine's own refine of the
same inputs, the other segment is untouched, and one Undo gives the segment back exactly.  Bad refinements (no new
click, clicks on two slices, a click beside the image, an empty segment) are refused in one line and change nothing.
All voxels are read on the server's side through the page's .seg.nrrd download (slicerio).
"""
import json

import numpy as np
import pytest

from webpage import CT_LABELS, KIDNEY_BOX, KIDNEY_LEFT, SLICE

RANGE = (SLICE - 4, SLICE + 4)  # "Only slices" of the propagations: nine slices of the left kidney (k 72..104), CI time
REFINED = SLICE + 2  # the slice corrected: inside the result, not the prompt slice
REFINE_RANGE = (REFINED - 2, REFINED + 2)  # "Only slices" of the refine: the result's slices below it must stay as they were
PROMPT_INCLUDE = (30, 40, SLICE)  # on the left kidney's box mask (its left rim on slice 93)
RIGHT_KIDNEY_BOX = ((70, 29, SLICE), (88, 45, SLICE))  # label 2 on slice 93: i 70..88, j 29..45
STATE = {}


def _reference(k: int) -> np.ndarray:
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(sitk.ReadImage(str(CT_LABELS)))[k] == KIDNEY_LEFT


def _clicks(mask: np.ndarray, truth: np.ndarray):
    """((ex, ey), (ix, iy)): exclude on the mask's pixel farthest outside the reference, include on its pixel deepest
    inside it (both on the mask, so the refine must change the slice to honour them)."""
    outside, inside = np.argwhere(mask & ~truth), np.argwhere(mask & truth)
    assert len(outside) and len(inside), "the propagated slice has no part outside (or inside) the reference"
    far = np.sqrt(((outside[:, None] - np.argwhere(truth)[None]) ** 2).sum(-1)).min(1)
    deep = np.sqrt(((inside[:, None] - np.argwhere(~truth)[None]) ** 2).sum(-1)).min(1)
    (ey, ex), (iy, ix) = outside[far.argmax()], inside[deep.argmax()]
    return (int(ex), int(ey)), (int(ix), int(iy))


def _engine_refine(page, segment: np.ndarray, points_ijk):
    """`SlideSAMClient.refine` on a fresh upload of example_ct, with the inputs SlideSAMLogic.prepareRefine sends."""
    from SlideSAMLib.client import SlideSAMClient
    from webpage import read_ct
    import SimpleITK as sitk

    ct, client = read_ct(), SlideSAMClient(page.engine_url)
    session = client.upload(sitk.GetArrayFromImage(ct), ct.GetSpacing(), ct.GetOrigin(), ct.GetDirection())
    try:
        current = {k: segment[k] > 0 for k in range(REFINE_RANGE[0], REFINE_RANGE[1] + 1) if k != REFINED and segment[k].any()}
        largest = int(np.count_nonzero(segment.reshape(len(segment), -1), axis=1).max())
        return client.refine(session, REFINED, [(tuple(p), include) for p, include in points_ijk], segment[REFINED] > 0, axis=2,
                             slice_range=REFINE_RANGE, largest_area=largest, current=current)
    finally:
        client.close(session)


def _assert_same(before: dict, after: dict, but=None) -> None:
    assert set(after) == set(before), (sorted(before), sorted(after))
    for name, mask in before.items():
        if name != but:
            np.testing.assert_array_equal(after[name], mask, err_msg=f"segment '{name}' changed")


def _propagate(page, box, include=()) -> str:
    page.clear_prompts()
    segment = page.add_segment()
    page.place_box(*box)
    if include:
        page.place_points("slidesam-include", include)
    last = page.run("slidesam-propagate")
    assert last["segment"] == segment and last["slice_range"] == list(RANGE), last
    return segment


def test_refine_corrects_the_clicked_slice_and_replaces_only_the_span(page):
    page.go_to_slice(SLICE)
    page.set_range(*RANGE)
    other = _propagate(page, RIGHT_KIDNEY_BOX)
    kidney = _propagate(page, KIDNEY_BOX, [PROMPT_INCLUDE])  # its click was the propagation's: not the refine's
    before = page.segments(page.folder)
    assert before[other].any() and before[kidney][REFINED].any()
    (ex, ey), (ix, iy) = _clicks(before[kidney][REFINED] > 0, _reference(REFINED))

    page.go_to_slice(REFINED)
    page.set_range(*REFINE_RANGE)
    page.place_points("slidesam-include", [(ix, iy, REFINED)])
    page.place_points("slidesam-exclude", [(ex, ey, REFINED)])
    last = page.run("slidesam-refine")
    assert last["kind"] == "refine" and last["prompt"] == "refine" and last["segment"] == kidney, last
    assert last["refine_slice"] == REFINED and last["axis"] == 2, last
    assert [p[1] for p in last["points_ijk"]] == [True, False], last["points_ijk"]  # only the two new clicks
    first, end = last["span"]
    assert last["slice_range"] == list(REFINE_RANGE) and REFINE_RANGE[0] <= first <= REFINED <= end <= REFINE_RANGE[1], last
    # shown in the segment while it ran (the engine streams each refined slice): the corrected one, none outside the span.
    # The page writes a run's first slice (the corrected one: the engine streams it first) as soon as it arrives, then
    # at most every 0.3 s (preview.FLUSH_S). Measured 2026-12-02 at load 4.4: first mask shown 1.12 s after the click,
    # the refine done at 2.84 s. When the page waited 0.3 s before its first write, a quiet machine's refine
    # (2026-12-03, fresh-clone CI of df385ca) ended first and nothing was shown: this assertion failed.
    assert REFINED in last["shown_while_running"] and set(last["shown_while_running"]) <= set(range(first, end + 1)), last
    print(f"refine of slice {REFINED}: span {first}..{end} of {REFINE_RANGE}, stopped {last['stopped']}, {last['changed']} slices changed, "
          f"shown while running {last['shown_while_running']}, first mask shown {last['seconds_first_mask']} s, done {last['seconds_total']} s")

    after = page.segments(page.folder)
    refined = after[kidney]
    assert not refined[REFINED, ey, ex] and refined[REFINED, iy, ix]  # the exclude voxel went, the include voxel stayed
    outside_span = [k for k in range(len(refined)) if not first <= k <= end]
    assert before[kidney][RANGE[0]:first].any()  # the result has slices outside the span: they must be kept
    np.testing.assert_array_equal(refined[outside_span], before[kidney][outside_span])  # bit-identical beyond the span
    assert not np.array_equal(refined[REFINED], before[kidney][REFINED])
    _assert_same(before, after, but=kidney)  # the right kidney's segment untouched

    # what was written is the engine's own refine of the same slice mask, clicks (as sent) and current masks
    engine = _engine_refine(page, before[kidney], last["points_ijk"])
    assert list(engine.span) == last["span"] and engine.stopped == last["stopped"], (engine.span, engine.stopped, last)
    expected = before[kidney].copy()
    for k in range(first, end + 1):  # the span is replaced (a slice missing from the result is cleared), the rest kept
        expected[k] = engine.slice_masks[k] if k in engine.slice_masks else 0
    np.testing.assert_array_equal(refined, expected)
    STATE.update(before=before, kidney=kidney)


def test_one_undo_gives_the_segment_back(page):
    if not STATE:
        pytest.skip("needs the refine of the previous test")
    kidney, before = STATE["kidney"], STATE["before"]
    undone = page.undo(lambda segments: np.array_equal(segments[kidney], before[kidney]))
    _assert_same(before, undone)  # one step: the refine only, not the propagation before it


def _refused(page, says: str) -> str:
    page.page.click("#slidesam-refine")
    page.wait_for(f"document.querySelector('#slidesam-error').textContent.includes({json.dumps(says)})", 60_000)
    error = page.text("slidesam-error")
    assert "\n" not in error and page.page.is_enabled("#slidesam-refine"), error
    return error


def test_bad_refinements_are_refused_in_one_line_and_change_nothing(page):
    if not STATE:
        pytest.skip("needs the refine of the first test")
    before = page.segments(page.folder)

    # the refine's clicks were its own: pressed again with no new click
    _refused(page, "no refinement click placed since the last run")
    # clicks on two slices
    page.place_points("slidesam-exclude", [(40, 36, REFINED)])
    page.go_to_slice(REFINED + 1)
    page.place_points("slidesam-exclude", [(40, 36, REFINED + 1)])
    assert f"slices {REFINED}, {REFINED + 1} along K" in _refused(page, "place them all on the one slice")
    _assert_same(before, page.segments(page.folder))
    # a click beside the image (the engine refuses it before any model work)
    page.clear_prompts()
    view = page.view_box("Red")
    beside = [(i, j, REFINED + 1) for i, j in ((-3, 50), (124, 50), (60, -3), (60, 103))]  # example_ct: 122 x 101 voxels in-plane
    inside_view = [ijk for ijk in beside if view["x"] < page.page_xy(ijk)[0] < view["x"] + view["width"]
                   and view["y"] < page.page_xy(ijk)[1] < view["y"] + view["height"]]
    assert inside_view, f"the view shows no room beside the image: {[page.page_xy(ijk) for ijk in beside]} in {view}"
    page.place_points("slidesam-exclude", inside_view[:1])
    _refused(page, "is outside the volume")
    _assert_same(before, page.segments(page.folder))
    # an empty segment (the editor's +)
    page.add_segment()
    _refused(page, "is empty: propagate first")
    after = page.segments(page.folder)
    _assert_same(before, {name: mask for name, mask in after.items() if name in before})
    assert len(after) == len(before) + 1 and not any(mask.any() for name, mask in after.items() if name not in before)
