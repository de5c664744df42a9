"""The stop rule as a policy: for each stop reason, synthetic masks that must produce it, and a small change of
the same masks that must not. Masks go through `score_slice` (what `Propagator` measures on a window) and
`StopRule.reason`, so the test covers the measurement as well as the thresholds."""
from dataclasses import fields

import numpy as np
import pytest
import torch

from SlideSAMLib.predictor import WindowPrediction
from SlideSAMLib.propagation import IntensityModel, StopRule, score_slice

SHAPE = (64, 64)
ORGAN = 100.0  # the organ's intensity on the synthetic slice; the background is 0


def square(side: int, x0: int = 10, y0: int = 10) -> np.ndarray:
    m = np.zeros(SHAPE, bool)
    m[y0 : y0 + side, x0 : x0 + side] = True
    return m


def verdict(centre, prompt=None, raw=None, iou=0.9, previous_area=None, tail_slices=0, slice_mm=3.0, max_area=None, image=None,
            prompt_image=None):
    """The rule's reason for a window whose constrained centre mask is `centre` (defaults: a window that agrees
    with its prompt, the same size as the previous slice, in the organ's band, with a confident decoder); the
    organ's intensities are those of `prompt_image` (default: `image`) under the prompt mask square(30, 8, 8)."""
    prompt = centre if prompt is None else prompt
    raw = centre if raw is None else raw
    image = np.where(square(40, 5, 5), ORGAN, 0.0) if image is None else image
    intensity = IntensityModel(image if prompt_image is None else prompt_image, square(30, 8, 8))
    pred = WindowPrediction(center=5, logits=torch.zeros((3, *SHAPE)), iou=iou, stability=0.9)
    area = int(centre.sum())
    info = score_slice(5, pred, raw, centre, prompt, image, intensity, area if previous_area is None else previous_area, tail_slices * slice_mm)
    return StopRule().reason(info, area if max_area is None else max_area)


def test_a_plain_window_is_accepted():
    assert verdict(square(20)) is None


def test_vanished():
    # 0.5 % of the largest area: 100 px is below 0.5 % of 20 001 px, not below 0.5 % of 19 999 px
    assert verdict(square(10), max_area=20001) == "vanished"
    assert verdict(square(10), max_area=19999) is None
    # and never fewer than 4 pixels, whatever the largest area
    assert verdict(square(1), max_area=1) == "vanished"
    assert verdict(square(2), max_area=1) is None


def test_tail():
    # 15 mm of small masks: 6 slices of 3 mm end the chain, 5 (15.0 mm, not more than 15) do not
    assert verdict(square(10), tail_slices=6, slice_mm=3.0, max_area=5000) == "tail"
    assert verdict(square(10), tail_slices=5, slice_mm=3.0, max_area=5000) is None
    # the run is measured in mm, not slices: 6 slices of 2.5 mm are 15 mm
    assert verdict(square(10), tail_slices=6, slice_mm=2.5, max_area=5000) is None


def test_jumped():
    # Dice of two 20x20 squares shifted by dx columns is (20 - dx) / 20: 11 -> 0.45, 9 -> 0.55 (threshold 0.5)
    assert verdict(square(20, x0=10), prompt=square(20, x0=21)) == "jumped"
    assert verdict(square(20, x0=10), prompt=square(20, x0=19)) is None


def test_grew():
    # 400 px after 249 px is 1.61x the previous area, after 251 px 1.59x (threshold 1.6x)
    assert verdict(square(20), previous_area=249) == "grew"
    assert verdict(square(20), previous_area=251) is None


def test_low_iou():
    assert verdict(square(20), iou=0.29) == "low-iou"
    assert verdict(square(20), iou=0.31) is None


def test_intensity():
    # the share of the raw mask's voxels in the organ's band: 29 of 100 ends the chain, 31 of 100 does not (0.3)
    raw = square(10, 45, 45)  # outside the organ (the image is ORGAN on square(40, 5, 5), 0 elsewhere)
    for n_in, expected in ((29, "intensity"), (31, None)):
        image = np.where(square(40, 5, 5), ORGAN, 0.0)
        image[45:55, 45:55].flat[:n_in] = ORGAN
        assert verdict(square(20), raw=raw, image=image) == expected


def test_drifted():
    # The mask's median intensity against the prompt mask's, in the prompt mask's interquartile ranges. The prompt
    # mask square(30, 8, 8) holds 100..199, each 9 times (900 px): median 149.5, IQR 49.5 (25th 124.75, 75th 174.25,
    # numpy's linear interpolation by hand); a centre mask on a patch of one intensity v drifts |v - 149.5| / 49.5.
    image = np.zeros(SHAPE)
    image[8:38, 8:38] = 100 + np.arange(900).reshape(30, 30) % 100
    intensity = IntensityModel(image, square(30, 8, 8))
    assert (intensity.median, intensity.iqr) == pytest.approx((149.5, 49.5))
    limit = StopRule().max_drift_iqr
    for drift, expected in ((limit + 0.05, "drifted"), (limit - 0.05, None)):
        patched = image.copy()
        patched[10:30, 10:30] = 149.5 + drift * intensity.iqr
        raw = square(30, 8, 8)  # 500 of its 900 px in the organ's band: only the drift can end the chain
        assert verdict(square(20), raw=raw, image=patched, prompt_image=image) == expected
    # darker drifts as much as brighter
    patched = image.copy()
    patched[10:30, 10:30] = 149.5 - (limit + 0.05) * intensity.iqr
    assert verdict(square(20), raw=square(30, 8, 8), image=patched, prompt_image=image) == "drifted"


def test_drift_needs_a_prompt_mask_with_spread():
    # Under DRIFT_MIN_PROMPT_PIXELS (20) prompt pixels, or with a single intensity (a lung clipped to the CT window's
    # floor), the prompt mask has no median / IQR worth the name: the drift is 0 and the rule cannot fire.
    image = np.zeros(SHAPE)
    image[8:38, 8:38] = 100 + np.arange(900).reshape(30, 30) % 100
    far = np.full(SHAPE, 1000.0)
    assert IntensityModel(image, square(4, 8, 8)).drift(far, square(20)) == 0.0  # 16 px
    assert IntensityModel(image, square(5, 8, 8)).drift(far, square(20)) > 10  # 25 px
    assert IntensityModel(np.full(SHAPE, 100.0), square(30, 8, 8)).drift(far, square(20)) == 0.0


def test_every_threshold_says_where_it_came_from():
    rule = StopRule()
    evidence = rule.evidence()
    assert set(evidence) == {f.name for f in fields(StopRule)}
    assert all(len(text) > 20 for text in evidence.values())


def test_intensity_band_is_what_its_docstring_says():
    """The 5th–95th percentile, widened by 5 % of that span on each side (the docstring once said 2nd–98th, 10 %)."""
    values = np.arange(101, dtype=float).reshape(1, 101)  # percentiles are the values themselves
    band = IntensityModel(values, np.ones_like(values, bool))
    assert (band.lo, band.hi) == pytest.approx((5 - 4.5, 95 + 4.5))
