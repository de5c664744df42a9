"""`slidesam web` in a real headless Chromium: ROI by mouse, propagate, second box, paint, restart, undo, save.

One page for the whole module (a user's session): the tests run in order and each starts from what the
previous one left.  Server-side voxels are checked through the page's own downloads (.seg.nrrd read by
slicerio, NIfTI by SimpleITK), against the reference label and the engine's own result on the same box.
"""
import os
import time

import numpy as np

from SlideSAMLib.evaluation.metrics import dice
from webpage import CT_LABELS, KIDNEY_BOX, KIDNEY_LEFT, SLICE, TIMINGS, read_ct, seg_nrrd_on_ct_grid

DECOY_BOX = ((60, 40, SLICE), (80, 60, SLICE))  # placed first, then replaced: the run must use KIDNEY_BOX
PAINT_AT = (36, 60, SLICE)  # outside the kidney on the prompt slice


def test_second_box_by_mouse_propagates_into_a_segment(page):
    from SlideSAMLib.client import SlideSAMClient

    page.go_to_slice(SLICE)
    page.place_box(*DECOY_BOX)
    page.place_box(*KIDNEY_BOX)  # a new box replaces the first
    started = time.perf_counter()
    last = page.run("slidesam-propagate")
    TIMINGS["propagate_to_whole_organ_s"] = round(time.perf_counter() - started, 1)
    TIMINGS["propagate_to_first_progress_s"] = last["seconds_first_progress"]
    TIMINGS["propagate_to_first_mask_s"] = last["seconds_first_mask"]  # the first slices written into the segment, mid-run
    TIMINGS["load_average_1min"] = round(os.getloadavg()[0], 1)
    page.page.screenshot(path=str(page.folder / "propagated.png"))
    (lo, hi) = np.array(last["box_ijk"])[:, :2]
    # the mouse put the kidney box where it was aimed (within a voxel), not the decoy's place
    assert np.allclose(lo, KIDNEY_BOX[0][:2], atol=1.0) and np.allclose(hi, KIDNEY_BOX[1][:2], atol=1.0), last["box_ijk"]
    assert last["axis"] == 2 and last["box_ijk"][0][2] == SLICE

    path = page.download("slidesam-save-seg", page.folder)
    web_mask = seg_nrrd_on_ct_grid(path, last["segment"])
    import SimpleITK as sitk

    reference = sitk.GetArrayFromImage(sitk.ReadImage(str(CT_LABELS))) == KIDNEY_LEFT
    ct = read_ct()
    client = SlideSAMClient(page.engine_url)
    session = client.upload(sitk.GetArrayFromImage(ct), ct.GetSpacing(), ct.GetOrigin(), ct.GetDirection())
    engine_mask = client.segment(session, box=[tuple(c) for c in last["box_ijk"]], axis=2, direction="both").volume_mask()
    client.close(session)
    web_dice, engine_dice = dice(web_mask, reference), dice(engine_mask, reference)
    TIMINGS["dice_web"], TIMINGS["dice_engine_same_box"] = round(web_dice, 4), round(engine_dice, 4)
    assert web_dice >= engine_dice - 0.01, (web_dice, engine_dice)
    assert web_dice > 0.7, web_dice  # the kidney, not the decoy's region
    page.web_mask = web_mask
    page.segment = last["segment"]


def test_nifti_download_holds_the_same_voxels(page):
    import SimpleITK as sitk

    path = page.download("slidesam-save-nifti", page.folder)
    labels = sitk.ReadImage(str(path))
    ct = read_ct()
    assert labels.GetSize() == ct.GetSize()
    assert np.allclose(labels.GetOrigin(), ct.GetOrigin(), atol=1e-3) and np.allclose(labels.GetDirection(), ct.GetDirection(), atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(labels) > 0, page.web_mask > 0)


def _segment_now(page) -> np.ndarray:
    return seg_nrrd_on_ct_grid(page.download("slidesam-save-seg", page.folder), page.segment)


def test_paint_then_restart_then_one_undo(page):
    before = page.web_mask
    assert not before[PAINT_AT[2], PAINT_AT[1], PAINT_AT[0]]
    brushes = page.page.locator("nav button:has(i.mdi-brush)")
    brushes.last.click()  # the segment editor's Paint effect
    page.wait_for("document.querySelector('nav button.v-btn--active i.mdi-brush') !== null", 60_000)
    x, y = page.page_xy(PAINT_AT)
    page.page.mouse.move(x, y)
    page.page.mouse.down()
    for dx in range(0, 12, 2):
        page.page.mouse.move(x + dx, y)
        time.sleep(0.05)
    page.page.mouse.up()
    page.wait_for("document.querySelector('#slidesam-undo').disabled === false", 60_000)
    deadline = time.time() + 120
    painted = _segment_now(page)
    while not painted[PAINT_AT[2], PAINT_AT[1], PAINT_AT[0]] and time.time() < deadline:
        time.sleep(2)
        painted = _segment_now(page)
    assert painted[PAINT_AT[2], PAINT_AT[1], PAINT_AT[0]], "the paint stroke did not reach the segment"
    changed = np.nonzero(painted != before)
    assert np.all(painted[changed] == 1)  # paint only adds
    # only around the stroke (trame-slicer's brush is a sphere: a few slices either side), the rest of the organ kept
    assert np.abs(changed[0] - SLICE).max() <= 5 and np.abs(changed[2] - PAINT_AT[0]).max() <= 15, sorted(set(changed[0]))

    page.page.locator("nav button:has(i.mdi-cursor-default)").last.click()  # back to no tool, as a user would
    last = page.run("slidesam-restart")
    assert last["kind"] == "restart" and last["restart_slice"] == SLICE and last["axis"] == 2
    restarted = _segment_now(page)
    np.testing.assert_array_equal(restarted[SLICE], painted[SLICE])  # the corrected slice is kept
    assert not np.array_equal(restarted, painted)  # and the slices beyond it were propagated again from it
    page.page.screenshot(path=str(page.folder / "restarted.png"))

    page.page.click("#slidesam-undo")  # one undo: the restart run, not the stroke before it
    deadline = time.time() + 120
    undone = _segment_now(page)
    while not np.array_equal(undone, painted) and time.time() < deadline:
        time.sleep(2)
        undone = _segment_now(page)
    np.testing.assert_array_equal(undone, painted)

