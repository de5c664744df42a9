"""Clicks for a model trained with boxes only: find the box the click means.

LiteMedSAM (the embedded default) never saw point prompts; fed a click, its decoder returns almost nothing
(Dice <= 0.05). A box-only model instead segments "the object in the box", and its mask grows with the box.
So a click becomes a search over boxes centred on it:

  1. square boxes centred on the click, half-sides growing by 1.25x from 2 % to 45 % of the slice's longer
     side, one decode each;
  2. each candidate mask is the connected part holding the include clicks (none may hold an exclude click);
  3. it is scored by how well it fits the intensities around the click: the share of its pixels inside
     the click's intensity band, times the share of the thin ring just outside it that is not (an organ's
     mask is homogeneous and ends where the tissue changes), times the decoder's own IoU estimate;
  4. the smallest plausible structure wins over that pick: a smaller candidate that lies inside its box,
     keeps its mask when the box grows, has a confident decoder and a clearly sharper outline (intensity
     edge) than the pick replaces it. On small structures the band of step 3 is wider than the structure
     (a 7 mm disc around a nodule is mostly lung), so step 3 alone took a lung nodule's click to a
     58,000-voxel region; a larger pick whose outline is weaker has leaked past the structure's edge;
  5. the chosen candidate's bounding box, grown by the propagation's margin, is decoded once more (the
     squares are centred on the click, the structure seldom is).

Chosen on the training volumes only (one click at the deepest point of the largest slice of 120 structures of
the six training folders); figures in benchmarks/RESULTS_clicks.md. A point-trained checkpoint does not need
this: its decoder takes clicks directly.
"""
from dataclasses import replace
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from scipy import ndimage

from .errors import InputError
from .evaluation.metrics import dice  # the package's one Dice
from .predictor import WindowPrediction, WindowPredictor
from .propagation import BOX_MARGIN_MODEL_PX, grown_box, slice_pixels

# Half-sides of the candidate squares, as fractions of the slice's longer side: 2 % to 45 %, 15 sizes. A finer
# ladder (1 % to 46 %, 22 sizes, for mr_abdomen's 13-pixel adrenal glands) took example_ct's spleen click from
# 3D Dice 0.931 to 0.833 (training data, below its 0.85 floor), so this ladder stays (benchmarks/RESULTS_clicks.md).
BOX_FRACTIONS = tuple(0.02 * 1.25 ** n for n in range(15))
BAND_DISC_MM = 7.0  # radius of the disc around each include click whose intensities make the band
BAND_QUANTILES = (25.0, 75.0)
BAND_PAD = 0.5  # the band is the disc's inter-quartile range widened by this share of it on each side
RING_MM = 3.0  # width of the ring just outside a candidate mask
# Step 4, a smaller candidate replaces the pick when all four hold. Chosen on the prompt slice's 2D Dice of the 120
# structures (every label with >= 10 pixels on its largest slice) of the six training folders, offline from one run
# that decoded every square (benchmarks/RESULTS_clicks.md §7): these four took the mean click / box from 0.895 to
# 0.937 and the structures below 0.7 x box from 39 to 32; they changed 10, 9 better by > 0.02 (example_ct's sacrum
# 0.16 -> 0.67, T11 0.10 -> 0.63, rib_right_7 0.25 -> 0.75, rib_left_9 0.01 -> 0.57, costal cartilages, left femur,
# L3 and its corpus border on CT), none worse, no folder worse. The shipped 0.2 / 0.85 / 0.7 / 1.5 had fixed the
# lung nodule (and still does). Neighbours: contained 0.4 or IoU 0.7 gave 0.933 / 0.931 (none worse); stable 0.8
# 0.937, 0.9 0.915; edge 1.5 0.909, 1.0 0.924 but 3 worse; no containment limit 0.932, 2 worse.
CONTAINED_MAX = 0.5  # share of its outline within 2 pixels of its box's border (a truncated mask fills the box)
STABLE_MIN = 0.85  # Dice between its mask and the next larger box's mask
IOU_MIN = 0.6  # the decoder's IoU estimate
EDGE_GAIN = 1.25  # mean intensity gradient along its outline, over that along the pick's outline

Click = Tuple[float, float, bool]  # (x, y, include) in slice pixels


def _pixels(clicks: Sequence[Click], rows: int, cols: int) -> Tuple[List[Tuple[int, int]], List[Tuple[int, int]]]:
    """(include, exclude) pixel indices (x, y) of the clicks, on the slice (a click on its last half pixel rounds off it)."""
    pixel = lambda x, y: (min(max(int(round(x)), 0), cols - 1), min(max(int(round(y)), 0), rows - 1))
    return [pixel(x, y) for x, y, inc in clicks if inc], [pixel(x, y) for x, y, inc in clicks if not inc]


