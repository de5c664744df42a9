"""One click on a small structure with the embedded box-only model (SlideSAMLib/clicks.py, step 4), on real scans.

The click is where `slidesam eval` puts it: the deepest interior pixel of the structure's largest slice.
"""
import numpy as np
import pytest

from SlideSAMLib.training.prompts import deepest_point
from testdata import DATA, ORGANS, dice


def _case(image, label):
    from SlideSAMLib import array_of, read_image

    img = read_image(DATA / image)
    return img, array_of(read_image(DATA / label)) > 0


@pytest.fixture(scope="module")
def nodule(model):
    from SlideSAMLib import Session, array_of

    img, label = _case("ct_chest_nodule/image.nrrd", "ct_chest_nodule/label.nrrd")
    return Session(model, array_of(img), spacing=img.GetSpacing()), label


def _click(session, label):
    k = int(label.sum(axis=(1, 2)).argmax())
    x, y = deepest_point(label[k])
    return session.segment(points=[((x, y, k), True)]), (x, y, k)


def test_one_click_on_a_lung_nodule_segments_the_nodule(nodule):
    """ct_chest_nodule (training), an 837-voxel nodule. Before step 4 this test failed: the click
    returned 120,975 voxels (main's clicks.py, 2026-12-02; the issue measured 58,147, Dice 0.017): the 7 mm intensity
    disc around the click is mostly lung, so the fit preferred a huge region.
    Measured now: 387 voxels, Dice 0.632 (one tight box: 0.574)."""
    session, label = nodule
    result, (x, y, k) = _click(session, label)
    mask = result.volume_mask().astype(bool)
    assert result.prompt == "click-search" and result.slice_masks[k][y, x]
    assert label.sum() / 3 <= mask.sum() <= 3 * label.sum()  # within 3x of the reference's size
    assert dice(mask, label) >= 0.5, dice(mask, label)


def test_one_click_on_the_liver_keeps_its_floor(ct_session, ct_labels):
    """A large organ of example_ct (training): step 4 must not shrink it to a vessel or a piece. Measured 0.859 before
    step 4 (benchmarks/RESULTS.md §1c)."""
    label = ct_labels == ORGANS["liver"]
    result, (x, y, k) = _click(ct_session, label)
    mask = result.volume_mask().astype(bool)
    assert result.slice_masks[k][y, x]
    assert dice(mask, label) >= 0.82, dice(mask, label)
    assert mask.sum() >= 0.8 * label.sum()


def test_one_click_on_a_rib_keeps_the_rib_not_the_region(ct_session, ct_labels):
    """example_ct's rib_right_7 (label 110, training), 17 pixels of 3 mm on its largest slice. Main's search:
    step 3 preferred a 3,217-pixel region; its step 4 took the first smaller candidate within its limits, one of 119
    pixels that its box refined to 118 (Dice 0.25 on the slice; one tight box 0.625). The 23-25-pixel candidates,
    which hold the rib (Dice 0.75-0.76, masks stable as the box grows, outline 3 x sharper than the region's), had
    a third or more of their outline on their box's border (limit 20 %) or an IoU estimate of 0.67-0.69 (limit 0.7).
    With 50 % and 0.6 (chosen on all training structures, SlideSAMLib/clicks.py) the 25-pixel one wins: measured
    0.750 (benchmarks/RESULTS_clicks.md §7). Issue 12's target, on the prompt slice: click >= 0.7 x one tight box."""
    from SlideSAMLib.clicks import ClickSearch
    from SlideSAMLib.training.prompts import tight_box

    label = ct_labels == 110
    k = int(label.sum(axis=(1, 2)).argmax())
    x, y = deepest_point(label[k])
    pred = ct_session.predictor(2)
    box = (pred.predict(k, box=tight_box(label[k])).logits[1] > 0).numpy()
    search = ClickSearch(pred, pixel_mm=float(np.mean(ct_session.spacing[:2])))
    click = (search.predict(k, [(x, y, True)]).logits[1] > 0).numpy()
    assert click[y, x] and click.sum() <= 3 * label[k].sum(), int(click.sum())
    assert dice(click, label[k]) >= 0.7 * dice(box, label[k]), (dice(click, label[k]), dice(box, label[k]))


@pytest.fixture(scope="module")
def lits(model):
    from SlideSAMLib import Session, array_of, read_image

    img = read_image(DATA / "ct_liver_lits/image.nii.gz")
    labels = np.round(array_of(read_image(DATA / "ct_liver_lits/label.nii.gz"))).astype(int)
    return Session(model, array_of(img), spacing=img.GetSpacing()), labels == 1  # 1 liver, 2 tumour


def test_one_click_on_a_liver_slice_keeps_the_liver_not_a_patch_of_it(lits):
    """ct_liver_lits' liver (label 1, training), slice 48 (70 % along the slices holding >= 30 % of its largest
    area; 5,988 pixels of 1 mm), one click on that slice's deepest pixel. Steps 3-4 keep the liver: measured 0.780
    on the slice (one tight box 0.845). Session 8's step 5 (9e34781, taken out in d58e595) replaced it by a
    40-pixel candidate inside the liver (Dice 0.013; through the propagation 171 voxels, 3D Dice 0.001 against the
    click's 0.497 without it): its logistic score grows as a candidate shrinks against the choice, and a decoder IoU
    of 0.44 did not stop it. The same failure as CI's one-click liver on ct_liver_3slice (0.836 -> 0.034), here on
    training data (benchmarks/RESULTS_clicks.md §9). The click must stay at least half the liver's area on the
    slice and reach >= 0.7 x one tight box (issue 12)."""
    from SlideSAMLib.clicks import ClickSearch
    from SlideSAMLib.training.prompts import tight_box

    session, label = lits
    k = 48
    x, y = deepest_point(label[k])
    pred = session.predictor(2)
    box = (pred.predict(k, box=tight_box(label[k])).logits[1] > 0).numpy()
    click = (ClickSearch(pred, pixel_mm=float(np.mean(session.spacing[:2]))).predict(k, [(x, y, True)]).logits[1] > 0).numpy()
    assert click[y, x] and click.sum() >= 0.5 * label[k].sum(), int(click.sum())
    assert dice(click, label[k]) >= 0.7 * dice(box, label[k]), (dice(click, label[k]), dice(box, label[k]))
