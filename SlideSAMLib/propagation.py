"""Sliding-window propagation and the rule that decides where the organ ends.

From the prompted window k the window slides one slice at a time; the next
window's prompt is the bounding box of the previous window's prediction of that
neighbouring slice.  Each slice is covered by up to three accepted windows
(as side, centre, side); their logits are averaged with the centre weighted
higher, which keeps the prompted-slice evidence dominant without a blind union.

Stopping: a naive chain never stops (a box always yields some mask).  A window
is rejected — and propagation ends on that side — when its centre mask
  * vanishes (area below a fraction of the largest accepted area),
  * disagrees with the neighbour's prediction of the same slice (low overlap),
  * suddenly grows (leaks into a neighbour organ),
  * has a low predicted IoU, or
  * is made of voxels whose intensities do not look like the prompted organ, or
  * has drifted: its median intensity lies far from the prompt mask's, in the prompt mask's IQRs (session 8).
Each mask is also cut to what can continue the previous slice (see `constrain`): islets
beside the main body are dropped before they can widen the next window's box.
Thresholds were tuned on the training volumes only (see benchmarks/RESULTS.md) and re-examined one at a time on
every training folder by benchmarks/sweep_rules.py (benchmarks/RESULTS_rules.md, "the sweep" below).
"""
import math
import time
from dataclasses import dataclass, field, fields
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .evaluation.metrics import dice
from .predictor import WindowPrediction, WindowPredictor
from .wire import MaskResultMixin