class ClickSearch:
    """Turns clicks on slice k into one `WindowPrediction` with a box-only model (see module docstring)."""

    def __init__(self, predictor: WindowPredictor, pixel_mm: float = 1.0):
        """`pixel_mm`: the in-plane pixel size; the intensity disc and ring are physical sizes."""
        self.p = predictor
        self.rows, self.cols = predictor.stack.shape[1:]
        self.disc_px = max(1.5, BAND_DISC_MM / pixel_mm)
        self.ring_px = max(1, int(round(RING_MM / pixel_mm)))
        self.margin = slice_pixels(predictor.geometry, BOX_MARGIN_MODEL_PX)
        self.decodes = 0  # decoder calls of the last search (for tests and the benchmark)

    def predict(self, k: int, clicks: Sequence[Click]) -> WindowPrediction:
        include, exclude = _pixels(clicks, self.rows, self.cols)
        if not include:
            raise ValueError("the click search needs at least one include click")
        self.decodes = 0
        image = np.asarray(self.p.stack[[k]][0], dtype=np.float32)
        in_band = self._band(image, include)
        x, y = np.mean(include, axis=0)
        side = max(self.rows, self.cols)
        xs, ys = [c[0] for c in include], [c[1] for c in include]
        candidates = []  # (box, prediction, part) per square, None where it missed a click
        for fraction in BOX_FRACTIONS:
            h = fraction * side
            box = self._clip(min(x - h, min(xs) - 1), min(y - h, min(ys) - 1), max(x + h, max(xs) + 1), max(y + h, max(ys) + 1))
            candidate = self._decode(k, box, include, exclude)
            candidates.append(None if candidate is None else (box, *candidate))
        scores = [-1.0 if c is None else self._fit(c[2], in_band) * c[1].iou for c in candidates]
        if max(scores) < 0:
            raise InputError(f"no structure found under the click(s) on slice {k}: click inside the structure, or draw a box around it")
        self.candidates = candidates  # the last search's ladder (for the benchmark)
        chosen = candidates[self._choose(candidates, scores, image, in_band, (x, y))]
        refined = self._decode(k, grown_box(chosen[2], self.margin), include, exclude)
        return (refined or chosen[1:])[0]

    # -- parts ---------------------------------------------------------------
    def _choose(self, candidates, scores: List[float], image: np.ndarray, in_band: np.ndarray, click) -> int:
        """The candidate the search returns (steps 3-4); a benchmark variant overrides this one method
        (benchmarks/clicks_step5_guarded.py)."""
        return self._smallest_plausible(candidates, scores, image)

    def _smallest_plausible(self, candidates, scores: List[float], image: np.ndarray) -> int:
        """Step 4: the first candidate smaller than the pick (the best score) that is contained, stable, confident and sharper-edged."""
        pick = int(np.argmax(scores))
        gradient = np.hypot(ndimage.sobel(image, 0), ndimage.sobel(image, 1))
        pick_edge = _edge(candidates[pick][2], gradient)
        for i in range(pick):
            if candidates[i] is None or candidates[i + 1] is None:
                continue
            box, pred, part = candidates[i]
            if (_on_border(part, box) <= CONTAINED_MAX and dice(part, candidates[i + 1][2]) >= STABLE_MIN
                    and pred.iou >= IOU_MIN and _edge(part, gradient) >= EDGE_GAIN * pick_edge):
                return i
        return pick

    def _clip(self, x0, y0, x1, y1):
        return max(0.0, x0), max(0.0, y0), min(self.cols - 1.0, x1), min(self.rows - 1.0, y1)

    def _decode(self, k, box, include, exclude) -> Optional[Tuple[WindowPrediction, np.ndarray]]:
        """The prediction for `box` and the part of its centre mask that holds the include clicks, or None
        when that part misses an include click or holds an exclude click."""
        pred = self.p.predict(k, box=box)
        self.decodes += 1
        labels, _ = ndimage.label((pred.logits[1] > 0).numpy())
        held = {labels[y, x] for x, y in include}
        if 0 in held or any(labels[y, x] in held for x, y in exclude):
            return None
        return pred, np.isin(labels, list(held))

    def _band(self, image: np.ndarray, include: List[Tuple[int, int]]) -> np.ndarray:
        r = self.disc_px
        yy, xx = np.ogrid[: self.rows, : self.cols]
        disc = np.zeros(image.shape, dtype=bool)
        for x, y in include:
            disc |= (xx - x) ** 2 + (yy - y) ** 2 <= r * r
        lo, hi = np.percentile(image[disc], BAND_QUANTILES)
        pad = BAND_PAD * max(float(hi - lo), 1e-6)
        return (image >= lo - pad) & (image <= hi + pad)

    def _fit(self, mask: np.ndarray, in_band: np.ndarray) -> float:
        ring = ndimage.binary_dilation(mask, iterations=self.ring_px) & ~mask
        if not ring.any():  # the mask fills the slice
            return 0.0
        return float(in_band[mask].mean() * (1.0 - in_band[ring].mean()))


