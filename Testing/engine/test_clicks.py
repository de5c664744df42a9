"""Clicks with the embedded box-only model: the click's box search (SlideSAMLib/clicks.py) on real CT."""
import numpy as np
import pytest

from SlideSAMLib import InputError
from SlideSAMLib.clicks import BOX_FRACTIONS, ClickSearch
from SlideSAMLib.training.prompts import deepest_point
from testdata import ORGANS, dice


def _click_on_largest_slice(label):
    k = int(label.sum(axis=(1, 2)).argmax())
    x, y = deepest_point(label[k])
    return x, y, k


def test_one_click_segments_the_spleen(ct_session, ct_labels):
    """Fed to the decoder as a point, this click gives Dice 0.00 (benchmarks/RESULTS.md §1b); the box search
    measured 0.931 (one box: 0.922)."""
    label = ct_labels == ORGANS["spleen"]
    x, y, k = _click_on_largest_slice(label)
    result = ct_session.segment(points=[((x, y, k), True)])
    assert dice(result.volume_mask(), label) >= 0.85
    true = np.nonzero(label.sum(axis=(1, 2)))[0]
    assert abs(result.slices[0] - true.min()) <= 2 and abs(result.slices[-1] - true.max()) <= 2
    assert result.slice_masks[k][y, x] and result.prompt == "click-search"


def test_exclude_click_is_outside_the_mask(ct_session, ct_labels):
    """An exclude click on the far side of what one include click gave: no candidate box may keep it."""
    from scipy import ndimage

    label = ct_labels == ORGANS["liver"]
    x, y, k = _click_on_largest_slice(label)
    free = ct_session.segment(points=[((x, y, k), True)], slice_range=(k, k)).slice_masks[k]
    ys, xs = np.nonzero(ndimage.binary_erosion(free, iterations=3))
    far = int(np.argmax((xs - x) ** 2 + (ys - y) ** 2))
    ex, ey = int(xs[far]), int(ys[far])
    result = ct_session.segment(points=[((x, y, k), True), ((ex, ey, k), False)], slice_range=(k, k))
    mask = result.slice_masks[k]
    assert mask[y, x] and not mask[ey, ex]


def test_click_search_decodes_without_new_encoder_passes(ct_session, ct_labels):
    label = ct_labels == ORGANS["kidney_right"]
    x, y, k = _click_on_largest_slice(label)
    pred = ct_session.predictor(2)
    pred.encode([k])
    passes = pred.encoder_passes
    search = ClickSearch(pred)
    window = search.predict(k, [(x, y, True)])
    assert pred.encoder_passes == passes  # one embedding, many cheap decodes
    assert search.decodes == len(BOX_FRACTIONS) + 1  # the squares, then the chosen box
    assert dice((window.logits[1] > 0).numpy(), label[k]) >= 0.75


def test_only_exclude_clicks_are_refused(ct_session):
    with pytest.raises(InputError, match="only exclude clicks"):
        ct_session.segment(points=[((60, 50, 80), False)])


def _loose_box(label, k, grow=0.25):
    ys, xs = np.nonzero(label[k])
    w, h = xs.max() - xs.min(), ys.max() - ys.min()
    return ((xs.min() - grow * w, ys.min() - grow * h, k), (xs.max() + grow * w, ys.max() + grow * h, k))


def test_include_click_beside_a_box_keeps_the_box_result(ct_session, ct_labels):
    """Given to LiteMedSAM's decoder with this loose box, the click took the spleen's prompt slice from Dice 0.81
    to 0.00; with a box-only model the clicks edit the box's mask instead."""
    label = ct_labels == ORGANS["spleen"]
    x, y, k = _click_on_largest_slice(label)
    box = _loose_box(label, k)
    alone = ct_session.segment(box=box, slice_range=(k, k)).slice_masks[k]
    run = ct_session.segment(box=box, points=[((x, y, k), True)], slice_range=(k, k))
    assert run.prompt == "box+click-edits"
    with_click = run.slice_masks[k]
    assert with_click[y, x] and dice(with_click, label[k]) >= max(0.75, dice(alone, label[k]) - 0.01)


def test_exclude_click_beside_a_box_cuts_that_side(ct_session, ct_labels):
    label = ct_labels == ORGANS["liver"]
    x, y, k = _click_on_largest_slice(label)
    box = _loose_box(label, k, grow=0.0)
    alone = ct_session.segment(box=box, slice_range=(k, k)).slice_masks[k]
    ys, xs = np.nonzero(alone)
    far = int(np.argmax((xs - x) ** 2 + (ys - y) ** 2))
    ex, ey = int(xs[far]), int(ys[far])
    cut = ct_session.segment(box=box, points=[((x, y, k), True), ((ex, ey, k), False)], slice_range=(k, k)).slice_masks[k]
    assert cut[y, x] and not cut[ey, ex]
    assert not (cut & ~alone).any() and cut.sum() < alone.sum()  # only removes, and only part of it
