"""NOT SHIPPED (benchmarks/RESULTS_clicks.md §9): SlideSAMLib/clicks.py's search with session 8's step 5 back and a
guard on it, as a subclass that overrides only the choice (`ClickSearch._choose`).

Loaded by bench_clicks_slice.py --baseline, bench_clicks_3d.py --variant and bench_clicks_guard.py as a module of
SlideSAMLib (`load_clicks`); it exposes `ClickSearch` like clicks.py. It passed the held-out gate on the 120 training
structures (0.971 / 30 against steps 3-4's 0.937 / 32) and lost nothing on the first 77 large-organ clicks (where the
guard was chosen), but on the 66 confirmation clicks it lost > 0.02 Dice on two spleens (0.442 -> 0.077,
0.488 -> 0.222): a large training organ lost, so it stays out of clicks.py.

Step 5: a smaller candidate still replaces steps 3-4's choice where a small pairwise model (a logistic score of eight
features of the candidate and four of their differences to the choice, `REPLACE_WEIGHTS`) gives it a probability
> 0.5 of beating the choice. Only a candidate that lies inside the choice and is cut from it by an intensity change
may replace it (`_nested_apart`): without that guard the model took a tiny patch inside a liver (its score grows as
the candidate shrinks against the choice), which no sub-structure of a homogeneous organ should win.
"""
from typing import Sequence

import numpy as np
from scipy import ndimage

from SlideSAMLib import clicks as _clicks
from SlideSAMLib.clicks import _edge, _on_border
from SlideSAMLib.evaluation.metrics import dice

# Step 5. Features of a candidate (`ClickSearch._features`), then REPLACE_WEIGHTS' last four: the first four's
# differences candidate - choice. Fitted by benchmarks/bench_clicks_guard.py --weights (logistic regression, L2 0.01,
# label "its click / box beats the choice's by > 0.05") on the candidates smaller than step 4's choice that pass the
# guard below, of the 120 structures of the six training folders (bench_clicks_dump.py), in raw units
# (standardisation folded in). Prompt slice, 2D Dice, click / box capped at 2 (benchmarks/RESULTS_clicks.md §9):
# steps 3-4 alone 0.937 and 32 structures below 0.7 x box; with this step 0.969 and 30 in-sample; fitted on five
# folders and measured on the sixth, for each, 0.971 and 30. Session 8's step 5 (the same model, no guard; 9e34781)
# held out 0.963 / 30, but on 77 more training clicks on the large organs (five slices along each and two
# off-centre clicks; liver, spleen, kidneys, stomach of example_ct and mr_abdomen, ct_liver_lits' liver) it lost
# > 0.02 Dice on 5 (ct_liver_lits' liver 0.780 -> 0.013: a candidate 0.6 % of the liver's area, decoder IoU 0.44,
# inside the liver with the liver's intensities all around it); with the guard on none.
REPLACE_FEATURES = ("log decoder IoU", "log step-3 fit", "log area mm2", "log edge / sharpest edge of the ladder",
                    "share of outline on the box border", "Dice with the next square's part", "compactness 4 pi A / P^2",
                    "click to centroid / equivalent radius")
REPLACE_WEIGHTS = np.array([-0.500832, -0.0667439, 0.220876, 0.674889, -0.246711, 0.234516, -2.335, -0.492588,
                            1.16077, 1.13087, -1.05368, 0.514458])
REPLACE_BIAS = -0.624307
REPLACE_MIN = 0.5  # the probability a smaller candidate needs to replace the choice
EPS = 1e-3  # inside the logs of the features
# The guard of step 5, on the ring of RING_MM just outside the smaller candidate: at least NESTED_MIN of it inside the
# choice's mask (the candidate is a part of the choice, not another structure beside it), and under SUB_BLOB_MAX of it
# inside the choice AND in the click's intensity band (a ring of the same tissue all round: a patch of a homogeneous
# organ, not a structure of its own). Chosen on the training folders (bench_clicks_guard.py, §9): of 3 x 3 settings
# (0.5 / 0.75 / 0.9, 0.6 / 0.7 / 0.8) this is the one with no large-organ click worse than steps 3-4; the others
# lost 1-5 of the 77 (the guard alone, sub-blob < 0.7: 0.972 / 30 held out, one liver click 0.547 -> 0.320).
NESTED_MIN = 0.75
SUB_BLOB_MAX = 0.7