def _outline(mask: np.ndarray) -> np.ndarray:
    """The mask's own edge pixels and the pixels just outside it."""
    return (mask & ~ndimage.binary_erosion(mask)) | (ndimage.binary_dilation(mask) & ~mask)


def _edge(mask: np.ndarray, gradient: np.ndarray) -> float:
    """Mean intensity-gradient magnitude along the mask's outline."""
    return float(gradient[_outline(mask)].mean())


def _on_border(mask: np.ndarray, box) -> float:
    """Share of the mask's edge pixels within 2 pixels of the (pixel-rounded) border of its box."""
    x0, y0, x1, y1 = box
    inside = np.zeros_like(mask)
    inside[int(np.ceil(y0)) : int(y1) + 1, int(np.ceil(x0)) : int(x1) + 1] = True
    border = inside & ~ndimage.binary_erosion(inside, iterations=2)
    edge = mask & ~ndimage.binary_erosion(mask)
    return float((edge & border).sum()) / max(int(edge.sum()), 1)


def apply_clicks(pred: WindowPrediction, clicks: Sequence[Click]) -> WindowPrediction:
    """Clicks given with a box to a box-only model, applied to the box's prediction instead of its decoder.

    Fed to LiteMedSAM's decoder beside a box, one include click inside the organ took the spleen of example_ct
    from Dice 0.81 to 0.00 and the liver from 0.96 to 0.74 (benchmarks/RESULTS.md §1c). Here the box alone is
    decoded, then: where include clicks fall on the centre mask, only the parts holding them are kept; a part
    holding an exclude click is dropped, or, when it also holds an include click, split between the clicks (its
    pixels nearer the exclude click go). The same in-plane pixels are cleared on the window's three slices.
    """
    drop = dropped_by_clicks((pred.logits[1] > 0).numpy(), clicks)
    if not drop.any():
        return pred
    return cleared(pred, drop)


def cleared(pred: WindowPrediction, drop: np.ndarray) -> WindowPrediction:
    """`pred` with the in-plane pixels `drop` cleared on the window's three slices."""
    logits = pred.logits.clone()
    where = torch.from_numpy(drop)
    logits[:, where] = torch.clamp(logits[:, where], max=-1.0)
    return replace(pred, logits=logits)


def dropped_by_clicks(centre: np.ndarray, clicks: Sequence[Click]) -> np.ndarray:
    """The pixels of the mask `centre` that the clicks remove (the rules of `apply_clicks`)."""
    rows, cols = centre.shape
    include, exclude = _pixels(clicks, rows, cols)
    labels, _ = ndimage.label(centre)
    drop = np.zeros_like(centre)
    held = {labels[y, x] for x, y in include} - {0}
    if held:
        drop |= centre & ~np.isin(labels, list(held))
    yy, xx = np.mgrid[:rows, :cols]
    for ex, ey in exclude:
        part = labels[ey, ex]
        if part == 0:
            continue
        region = labels == part
        keepers = [(x, y) for x, y in include if labels[y, x] == part]
        if not keepers:
            drop |= region
            continue
        to_exclude = (xx - ex) ** 2 + (yy - ey) ** 2
        to_include = np.min([(xx - x) ** 2 + (yy - y) ** 2 for x, y in keepers], axis=0)
        drop |= region & (to_exclude < to_include)
    return drop


def edit_mask(mask: np.ndarray, clicks: Sequence[Click], search: "ClickSearch", k: int) -> np.ndarray:
    """A slice's mask corrected by include/exclude clicks, for a box-only model (`Session.refine`).

    Clicks on the mask act as in `apply_clicks` (exclude: its part goes, or is split between the clicks; include:
    only the parts holding include clicks stay). An include click off the mask adds the part that the click's box
    search finds under it on slice k (none of it under an exclude click)."""
    mask = np.asarray(mask, dtype=bool)
    out = mask & ~dropped_by_clicks(mask, clicks)
    include, exclude = _pixels(clicks, *mask.shape)
    excludes = [(x, y, False) for x, y in exclude]
    for x, y in include:
        if not mask[y, x]:
            found = (search.predict(k, [(x, y, True)] + excludes).logits[1] > 0).numpy()
            labels, _ = ndimage.label(found)
            if found[y, x]:  # the search's part holding the click (it refuses parts that miss it)
                out |= labels == labels[y, x]
    return out