CENTER_WEIGHT = 2.0
SIDE_WEIGHT = 1.0
# Box margin and outline step: in MODEL-INPUT pixels, not mm, on purpose.
#
# Why: the margin answers the model's under-segmentation of tight boxes, a property of its input grid, and it was
# tuned in those pixels (session 1 on example_ct; RESULTS.md §1: margins of 3 or 4 px dropped the spleen to Dice
# 0.76 / 0.85). Restated as fixed mm (example_ct's 7.15 mm margin and 2.86 mm step) they moved the thin-slice restart
# of Testing/engine/test_propagation.py (0.71 x 0.59 mm pixels) from 13.4 mm to 37.0 mm past the liver's end, so they
# were put back in model pixels.
#
# In mm: one model pixel is the slice's field of view over the model input, so the mm follow the field of view, not
# the voxel size. LiteMedSAM (256-px input, aspect kept): 1 model px = (the slice's longer side in mm) / 256; a
# 1024-px official Slide-SAM model (plain resize): width / 1024 along x, height / 1024 along y. `slice_pixels` does the
# conversion; the step is then rounded to whole slice pixels, at least 1 (Propagator.__init__). For axial slices:
#   example_ct      122 x 101 px of 3.0 mm,   FOV 366 mm: 1 model px = 1.43 mm, margin 7.1 mm, step 2.9 -> 3.0 mm (1 px)
#   ct_chest_nodule 512 x 512 px of 0.57 mm,  FOV 292 mm: 1 model px = 1.14 mm, margin 5.7 mm, step 2.3 mm (4 px)
#   ct_liver_lits   128 x 128 px of 1.0 mm,   FOV 128 mm: 1 model px = 0.50 mm, margin 2.5 mm, step 1.0 mm (1 px)
#   mr_breast_lesion 45 x 120 px of 0.66 mm,  FOV 80 mm:  1 model px = 0.31 mm, margin 1.6 mm, step 0.7 mm (1 px)
# (computed from the files' headers with SliceGeometry and slice_pixels; a whole 512 x 512 abdominal CT of 0.7-0.8 mm
# has a 360-410 mm field of view: 1.4-1.6 mm per model px, margin 7-8 mm, step 2.8-3.2 mm.)
#
# The next window's box is the neighbour mask's box grown by BOX_MARGIN_MODEL_PX on each side: a tight box makes
# SAM-family models under-segment, and the chain then shrinks.
# Swept in session 9 on all 120 training structures (RESULTS_rules.md, "Session 9: box margin, 120 structures"):
# 3 / 4 px (3 is the naive chain's margin) lower the mean one-box Dice 0.4032 -> 0.3785 / 0.3962 (29 / 24 structures
# better by > 0.02, 46 / 28 worse), every leave-one-folder-out fold picks 5, and example_ct's spleen (0.922 -> 0.763 /
# 0.852) and right kidney (0.917 -> 0.606 / 0.638) fall below their CI floors (Testing/engine/test_rules.py). 3 px
# gains on bones whose neighbours look alike (example_ct L5 0.20 -> 0.49, sacrum, right femur, ct_mr_spine CT
# sub-regions) and the left upper lung lobe (0.44 -> 0.69), and loses on compact soft organs and muscles (duodenum
# 0.60 -> 0.23, example_ct right autochthon 0.69 -> 0.25, mr_abdomen spleen 0.80 -> 0.58, LiTS liver 0.87 -> 0.71).
# The click search's refining decode (clicks.py) uses this constant too; RESULTS_clicks.md measured it with 5 px.
BOX_MARGIN_MODEL_PX = 5.0
# How far (model-input pixels; see above for mm) an organ's outline may move from one slice to the next.
# The sweep: 4 px lowered the mean one-box Dice of 75 training structures 0.430 -> 0.412 (example_ct aorta 0.840 ->
# 0.182, mr_abdomen aorta 0.773 -> 0.085: their masks leak, the growth rule then ends the chains early); 2 px kept.
STEP_MODEL_PX = 2.0
# The box margin is not chosen per window either: decoding each window also from a 3 px box and keeping the candidate with the higher
# predicted IoU / stability / overlap with its prompt was a wash on 96 training structures (session 11, main 37fe1a2;
# RESULTS_rules.md "Session 11"): mean 0.4096 -> 0.4135 / 0.4101 / 0.4010, 13-17 better and 14-20 worse by > 0.02.
# Masks too small for the growth and overlap rules, in model-input pixels² (0: off). A tight box on a structure a few
# model pixels across makes the decoder return a speck (mr_abdomen's left adrenal gland: 1 pixel for a 13-pixel
# reference on its largest slice); the next window's 9-pixel mask is then a "growth" of 9x and a Dice of 0.2 with its
# prompt, and both sides ended there. With the floor, growth is measured against at least this area and the overlap
# rule is not applied to a prompt mask smaller than it (the other rules still are). Session 11, all 120 training
# structures (RESULTS_rules.md "Session 11: a floor for small masks"), mean one-box Dice 0.4032 ->
#   50: 0.4089, 3 better / 1 worse by > 0.02 (mr_abdomen adrenal left 0.023 -> 0.415, right 0.063 -> 0.115,
#       example_ct rib_right_12 0.000 -> 0.274; rib_right_10 0.080 -> 0.044); 6 structures change by > 0.005
#   100: 0.4033, 6 / 4 (example_ct rib_right_11 0.517 -> 0.223, iliac_vena_left 0.338 -> 0.159)
#   200: 0.3975, 7 / 8 (example_ct lung_upper_lobe_left 0.441 -> 0.036)
# Leaving out either folder where anything changes (ct_abdomen, mr_abdomen), the other still picks 50.
# example_ct's CI-floor organs are unchanged to 4 decimals. Testing/engine/test_rules.py holds the left adrenal.
# OFF by default: run once on the evaluation-only volumes with 50 (RESULTS_anchors.md "Session 11") it failed issue
# 12's gate (mean one box 0.414 -> 0.415, but ct_dicom's pancreas 0.391 -> 0.203 while its right adrenal gland rose
# 0.128 -> 0.295): a structure under the floor on every slice (the pancreas there, about 17 model px² a slice) loses
# the growth and overlap rules along its whole chain.
SMALL_MASK_MODEL_PX2 = 0.0
# Where the floor applies (session 12): only to a run whose prompt decode covers less than this share of its own box
# (the left adrenal: 1 pixel in a 3 x 5 box); a structure whose prompt decode fills its box keeps both rules however
# small it is. inf: every run (session 11's floor). A run with no box (a restart, a refine) applies it only at inf.
# On the 120 training structures (RESULTS_rules.md "Session 12"), with the floor at 50, mean one box 0.4032 ->
# 0.4032 / 0.4065 / 0.4069 at shares 0.1 / 0.2 / 0.3, none worse by > 0.02 (only mr_abdomen's adrenals move). Floor
# 50 with share 0.3 also FAILED the evaluation-only gate, run once (RESULTS_anchors.md "Session 12"): mean one box
# 0.414 -> 0.410; ct_dicom's pancreas 0.391 -> 0.203 again (its prompt decode is under 0.3 of its box, and the chain
# then runs to the volume's end), its right adrenal stays 0.128. So the floor stays off (0 above) and the share is
# inf, session 11's meaning of a floor; not retuned on those volumes.
SPECK_BOX_SHARE = math.inf
# A neighbour mask that has lost the structure's edge: a box drawn around it lies inside the structure (a lung's
# air, a liver's parenchyma), the decoder then returns a smaller blob inside that box, and the chain shrinks slice
# by slice (session 15: ct_chest_nodule's left lung, a threshold pseudo-label, 0.87 Dice on its prompt slice falling to
# 0.2 twelve slices on, a blob in the middle of the lung; no stop rule or constraint was the cause). When at least
# EDGE_RING_SHARE of the ring EDGE_RING_MODEL_PX wide just outside the mask lies in the organ's intensity band, the
# mask is grown within the band, up to EDGE_GROW_MODEL_PX, before the next window's box is taken from it. The
# stop rule and the constraints still see the neighbour mask itself. inf: off.
# OFF by default. Chosen on training data only (RESULTS_rules.md, "Session 15"): EDGE_RING_SHARE 0.5 with
# EDGE_CLOSED_SHARE 0.2 left the 120 training structures' mean one box at 0.4033 (0.4032 off; 5 better / 4 worse by
# > 0.02, worst example_ct vertebrae_S1 -0.078; example_ct's CI-floor organs unchanged) and raised the two threshold-
# labelled lungs of ct_chest_nodule 0.511 -> 0.575 and 0.773 -> 0.905; without the closed test (EDGE_CLOSED_SHARE inf)
# or with a lower EDGE_RING_SHARE the bones and kidneys of the training folders leaked (mean 0.38-0.42, up to 40 worse).
# Run once on the evaluation-only volumes (RESULTS_anchors.md, "Session 15") it FAILED issue 12's gate: mean one box
# 0.414 -> 0.428 (mr_spinal_cord t1 cord 0.192 -> 0.750), but ct_dicom's right adrenal gland fell 0.128 -> 0.077.
EDGE_RING_MODEL_PX = 2.0
EDGE_RING_SHARE = math.inf
EDGE_GROW_MODEL_PX = 10.0
# The growth is kept only if it closed: at most this share of the grown mask's own ring is still in the band (it has
# reached the structure's edge within EDGE_GROW_MODEL_PX; a growth into a neighbour of the same intensity has not).
# inf: every growth is kept.
EDGE_CLOSED_SHARE = math.inf


