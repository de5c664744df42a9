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
  * is made of voxels whose intensities do not look like the prompted organ.
Each mask is also cut to what can continue the previous slice (see `constrain`): islets
beside the main body are dropped before they can widen the next window's box.
Thresholds were tuned on the training volumes only (see benchmarks/RESULTS.md).
"""
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .errors import Cancelled
from .predictor import WindowPrediction, WindowPredictor
from .wire import MaskResultMixin

CENTER_WEIGHT = 2.0
SIDE_WEIGHT = 1.0
# The next window's box is the neighbour mask's box grown by this many model-input pixels on
# each side: a tight box makes SAM-family models under-segment, and the chain then shrinks.
BOX_MARGIN_MODEL_PX = 5.0
# How far (model-input pixels) an organ's outline may move from one slice to the next.
STEP_MODEL_PX = 2.0


@dataclass
class StopRule:
    min_area_fraction: float = 0.005  # of the largest centre mask accepted so far (a liver tip is ~1 % of its largest slice)
    min_area_pixels: int = 4
    min_overlap: float = 0.5  # Dice(centre mask, prompt mask from the neighbour window)
    max_growth: float = 1.6  # centre area / previous centre area
    min_iou: float = 0.5
    min_intensity_inliers: float = 0.3  # fraction of mask voxels inside the reference intensity band
    # A "tail" is a run of slices whose mask is below tail_fraction of the largest. On thin slices a chain can
    # follow a small neighbour past the organ's end at a few % of its area for many slices (a 512x512x300 CT:
    # 52 slices past the liver); real organ tips stay under 3 % for at most ~6 mm (reference labels of the
    # training volumes; predicted ones up to 12 mm on example_ct), so a longer tail stops the chain.
    tail_fraction: float = 0.03
    max_tail_mm: float = 15.0

    def reason(self, f: "SliceInfo", max_area: int) -> Optional[str]:
        if f.area < max(self.min_area_pixels, self.min_area_fraction * max_area):
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
        return None


NO_STOP = StopRule(0.0, 1, -1.0, float("inf"), -1.0, -1.0, max_tail_mm=float("inf"))


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


def dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum()) + int(b.sum())
    return 2.0 * int(np.logical_and(a, b).sum()) / s if s else 1.0


BAND_PERCENTILES = (5.0, 95.0)
BAND_PAD = 0.05
# A slice keeps only the components of its mask at least this fraction of the largest one's area:
# a leak into a neighbour organ starts as a small islet and, once kept, grows the next slice's box.
MIN_COMPONENT_FRACTION = 0.3


class IntensityModel:
    """The prompted organ's intensity band (2nd–98th percentile of its voxels, widened by 10 % of its span)."""

    def __init__(self, image: np.ndarray, mask: np.ndarray):
        values = image[mask]
        if values.size < 10:
            self.lo, self.hi = -np.inf, np.inf
            return
        lo, hi = np.percentile(values, BAND_PERCENTILES)
        pad = BAND_PAD * max(hi - lo, 1e-6)
        self.lo, self.hi = lo - pad, hi + pad

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
        sy, sx = step
        # A square dilation done as two 1-D ones: the same pixels, a fraction of the time on 512x512 slices.
        reach = ndimage.binary_dilation(previous, structure=np.ones((2 * sy + 1, 1), bool))
        reach = ndimage.binary_dilation(reach, structure=np.ones((1, 2 * sx + 1), bool))
        m &= reach
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


ProgressFn = Callable[[float, str], None]
CancelFn = Callable[[], bool]


