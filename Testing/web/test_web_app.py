"""`slidesam web` in a real headless Chromium: ROI by mouse, propagate, second box, paint, restart, undo, save.

One page for the whole module (a user's session): the tests run in order and each starts from what the
previous one left.  Server-side voxels are checked through the page's own downloads (.seg.nrrd read by
slicerio, NIfTI by SimpleITK), against the reference label and the engine's own result on the same box.
"""
import json
import time
from pathlib import Path

import numpy as np
import pytest

from SlideSAMLib.evaluation.metrics import dice
from webpage import CT, CT_LABELS, ROOT, WebPage

KIDNEY_LEFT = 3  # TotalSegmentator label of the left kidney in example_seg_fast_force_split
SLICE = 93  # the prompt slice (k) and the kidney's voxel box on it: i 27..44, j 28..45
KIDNEY_BOX = ((27, 28, SLICE), (44, 45, SLICE))
DECOY_BOX = ((60, 40, SLICE), (80, 60, SLICE))  # placed first, then replaced: the run must use KIDNEY_BOX
PAINT_AT = (36, 60, SLICE)  # outside the kidney on the prompt slice
TIMINGS = {}


def read_ct():
    import SimpleITK as sitk

    return sitk.ReadImage(str(CT))


def seg_nrrd_on_ct_grid(path: Path, segment_name: str) -> np.ndarray:
    """A segment of a .seg.nrrd (read by slicerio), resampled onto example_ct's grid: (k, j, i) uint8."""
    import SimpleITK as sitk
    import slicerio

    segmentation = slicerio.read_segmentation(str(path))
    segment = slicerio.segment_from_name(segmentation, segment_name)
    mask = slicerio.segment_mask(segmentation, segment).astype(np.uint8)  # (i, j, k) in slicerio's order
    ijk_to_lps = np.array(segmentation["ijkToLPS"], dtype=float)
    spacing = np.linalg.norm(ijk_to_lps[:3, :3], axis=0)
    image = sitk.GetImageFromArray(np.ascontiguousarray(mask.transpose(2, 1, 0)))
    image.SetSpacing(spacing.tolist())
    image.SetOrigin(ijk_to_lps[:3, 3].tolist())
    image.SetDirection((ijk_to_lps[:3, :3] / spacing).ravel().tolist())
    on_ct = sitk.Resample(image, read_ct(), sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    return sitk.GetArrayFromImage(on_ct)


@pytest.fixture(scope="module")
def page(web_app, browser, tmp_path_factory):
    url, engine_url = web_app
    context = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True)
    p = context.new_page()
    started = time.perf_counter()
    p.goto(url)
    web = WebPage(p)
    web.wait_for("document.querySelector('#slidesam-message').textContent.includes('loaded')", 300_000)
    web.view_box("Red")  # the axial view's image is on the page
    TIMINGS["page_load_s"] = round(time.perf_counter() - started, 1)
    web.engine_url = engine_url
    web.folder = tmp_path_factory.mktemp("web_page")
    yield web
    (web.folder / "timings.json").write_text(json.dumps(TIMINGS, indent=1))
    print("web timings:", TIMINGS)
    context.close()


def test_second_box_by_mouse_propagates_into_a_segment(page):
    from SlideSAMLib.client import SlideSAMClient

    page.go_to_slice(SLICE)
    page.place_box(*DECOY_BOX)
    page.place_box(*KIDNEY_BOX)  # a new box replaces the first
    started = time.perf_counter()
    last = page.run("slidesam-propagate")
    TIMINGS["propagate_to_whole_organ_s"] = round(time.perf_counter() - started, 1)
    TIMINGS["propagate_to_first_progress_s"] = last["seconds_first_progress"]
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