def _threshold(value, evidence: str):
    return field(default=value, metadata={"evidence": evidence})


_HAND_SET = "set by hand in session 1 on example_ct / example_mr_sm (training volumes); no sweep recorded"


@dataclass
class StopRule:
    """When a window's centre mask ends its chain; `evidence()` says where each threshold came from.
    RESULTS.md is benchmarks/RESULTS.md; every figure there was measured on training volumes only."""

    min_area_fraction: float = _threshold(
        0.005, "of the largest centre mask accepted so far; RESULTS.md §1: 2 % cut the liver's tip, 1 % ended it 2 slices short, 0.5 % matched the true extent")
    min_area_pixels: int = _threshold(4, _HAND_SET)
    min_overlap: float = _threshold(0.5, "Dice(centre mask, prompt mask from the neighbour window); " + _HAND_SET + "; the sweep "
                                    "(RESULTS_rules.md, 75 training structures): off gains on example_ct's adrenal glands (+0.04, +0.06), loses "
                                    "nowhere by > 0.02, but lets more chains run 2+ slices past the end (59 -> 67); 0.6 cut "
                                    "ct_mr_spine C5 by 0.11, 0.7 example_ct inferior_vena_cava by 0.32")
    max_growth: float = _threshold(1.6, "centre area / previous centre area; " + _HAND_SET + "; the sweep: 3 / off let "
                                   "mr_abdomen iliopsoas_left run to the volume's end (Dice 0.572 -> 0.316, Testing/engine/test_rules.py); "
                                   "1.3 cut example_ct aorta by 0.75")
    min_iou: float = _threshold(0.3, "the decoder's predicted IoU; 0.5 was " + _HAND_SET + ". The sweep (RESULTS_rules.md, 75 "
                                "training structures, one box): 0.3 (the same as off on all 75) +0.005 mean; example_ct "
                                "lung_upper_lobe_left 0.181 -> 0.441 (0.5 ended it on its prompt slice, 10 slices short; "
                                "Testing/engine/test_rules.py), adrenal_gland_left 0.293 -> 0.501; mr_abdomen iliopsoas_right "
                                "-0.032, example_ct adrenal_gland_right -0.024; 0.6 / 0.7 cut example_ct duodenum by 0.35 / 0.52")
    min_intensity_inliers: float = _threshold(0.3, "share of the raw mask's voxels inside the prompted organ's intensity band; " + _HAND_SET
                                              + "; the sweep: off changes none of 75 training structures by more than 0.003 (the band of "
                                              "`constrain` already holds the masks); 0.5 cut mr_abdomen inferior_vena_cava by 0.46")
    # On thin slices a chain can follow a small neighbour past the organ's end at a few % of its area for many
    # slices (a 512x512x300 CT: 52 slices past the liver).
    tail_fraction: float = _threshold(
        0.03, "a 'tail' is a run of slices whose mask is below this fraction of the largest; real organ tips stay under 3 % for at most ~6 mm (reference labels of the training volumes); the sweep: 10 % changes none of 65 structures by more than 0.005")
    max_tail_mm: float = _threshold(
        15.0, "RESULTS.md §1 thin slices: predicted liver tips run up to 12 mm under 3 % on example_ct; 10 mm cut its last slice; "
        "the sweep: it ends 3 of the 150 chains of 75 training structures, each 2+ slices past the reference's end "
        "(off: ct_mr_spine CT L2 (label 21) -0.004)")
    max_drift_iqr: float = _threshold(
        1.5, "|median intensity of the centre mask - the prompt mask's| in the prompt mask's IQRs (prompt masks of "
        "DRIFT_MIN_PROMPT_PIXELS or more); session 8 (RESULTS_rules.md, 'Session 8: ends', 120 training structures, "
        "default run cut offline, then real sweep variants): of 14 per-window signals it best told the first window "
        "past a structure's end from windows inside it (AUC 0.73); 1.5: mean one-box Dice 0.3969 -> 0.4032, 7 better, none "
        "worse by > 0.02, chain ends 2+ slices past the end 91 -> 81 "
        "(mr_abdomen iliopsoas_left +0.16, ct_mr_spine CT sub-region 47 +0.23, example_ct femur_left +0.10); "
        "1.0: mr_abdomen inferior_vena_cava -0.18 (Testing/engine/test_rules.py: off lets both iliopsoas run 5 / 9 slices past)")

    def evidence(self) -> Dict[str, str]:
        return {f.name: f.metadata["evidence"] for f in fields(self)}

    def vanished(self, area: int, max_area: int) -> bool:
        return area < max(self.min_area_pixels, self.min_area_fraction * max_area)

    def reason(self, f: "SliceInfo", max_area: int) -> Optional[str]:
        """Why the slice described by `f` ends its chain (None: it is accepted); areas relative to `max_area`."""
        if self.vanished(f.area, max_area):
            return "vanished"
        if f.tail_mm > self.max_tail_mm:
            return "tail"
        if f.overlap < self.min_overlap:
            return "jumped"
        if f.growth > self.max_growth:
            return "grew"
        if f.iou < self.min_iou:
            return "low-iou"
        if f.intensity_inliers < self.min_intensity_inliers:
            return "intensity"
        if f.drift_iqr > self.max_drift_iqr:
            return "drifted"
        return None