class Propagator:
    """Runs one propagation on a `WindowPredictor`; holds the per-slice contributions while it runs."""

    def __init__(
        self,
        predictor: WindowPredictor,
        rule: StopRule = StopRule(),
        progress: Optional[ProgressFn] = None,
        cancel: Optional[CancelFn] = None,
        box_margin_model_px: float = BOX_MARGIN_MODEL_PX,
        step_model_px: float = STEP_MODEL_PX,
        slice_spacing_mm: float = 1.0,
    ):
        self.p = predictor
        self.slice_spacing_mm = float(slice_spacing_mm)
        self.margin = slice_pixels(predictor.geometry, box_margin_model_px)
        step_x, step_y = slice_pixels(predictor.geometry, step_model_px)
        self.step = (max(1, int(round(step_y))), max(1, int(round(step_x))))  # (rows, cols)
        self.rule = rule
        self.progress = progress or (lambda fraction, message: None)
        self.cancel = cancel or (lambda: False)
        self._sum: Dict[int, torch.Tensor] = {}  # slice -> weighted logit sum, while windows may still add to it
        self._weight: Dict[int, float] = {}
        self._sealed: Dict[int, np.ndarray] = {}  # slice -> merged bool mask, once no window can add to it

    def _add(self, pred: WindowPrediction, lo: int, hi: int) -> None:
        for offset, weight in ((-1, SIDE_WEIGHT), (0, CENTER_WEIGHT), (1, SIDE_WEIGHT)):
            s = pred.center + offset
            if lo <= s <= hi:
                self._sum[s] = self._sum.get(s, 0) + weight * pred.logits[offset + 1]
                self._weight[s] = self._weight.get(s, 0.0) + weight

    def _grown_box(self, mask: np.ndarray):
        return grown_box(mask, self.margin)

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
    ) -> PropagationResult:
        """Propagate from `start` (already predicted as `first`) in each of `directions` (+1, -1) within [lo, hi]."""
        t0 = time.perf_counter()
        passes0 = self.p.encoder_passes
        res = result or PropagationResult(axis=self.p.axis, stack_shape=self.p.stack.shape)
        self._add(first, lo, hi)
        start_mask = fixed_start_mask if fixed_start_mask is not None else (first.logits[1] > 0).numpy()
        image = self.p.stack
        intensity = IntensityModel(image[start], start_mask)
        start_info = SliceInfo(start, first.iou, first.stability, int(start_mask.sum()))
        res.info.append(start_info)
        chains = {}
        max_area = max(start_info.area, int(largest_area))  # the stop rule's areas are relative to this
        span = max(1, sum((hi - start) if d > 0 else (start - lo) for d in directions))
        done = 0
        for d in directions:
            name = "up" if d > 0 else "down"
            chain = chains[d] = []
            prev_area = start_info.area
            previous_mask = start_mask
            tail_slices = 0
            c = start + d
            while True:
                if not (lo <= c <= hi):
                    res.stopped[name] = "volume-end" if c < 0 or c >= self.p.n_slices else "range-end"
                    break
                if self.cancel():
                    res.cancelled = True
                    res.stopped[name] = "cancelled"
                    break
                slice_image = image[c]  # normalised on each indexing: once per slice
                prompt_mask = self.merged(c)
                if prompt_mask is not None:
                    prompt_mask = constrain(prompt_mask, slice_image, intensity, previous_mask, self.step)
                box = self._grown_box(prompt_mask) if prompt_mask is not None else None
                if box is None:
                    res.stopped[name] = "vanished"
                    break
                # Encode this window and the next ones in the direction of travel, one batch.
                ahead = [c + d * i for i in range(self.p.batch_size)]
                self.p.encode([k for k in ahead if lo <= k <= hi])
                pred = self.p.predict(c, box=box)
                raw = (pred.logits[1] > 0).numpy()
                centre = constrain(raw, slice_image, intensity, previous_mask, self.step)
                area = int(centre.sum())
                tail_slices = tail_slices + 1 if area < self.rule.tail_fraction * max_area else 0
                info = SliceInfo(
                    c,
                    pred.iou,
                    pred.stability,
                    area,
                    overlap=dice(centre, prompt_mask),
                    growth=area / max(prev_area, 1),
                    intensity_inliers=intensity.inliers(slice_image, raw),
                    tail_mm=tail_slices * self.slice_spacing_mm,
                )
                reason = self.rule.reason(info, max_area)
                done += 1
                if reason:
                    info.accepted, info.reason = False, reason
                    res.info.append(info)
                    res.stopped[name] = reason
                    break
                res.info.append(info)
                self._add(pred, lo, hi)
                if c - d != start:  # the start slice still gets the other direction's first window
                    self._seal(c - d)  # windows from here on touch c and beyond only
                chain.append(c)
                max_area = max(max_area, area)
                prev_area = area
                previous_mask = centre
                self.progress(min(0.99, done / span), f"slice {c} ({name})")
                c += d
        # Final masks: the averaged windows of each slice, constrained outward from the start slice.
        if fixed_start_mask is not None:
            res.slice_masks[start] = fixed_start_mask.astype(bool)
        else:
            res.slice_masks[start] = constrain(self.merged(start), image[start], intensity, start_mask, self.step)
        for chain in chains.values():
            previous = res.slice_masks[start]
            for c in chain:
                previous = res.slice_masks[c] = constrain(self.merged(c), image[c], intensity, previous, self.step)
        res.encoder_passes += self.p.encoder_passes - passes0
        res.seconds += time.perf_counter() - t0
        return res
