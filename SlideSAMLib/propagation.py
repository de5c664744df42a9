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
Thresholds were tuned on the training volumes only (see benchmarks/RESULTS.md).
"""
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .errors import Cancelled
from .predictor import WindowPrediction, WindowPredictor

CENTER_WEIGHT = 2.0
SIDE_WEIGHT = 1.0


@dataclass
class StopRule:
    min_area_fraction: float = 0.02  # of the largest centre mask accepted so far
    min_area_pixels: int = 4
    min_overlap: float = 0.5  # Dice(centre mask, prompt mask from the neighbour window)
    max_growth: float = 1.6  # centre area / previous centre area
    min_iou: float = 0.5
    min_intensity_inliers: float = 0.6  # fraction of mask voxels inside the reference intensity band

    def reason(self, f: "SliceInfo", max_area: int) -> Optional[str]:
        if f.area < max(self.min_area_pixels, self.min_area_fraction * max_area):
            return "vanished"
        if f.overlap < self.min_overlap:
            return "jumped"
        if f.growth > self.max_growth:
            return "grew"
        if f.iou < self.min_iou:
            return "low-iou"
        if f.intensity_inliers < self.min_intensity_inliers:
            return "intensity"
        return None


NO_STOP = StopRule(0.0, 1, -1.0, float("inf"), -1.0, -1.0)


@dataclass
class SliceInfo:
    index: int
    iou: float
    stability: float
    area: int
    overlap: float = 1.0
    growth: float = 1.0
    intensity_inliers: float = 1.0
    accepted: bool = True
    reason: Optional[str] = None

    def as_dict(self) -> dict:
        return dict(vars(self))


@dataclass
class PropagationResult:
    axis: int  # IJK slice axis (0 = i, 1 = j, 2 = k)
    stack_shape: Tuple[int, int, int]  # (slices, rows, cols) along that axis
    slice_masks: Dict[int, np.ndarray] = field(default_factory=dict)  # index -> bool (rows, cols)
    info: List[SliceInfo] = field(default_factory=list)
    stopped: Dict[str, str] = field(default_factory=dict)  # "up"/"down" -> reason
    cancelled: bool = False
    encoder_passes: int = 0
    seconds: float = 0.0

    @property
    def slices(self) -> List[int]:
        return sorted(self.slice_masks)

    def volume_mask(self) -> np.ndarray:
        """uint8 (z, y, x) volume: the written slices set, everything else 0."""
        stack = np.zeros(self.stack_shape, dtype=np.uint8)
        for k, m in self.slice_masks.items():
            stack[k] = m
        return np.ascontiguousarray(np.moveaxis(stack, 0, 2 - self.axis))

    def summary(self) -> dict:
        return {
            "axis": "ijk"[self.axis],
            "slices": [self.slices[0], self.slices[-1]] if self.slice_masks else [],
            "slices_written": len(self.slice_masks),
            "stopped": self.stopped,
            "cancelled": self.cancelled,
            "encoder_passes": self.encoder_passes,
            "seconds": round(self.seconds, 2),
        }


def box_of(mask: np.ndarray) -> Optional[Tuple[int, int, int, int]]:
    ys, xs = np.nonzero(mask)
    if not xs.size:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum()) + int(b.sum())
    return 2.0 * int(np.logical_and(a, b).sum()) / s if s else 1.0


class IntensityModel:
    """The prompted organ's intensity band (2nd–98th percentile of its voxels, widened by 10 % of its span)."""

    def __init__(self, image: np.ndarray, mask: np.ndarray):
        values = image[mask]
        if values.size < 10:
            self.lo, self.hi = -np.inf, np.inf
            return
        lo, hi = np.percentile(values, (2, 98))
        pad = 0.1 * max(hi - lo, 1e-6)
        self.lo, self.hi = lo - pad, hi + pad

    def inliers(self, image: np.ndarray, mask: np.ndarray) -> float:
        values = image[mask]
        if not values.size:
            return 0.0
        return float(np.mean((values >= self.lo) & (values <= self.hi)))


ProgressFn = Callable[[float, str], None]
CancelFn = Callable[[], bool]


class Propagator:
    """Runs one propagation on a `WindowPredictor`; holds the per-slice contributions while it runs."""

    def __init__(self, predictor: WindowPredictor, rule: StopRule = StopRule(), progress: Optional[ProgressFn] = None, cancel: Optional[CancelFn] = None):
        self.p = predictor
        self.rule = rule
        self.progress = progress or (lambda fraction, message: None)
        self.cancel = cancel or (lambda: False)
        self._sum: Dict[int, torch.Tensor] = {}
        self._weight: Dict[int, float] = {}

    def _add(self, pred: WindowPrediction, lo: int, hi: int) -> None:
        for offset, weight in ((-1, SIDE_WEIGHT), (0, CENTER_WEIGHT), (1, SIDE_WEIGHT)):
            s = pred.center + offset
            if lo <= s <= hi:
                self._sum[s] = self._sum.get(s, 0) + weight * pred.logits[offset + 1]
                self._weight[s] = self._weight.get(s, 0.0) + weight

    def merged(self, s: int) -> Optional[np.ndarray]:
        if s not in self._sum:
            return None
        return (self._sum[s] / self._weight[s] > 0).numpy()

    def run(
        self,
        start: int,
        first: WindowPrediction,
        directions: Sequence[int],
        lo: int,
        hi: int,
        fixed_start_mask: Optional[np.ndarray] = None,
        result: Optional[PropagationResult] = None,
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
        accepted = {start}
        max_area = start_info.area
        span = max(1, sum((hi - start) if d > 0 else (start - lo) for d in directions))
        done = 0
        for d in directions:
            name = "up" if d > 0 else "down"
            prev_area = start_info.area
            c = start + d
            while True:
                if not (lo <= c <= hi):
                    res.stopped[name] = "volume-end" if c < 0 or c >= self.p.n_slices else "range-end"
                    break
                if self.cancel():
                    res.cancelled = True
                    res.stopped[name] = "cancelled"
                    break
                prompt_mask = self.merged(c)
                box = box_of(prompt_mask) if prompt_mask is not None else None
                if box is None:
                    res.stopped[name] = "vanished"
                    break
                # Encode this window and the next ones in the direction of travel, one batch.
                ahead = [c + d * i for i in range(self.p.batch_size)]
                self.p.encode([k for k in ahead if lo <= k <= hi])
                pred = self.p.predict(c, box=box)
                centre = (pred.logits[1] > 0).numpy()
                area = int(centre.sum())
                info = SliceInfo(
                    c,
                    pred.iou,
                    pred.stability,
                    area,
                    overlap=dice(centre, prompt_mask),
                    growth=area / max(prev_area, 1),
                    intensity_inliers=intensity.inliers(image[c], centre),
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
                accepted.add(c)
                max_area = max(max_area, area)
                prev_area = area
                self.progress(min(0.99, done / span), f"slice {c} ({name})")
                c += d
        for s in accepted:
            res.slice_masks[s] = self.merged(s)
        if fixed_start_mask is not None:
            res.slice_masks[start] = fixed_start_mask.astype(bool)
        res.encoder_passes += self.p.encoder_passes - passes0
        res.seconds += time.perf_counter() - t0
        return res