@dataclass
class SliceInfo:
    index: int
    iou: float
    stability: float
    area: int
    overlap: float = 1.0
    growth: float = 1.0
    intensity_inliers: float = 1.0
    tail_mm: float = 0.0  # length of the run of small masks (below the rule's tail_fraction) ending here
    drift_iqr: float = 0.0  # |median intensity of the mask - the prompt mask's| / the prompt mask's IQR
    accepted: bool = True
    reason: Optional[str] = None

    def as_dict(self) -> dict:
        return dict(vars(self))


@dataclass
class PropagationResult(MaskResultMixin):
    axis: int  # IJK slice axis (0 = i, 1 = j, 2 = k)
    stack_shape: Tuple[int, int, int]  # (slices, rows, cols) along that axis
    slice_masks: Dict[int, np.ndarray] = field(default_factory=dict)  # index -> bool (rows, cols)
    info: List[SliceInfo] = field(default_factory=list)
    stopped: Dict[str, str] = field(default_factory=dict)  # "up"/"down" -> reason
    cancelled: bool = False
    encoder_passes: int = 0
    seconds: float = 0.0
    prompt: str = ""  # how the prompt reached the model: one of wire.PROMPT_KINDS



def box_of(mask: np.ndarray) -> Optional[Tuple[int, int, int, int]]:
    ys, xs = np.nonzero(mask)
    if not xs.size:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def slice_pixels(geometry, model_px: float) -> Tuple[float, float]:
    """(x, y) slice pixels that make `model_px` pixels of the model's input."""
    rh, rw = geometry.resized
    return model_px * geometry.cols / rw, model_px * geometry.rows / rh


def grown_box(mask: np.ndarray, margin: Tuple[float, float]) -> Optional[Tuple[float, float, float, float]]:
    """The mask's bounding box grown by `margin` (x, y) pixels, clipped to the slice; None for an empty mask."""
    box = box_of(mask)
    if box is None:
        return None
    mx, my = margin
    rows, cols = mask.shape
    x0, y0, x1, y1 = box
    return max(0.0, x0 - mx), max(0.0, y0 - my), min(cols - 1.0, x1 + mx), min(rows - 1.0, y1 + my)


def square_dilation(mask: np.ndarray, reach: Tuple[int, int]) -> np.ndarray:
    """`mask` dilated by a (2 * rows + 1) x (2 * cols + 1) rectangle, `reach` = (rows, cols): done as two 1-D
    dilations, the same pixels in a fraction of the time on 512 x 512 slices."""
    from scipy import ndimage

    ry, rx = reach
    out = ndimage.binary_dilation(mask, structure=np.ones((2 * ry + 1, 1), bool))
    return ndimage.binary_dilation(out, structure=np.ones((1, 2 * rx + 1), bool))