class ClickSearch(_clicks.ClickSearch):
    """clicks.py's search; its choice (steps 3-4) may then be replaced by a smaller candidate (step 5)."""

    def __init__(self, predictor, pixel_mm: float = 1.0):
        super().__init__(predictor, pixel_mm)
        self.pixel_mm = pixel_mm  # step 5's area feature is in mm2

    def _choose(self, candidates, scores, image, in_band, click) -> int:
        gradient = np.hypot(ndimage.sobel(image, 0), ndimage.sobel(image, 1))
        pick = self._smallest_plausible(candidates, scores, image)
        allowed = [self._nested_apart(c[2], candidates[pick][2], in_band) if c is not None and i < pick else False
                   for i, c in enumerate(candidates)]
        return self._replacement(self._features(candidates, in_band, gradient, click), pick, allowed)

    def _features(self, candidates, in_band: np.ndarray, gradient: np.ndarray, click) -> np.ndarray:
        """Step 5's features of each candidate, in REPLACE_FEATURES' order (a row of NaN where it missed a click)."""
        edges = [None if c is None else _edge(c[2], gradient) for c in candidates]
        sharpest = max(max(e for e in edges if e is not None), 1e-12)  # a flat slice has no edge
        features = np.full((len(candidates), len(REPLACE_FEATURES)), np.nan)
        for i, c in enumerate(candidates):
            if c is None:
                continue
            box, pred, part = c
            after = candidates[i + 1] if i + 1 < len(candidates) else None
            area = float(part.sum())
            cy, cx = ndimage.center_of_mass(part)
            outline = int((part & ~ndimage.binary_erosion(part)).sum())
            features[i] = [np.log(pred.iou + EPS), np.log(self._fit(part, in_band) + EPS), np.log(area * self.pixel_mm ** 2),
                           np.log(edges[i] / sharpest + EPS), _on_border(part, box), 0.0 if after is None else dice(part, after[2]),
                           4 * np.pi * area / max(outline, 1) ** 2, np.hypot(cx - click[0], cy - click[1]) / np.sqrt(area / np.pi)]
        return features

    def _nested_apart(self, part: np.ndarray, choice: np.ndarray, in_band: np.ndarray) -> bool:
        """Step 5's guard: `part` lies inside `choice` and is cut from the rest of it by an intensity change."""
        ring = ndimage.binary_dilation(part, iterations=self.ring_px) & ~part
        n = max(int(ring.sum()), 1)
        inside = ring & choice
        return inside.sum() / n >= NESTED_MIN and (inside & in_band).sum() / n < SUB_BLOB_MAX

    def _replacement(self, features: np.ndarray, pick: int, allowed: Sequence[bool]) -> int:
        """Step 5: the allowed smaller candidate most likely to beat the choice `pick`, where that probability > REPLACE_MIN."""
        best, top = pick, REPLACE_MIN
        for j in range(pick):
            if not np.isnan(features[j, 0]) and allowed[j]:
                p = replace_probability(features, j, pick)
                best, top = (j, p) if p > top else (best, top)
        return best


def pair_features(features: np.ndarray, j: int, pick: int) -> np.ndarray:
    """Step 5's input for candidate j against the choice: its features, then the first four's differences."""
    return np.r_[features[j], features[j, :4] - features[pick, :4]]


def replace_probability(features: np.ndarray, j: int, pick: int) -> float:
    return float(1.0 / (1.0 + np.exp(-(pair_features(features, j, pick) @ REPLACE_WEIGHTS + REPLACE_BIAS))))