def _ring_share(mask: np.ndarray, band: np.ndarray, ring_px: Tuple[int, int]) -> float:
    """The share of the ring `ring_px` (rows, cols) pixels wide just outside `mask` that lies in `band`."""
    ring = square_dilation(mask, ring_px) & ~mask
    return float(band[ring].mean()) if ring.any() else 0.0


def reach_edge(mask: np.ndarray, band: np.ndarray, ring_px: Tuple[int, int], share: float, grow_px: int,
               closed_share: float = math.inf) -> np.ndarray:
    """`mask` grown within `band` by up to `grow_px` pixels when at least `share` of the ring `ring_px` (rows, cols)
    pixels wide outside it lies in the band (the mask has not reached the structure's edge); else `mask` itself.
    With `closed_share`, the growth is kept only if at most that share of the grown mask's ring is in the band."""
    from scipy import ndimage

    if math.isinf(share) or not mask.any() or _ring_share(mask, band, ring_px) < share:
        return mask
    grown = ndimage.binary_dilation(mask, iterations=max(1, grow_px), mask=band | mask)
    if not math.isinf(closed_share) and _ring_share(grown, band, ring_px) > closed_share:
        return mask
    return grown


# The prompted organ's intensity band: these percentiles of its voxels on the prompt slice, widened on each side
# by BAND_PAD of their span (session 1, with the 2-model-pixel step: RESULTS.md §1). The sweep: without the band
# (constrain and the intensity rule) 28 of 75 training structures lose more than 0.02, 10 gain (mean 0.430 -> 0.379;
# example_ct liver 0.919 -> 0.457, mr_abdomen aorta 0.773 -> 0.093 (Testing/engine/test_rules.py); gains: mr_abdomen
# vertebrae and stomach, ct_mr_spine MR sub-regions).
BAND_PERCENTILES = (5.0, 95.0)
BAND_PAD = 0.05
# A slice keeps only the components of its mask at least this fraction of the largest one's area:
# a leak into a neighbour organ starts as a small islet and, once kept, grows the next slice's box.
# The sweep: off (keep every component) gains on 3 of 75 training structures (ct_mr_spine MR sub-regions), loses on
# 6 (example_ct duodenum -0.26, liver 0.919 -> 0.854); 0.3 kept.
MIN_COMPONENT_FRACTION = 0.3
# The drift rule (StopRule.max_drift_iqr) needs a prompt mask of at least this many pixels for its median and IQR:
# session 8's training sweep (RESULTS_rules.md, "Session 8: ends") found its only two losses on prompt masks of 13
# and 16 px (example_ct rib_left_11 -0.239, iliac_artery_right -0.069 at 1.5 IQR) and its gains on masks of 23 px
# and more (mr_abdomen iliopsoas left / right, 23 / 32 px: +0.16 / +0.10); 20 px: 7 structures better, none worse.
DRIFT_MIN_PROMPT_PIXELS = 20


class IntensityModel:
    """The prompted organ's intensity band: the 5th–95th percentile of its voxels, widened by 5 % of that span on
    each side (BAND_PERCENTILES, BAND_PAD); unbounded when the mask has fewer than 10 voxels. Also its median and
    interquartile range, the unit of `drift`."""

    def __init__(self, image: np.ndarray, mask: np.ndarray):
        values = image[mask]
        self.median, self.iqr = None, None
        if values.size < 10:
            self.lo, self.hi = -np.inf, np.inf
            return
        lo, hi = np.percentile(values, BAND_PERCENTILES)
        pad = BAND_PAD * max(hi - lo, 1e-6)
        self.lo, self.hi = lo - pad, hi + pad
        q1, median, q3 = (float(v) for v in np.percentile(values, (25, 50, 75)))
        # A constant prompt mask (e.g. a lung clipped to the CT window's floor: example_ct's left upper lobe) has no
        # spread to measure a drift in: the drift rule is off there, as for small prompt masks.
        if values.size >= DRIFT_MIN_PROMPT_PIXELS and q3 - q1 > 1e-6:
            self.median, self.iqr = median, q3 - q1

    def drift(self, image: np.ndarray, mask: np.ndarray) -> float:
        """How far the median intensity of `mask` lies from the prompted organ's, in its interquartile ranges;
        0 for masks under 4 pixels (the vanish rule's business), a prompt mask under DRIFT_MIN_PROMPT_PIXELS or one
        of a single intensity (no IQR)."""
        values = image[mask]
        if self.median is None or values.size < 4:
            return 0.0
        return abs(float(np.median(values)) - self.median) / self.iqr

    def band(self, image: np.ndarray) -> np.ndarray:
        return (image >= self.lo) & (image <= self.hi)

    def inliers(self, image: np.ndarray, mask: np.ndarray) -> float:
        values = image[mask]
        if not values.size:
            return 0.0
        return float(np.mean((values >= self.lo) & (values <= self.hi)))


def constrain(
    mask: np.ndarray, image: np.ndarray, intensity: IntensityModel, previous: Optional[np.ndarray], step: Tuple[int, int]
) -> np.ndarray:
    """Keep what can continue `previous`: within `step` pixels of it, in the organ's intensity band,
    in components that touch it and are not small beside the largest; holes filled.  An organ's outline
    moves a few pixels per slice, so this stops a box prompt from leaking into the neighbours it covers."""
    from scipy import ndimage

    m = mask & intensity.band(image)
    if previous is not None and previous.any():
        m &= square_dilation(previous, step)
        labels, n = ndimage.label(m)
        if n > 1:
            keep = np.unique(labels[previous & m])
            keep = keep[keep > 0]
            if keep.size:
                m = np.isin(labels, keep)
    m = ndimage.binary_fill_holes(m)
    labels, n = ndimage.label(m)
    if n > 1:
        sizes = ndimage.sum_labels(m, labels, range(1, n + 1))
        m = np.isin(labels, 1 + np.nonzero(sizes >= MIN_COMPONENT_FRACTION * sizes.max())[0])
    return m


def score_slice(
    index: int,
    pred: WindowPrediction,
    raw: np.ndarray,
    centre: np.ndarray,
    prompt_mask: np.ndarray,
    image: np.ndarray,
    intensity: IntensityModel,
    previous_area: int,
    tail_mm: float,
    small_area: float = 0.0,
) -> SliceInfo:
    """What the stop rule looks at for one window: its raw centre mask `raw`, that mask constrained (`centre`),
    the prompt mask it was given, the slice image, the previous accepted area and the small-mask run so far.
    small_area (slice pixels): growth is measured against at least this area, and a prompt mask smaller than it is
    not compared with (overlap 1.0): see SMALL_MASK_MODEL_PX2."""
    area = int(centre.sum())
    return SliceInfo(
        index,
        pred.iou,
        pred.stability,
        area,
        overlap=dice(centre, prompt_mask) if int(prompt_mask.sum()) >= small_area else 1.0,
        growth=area / max(previous_area, small_area, 1),
        intensity_inliers=intensity.inliers(image, raw),
        tail_mm=tail_mm,
        drift_iqr=intensity.drift(image, centre),
    )


@dataclass
class Chain:
    """One direction's walk from the start slice: the accepted slices and what the last of them looked like."""

    direction: int  # +1 (up) or -1 (down)
    previous_mask: np.ndarray
    previous_area: int
    tail_slices: int = 0  # accepted small masks (below the rule's tail_fraction of the largest) in a row
    slices: List[int] = field(default_factory=list)

    @property
    def name(self) -> str:
        return "up" if self.direction > 0 else "down"


ProgressFn = Callable[[float, str], None]
CancelFn = Callable[[], bool]
SliceDoneFn = Callable[[int, np.ndarray], None]  # (slice index, bool mask): a slice as propagation accepts it, while it runs
# (slice index, the window's constrained mask, the stop rule's verdict or None) -> a reason to end that side at this
# slice and keep the caller's own masks from it on ("agrees", "departs": Session.refine with `current`), or None.
StopAtFn = Callable[[int, np.ndarray, Optional[str]], Optional[str]]


class Propagator:
    """Runs one propagation on a `WindowPredictor`; holds the per-slice contributions while it runs.

    `spacing_mm`: (slice, row, col) voxel size of the predictor's stack; the tail is a length in mm along the
    slice axis, the box margin and the outline's step are model-input pixels (see BOX_MARGIN_MODEL_PX)."""

    def __init__(
        self,
        predictor: WindowPredictor,
        spacing_mm: Tuple[float, float, float],
        rule: Optional[StopRule] = None,
        progress: Optional[ProgressFn] = None,
        cancel: Optional[CancelFn] = None,
        box_margin_model_px: float = BOX_MARGIN_MODEL_PX,
        slice_done: Optional[SliceDoneFn] = None,
        step_model_px: float = STEP_MODEL_PX,
        small_mask_model_px2: float = SMALL_MASK_MODEL_PX2,
        speck_box_share: float = SPECK_BOX_SHARE,
    ):
        self.p = predictor
        self.slice_mm = float(spacing_mm[0])
        self.margin = slice_pixels(predictor.geometry, box_margin_model_px)  # (x, y) slice pixels
        px_x, px_y = slice_pixels(predictor.geometry, 1.0)  # slice pixels per model pixel
        self.floor_area = float(small_mask_model_px2) * px_x * px_y  # in slice pixels; applied per run (see run)
        self.speck_box_share = float(speck_box_share)
        self.small_area = 0.0
        step_x, step_y = slice_pixels(predictor.geometry, step_model_px)
        self.step = (max(1, int(round(step_y))), max(1, int(round(step_x))))  # (rows, cols)
        self.rule = rule if rule is not None else StopRule()
        ring_x, ring_y = slice_pixels(predictor.geometry, EDGE_RING_MODEL_PX)
        self.edge_ring = (max(1, int(round(ring_y))), max(1, int(round(ring_x))))
        self.edge_share, self.edge_closed = float(EDGE_RING_SHARE), float(EDGE_CLOSED_SHARE)
        self.edge_grow = max(1, int(round(min(slice_pixels(predictor.geometry, EDGE_GROW_MODEL_PX)))))
        self.progress = progress or (lambda fraction, message: None)
        self.cancel = cancel or (lambda: False)
        # Each slice's mask as soon as it is accepted, for front ends that show the run as it goes: the slice's own
        # window, constrained; the result's mask of that slice also merges the next window's prediction of it.
        self.slice_done = slice_done or (lambda index, mask: None)
        self._sum: Dict[int, torch.Tensor] = {}  # slice -> weighted logit sum, while windows may still add to it
        self._weight: Dict[int, float] = {}
        self._sealed: Dict[int, np.ndarray] = {}  # slice -> merged bool mask, once no window can add to it

    # -- merging: each slice's mask is the weighted mean of the logits of the windows that cover it -----------
    def _add(self, pred: WindowPrediction, lo: int, hi: int) -> None:
        for offset, weight in ((-1, SIDE_WEIGHT), (0, CENTER_WEIGHT), (1, SIDE_WEIGHT)):
            s = pred.center + offset
            if lo <= s <= hi:
                self._sum[s] = self._sum.get(s, 0) + weight * pred.logits[offset + 1]
                self._weight[s] = self._weight.get(s, 0.0) + weight

    def merged(self, s: int) -> Optional[np.ndarray]:
        if s in self._sealed:
            return self._sealed[s]
        if s not in self._sum:
            return None
        return (self._sum[s] / self._weight[s] > 0).numpy()

    def _seal(self, s: int) -> None:
        """Keep slice s's merged mask as bool and drop its float sum: a 512x512 slice is 1 MB of float32
        logits, and a long chain would otherwise hold them all until the end (see benchmarks/RESULTS.md §2)."""
        if s in self._sum:
            self._sealed[s] = self.merged(s)
            del self._sum[s], self._weight[s]

    def _final_masks(self, res: PropagationResult, start: int, start_mask, fixed: bool, chains: List[Chain]) -> None:
        """The merged windows of each slice, constrained outward from the start slice along each chain."""
        image = self.p.stack
        if fixed:
            res.slice_masks[start] = start_mask.astype(bool)
        else:
            res.slice_masks[start] = constrain(self.merged(start), image[start], self.intensity, start_mask, self.step)
        for chain in chains:
            previous = res.slice_masks[start]
            for c in chain.slices:
                previous = res.slice_masks[c] = constrain(self.merged(c), image[c], self.intensity, previous, self.step)

    # -- chain stepping ---------------------------------------------------------------------------------------
    def _window(self, c: int, chain: Chain, lo: int, hi: int) -> Tuple[Optional[WindowPrediction], Optional[np.ndarray], Optional[SliceInfo]]:
        """Predict slice c from its neighbour's prediction of it and score it: (prediction, constrained centre
        mask, info with the rule's verdict); all None when the neighbour left nothing to prompt with."""
        slice_image = self.p.stack[c]  # normalised on each indexing: once per slice
        prompt_mask = self.merged(c)
        if prompt_mask is not None:
            prompt_mask = constrain(prompt_mask, slice_image, self.intensity, chain.previous_mask, self.step)
        if prompt_mask is not None and self.p.model.trained_neighbours and self.rule.vanished(int(prompt_mask.sum()), self.max_area):
            # A model whose outer branches learned their slices predicts a structure's end: its neighbour mask
            # vanishing is evidence enough, and the next window is neither encoded nor decoded.
            return None, None, None
        box_mask = prompt_mask
        if prompt_mask is not None and not math.isinf(self.edge_share):
            box_mask = reach_edge(prompt_mask, self.intensity.band(slice_image), self.edge_ring, self.edge_share, self.edge_grow,
                                  self.edge_closed)
        box = grown_box(box_mask, self.margin) if box_mask is not None else None
        if box is None:
            return None, None, None
        # Encode this window and the next ones in the direction of travel, one batch.
        ahead = [c + chain.direction * i for i in range(self.p.batch_size)]
        self.p.encode([k for k in ahead if lo <= k <= hi])
        pred = self.p.predict(c, box=box)
        raw = (pred.logits[1] > 0).numpy()
        centre = constrain(raw, slice_image, self.intensity, chain.previous_mask, self.step)
        small = int(centre.sum()) < self.rule.tail_fraction * self.max_area
        tail_slices = chain.tail_slices + 1 if small else 0
        info = score_slice(c, pred, raw, centre, prompt_mask, slice_image, self.intensity, chain.previous_area, tail_slices * self.slice_mm,
                           self.small_area)
        info.reason = self.rule.reason(info, self.max_area)
        info.accepted = info.reason is None
        if info.accepted:
            chain.tail_slices = tail_slices
        return pred, centre, info

    def _walk(self, chain: Chain, start: int, lo: int, hi: int, res: PropagationResult) -> str:
        """Step `chain` from `start` until the range ends, the user cancels or a window is rejected; why it stopped."""
        c = start + chain.direction
        while True:
            if not (lo <= c <= hi):
                return "volume-end" if c < 0 or c >= self.p.n_slices else "range-end"
            if self.cancel():
                res.cancelled = True
                return "cancelled"
            pred, centre, info = self._window(c, chain, lo, hi)
            if info is None:  # nothing left to prompt slice c with
                keep = self._stop_at(c, np.zeros(self.p.stack.shape[1:], bool), "vanished") if self._stop_at is not None else None
                return keep or "vanished"
            self._done += 1
            res.info.append(info)
            keep = self._stop_at(c, centre, info.reason) if self._stop_at is not None else None
            if info.accepted:
                self._add(pred, lo, hi)  # an accepted window adds its prediction of the slice before it, even when it ends the side
            if keep is not None:  # not written: the caller keeps its own mask of c onwards
                info.accepted, info.reason = False, keep
                return keep
            if not info.accepted:
                return info.reason
            if c - chain.direction != start:  # the start slice still gets the other direction's first window
                self._seal(c - chain.direction)  # windows from here on touch c and beyond only
            chain.slices.append(c)
            self.max_area = max(self.max_area, info.area)
            chain.previous_area, chain.previous_mask = info.area, centre
            self.slice_done(c, centre)
            self.progress(min(0.99, self._done / self._span), f"slice {c} ({chain.name})")
            c += chain.direction

    def _speck(self, start_area: int, box_area: Optional[float]) -> bool:
        """Whether this run gets the small-mask floor: its prompt decode is a speck in its box (SPECK_BOX_SHARE)."""
        if self.floor_area <= 0:
            return False
        if math.isinf(self.speck_box_share):
            return True
        return box_area is not None and start_area < self.speck_box_share * box_area

    def run(
        self,
        start: int,
        first: WindowPrediction,
        directions: Sequence[int],
        lo: int,
        hi: int,
        fixed_start_mask: Optional[np.ndarray] = None,
        result: Optional[PropagationResult] = None,
        largest_area: int = 0,
        stop_at: Optional[StopAtFn] = None,
        prompt_box_area: Optional[float] = None,
    ) -> PropagationResult:
        """Propagate from `start` (already predicted as `first`) in each of `directions` (+1, -1) within [lo, hi].

        `stop_at(c, mask, verdict)`: asked for each scored slice with the stop rule's verdict; a reason overrides it,
        ends that side there with that reason and leaves slice c out of the result (no window past it is encoded
        or decoded).
        `prompt_box_area` (slice pixels²): the area of the box that prompted `first`, for the small-mask floor."""
        t0 = time.perf_counter()
        self._stop_at = stop_at
        passes0 = self.p.encoder_passes
        res = result or PropagationResult(axis=self.p.axis, stack_shape=self.p.stack.shape)
        self._add(first, lo, hi)
        start_mask = fixed_start_mask if fixed_start_mask is not None else (first.logits[1] > 0).numpy()
        self.intensity = IntensityModel(self.p.stack[start], start_mask)
        start_info = SliceInfo(start, first.iou, first.stability, int(start_mask.sum()))
        self.small_area = self.floor_area if self._speck(start_info.area, prompt_box_area) else 0.0
        res.info.append(start_info)
        self.slice_done(start, start_mask.astype(bool))
        self.max_area = max(start_info.area, int(largest_area))  # the stop rule's areas are relative to this
        self._span = max(1, sum((hi - start) if d > 0 else (start - lo) for d in directions))
        self._done = 0
        chains = []
        for d in directions:
            chain = Chain(d, start_mask, start_info.area)
            res.stopped[chain.name] = self._walk(chain, start, lo, hi, res)
            chains.append(chain)
        self._final_masks(res, start, start_mask, fixed_start_mask is not None, chains)
        res.encoder_passes += self.p.encoder_passes - passes0
        res.seconds += time.perf_counter() - t0
        return res
