"""`Session`: one volume, one model, one embedding cache — the engine's main entry point.

Coordinates are voxel indices in ITK / Slicer IJK order: i = column (x), j = row (y),
k = slice (z).  The numpy array of the volume is (k, j, i).  A prompt lies on one
slice; the slice axis is the IJK axis along which all its coordinates share one index
(k when that is ambiguous, e.g. a single click), or the one given.
"""
import logging
import threading
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np

from .cache import DEFAULT_CACHE_BYTES, EmbeddingCache
from .checkpoint import SlideSAMModel
from .clicks import ClickSearch, apply_clicks, cleared, edit_mask
from .errors import InputError
from .evaluation.metrics import dice
from .predictor import WindowPredictor, new_cache_owner
from .preprocess import guess_modality, normalisation_for
from .propagation import CancelFn, ProgressFn, PropagationResult, Propagator, SliceDoneFn, StopRule, box_of
from .stop_reasons import STRUCTURE_ENDS

log = logging.getLogger("slidesam")
Point3 = Sequence[float]
DIRECTIONS = {"both": (1, -1), "up": (1,), "down": (-1,)}
AXIS_NAMES = "ijk"  # slice axis 0, 1, 2 by name (the CLI's --axis i|j|k)
# Session.refine with `current` (the result being refined): each side of the re-propagation ends at the first slice
# where the current result has a mask and the new one
#   * has 2D Dice >= AGREE_DICE with it ("agrees": the correction has converged), or
#   * has 2D Dice <= DEPART_DICE with it, or is rejected by the stop rule (vanished included) ("departs": the new
#     chain cannot replace the result there);
# the current masks are kept from that slice on. Where the current result has no mask the new chain extends it
# and the stop rule alone says where it ends.
# Evidence (benchmarks/RESULTS_protocol.md; training folders only, 13 structures, the CVPR 2025 protocol of 5 clicks):
# agreement at Dice 0.5 / 0.8 / 0.9 gave mean Dice AUC 2.743 / 2.695 / 2.690 (replacing everything between prompted
# slices, session 6: 2.517) and 8 / 10 / 13 of 65 clicks that cost more than 0.02 Dice (session 6: 16); without the
# departure stop (agreement 0.9 alone) 2.555 and 17 of 65. DEPART_DICE 0: no overlap at all (kidney_right of
# mr_abdomen: the first click's chain had Dice 0.00 with every slice it replaced).
AGREE_DICE = 0.5
DEPART_DICE = 0.0

class Session:
    def __init__(
        self,
        model: SlideSAMModel,
        volume: np.ndarray,
        modality: str = "auto",
        cache: Optional[EmbeddingCache] = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        stop_rule: Optional[StopRule] = None,
        spacing: Optional[Sequence[float]] = None,
    ):
        """`spacing` (required): voxel size in mm along (i, j, k), as ITK and Slicer give it: the box margin, the
        outline's step and the stop rule's tail are lengths in mm, so a missing spacing is refused, never assumed
        (as the server's upload and the CLI do)."""
        volume = np.asarray(volume)
        if volume.ndim != 3:
            raise InputError(f"the volume is {volume.ndim}D (shape {volume.shape}): SlideSAM needs a 3D volume")
        if min(volume.shape) < 1:
            raise InputError(f"the volume is empty (shape {volume.shape})")
        if spacing is None:
            raise InputError("no voxel spacing given: pass spacing=(si, sj, sk) in mm, e.g. image.GetSpacing(); SlideSAM measures lengths in mm and assumes none")
        try:
            self.spacing = tuple(float(v) for v in spacing)
            usable = len(self.spacing) == 3 and all(np.isfinite(self.spacing)) and min(self.spacing) > 0
        except (TypeError, ValueError):  # not numbers ("3 mm") or not a sequence
            usable = False
        if not usable:
            raise InputError(f"voxel spacing {spacing!r} is not three positive sizes in mm along (i, j, k)")
        self.model = model
        self.volume = volume
        self.shape_ijk = tuple(reversed(volume.shape))  # (ni, nj, nk)
        if modality == "auto":
            self.modality, self.modality_reason = guess_modality(volume)
            log.info("SlideSAM: modality %s (set the modality to override)", self.modality_reason)
        else:
            self.modality, self.modality_reason = modality, f"{modality.upper()}: given"
        self.cache = cache if cache is not None else EmbeddingCache(cache_bytes)
        self.cache_owner = new_cache_owner()  # this session's windows in a shared cache
        self.stop_rule = stop_rule or StopRule()
        self._normalisation = normalisation_for(volume, model.spec.preprocessing, self.modality)
        self._predictors = {}
        self._lock = threading.Lock()  # one propagation at a time per session

    # -- helpers -------------------------------------------------------------
    def predictor(self, axis: int) -> WindowPredictor:
        if axis not in self._predictors:
            self._predictors[axis] = WindowPredictor(
                self.model, self.volume, axis, self.modality, cache=self.cache, cache_owner=self.cache_owner, normalisation=self._normalisation
            )
        return self._predictors[axis]

    def stack_spacing(self, axis: int) -> Tuple[float, float, float]:
        """(slice, row, col) voxel size in mm of the stack along `axis` (its rows and cols follow numpy order)."""
        rows, cols = (a for a in (2, 1, 0) if a != axis)
        return self.spacing[axis], self.spacing[rows], self.spacing[cols]

    @property
    def encoder_passes(self) -> int:
        return sum(p.encoder_passes for p in self._predictors.values())

    def _check_inside(self, xyz: Point3, what: str) -> np.ndarray:
        try:
            p = np.asarray(xyz, dtype=float)
        except (TypeError, ValueError):
            p = np.full(0, np.nan)
        if p.shape != (3,) or not np.all(np.isfinite(p)):
            raise InputError(f"{what} {xyz!s} is not an (i, j, k) voxel coordinate")
        hi = np.array(self.shape_ijk) - 0.5
        if np.any(p < -0.5) or np.any(p > hi):
            where = ", ".join(f"{v:g}" for v in np.round(p, 2))
            size = " x ".join(str(int(n)) for n in self.shape_ijk)
            raise InputError(f"{what} ({where}) is outside the volume (size {size} voxels along i, j, k): place the prompt on the image")
        return p

    def _slice_axis(self, coords: np.ndarray, axis: Optional[int]) -> int:
        rounded = np.rint(coords)
        shared = [a for a in (2, 1, 0) if np.all(rounded[:, a] == rounded[0, a])]
        if axis is not None:
            if axis not in (0, 1, 2):
                raise InputError(f"slice axis {axis} is not 0 (i), 1 (j) or 2 (k)")
            if axis not in shared:
                raise InputError(f"the prompt does not lie on one slice along axis {AXIS_NAMES[axis]}: put all its points on one slice")
            return axis
        if not shared:
            raise InputError("the prompt's points do not share a slice: put the box and clicks on one slice")
        return shared[0]  # k first when several axes qualify

    @staticmethod
    def _in_plane(p: np.ndarray, axis: int) -> Tuple[float, float]:
        """(x=col, y=row) of an IJK point in the stack of `axis` (stack rows/cols follow numpy order)."""
        # numpy (k, j, i) with the slice axis removed: rows = the earlier remaining axis, cols = the later.
        remaining = [a for a in (2, 1, 0) if a != axis]  # IJK axes in numpy order
        return float(p[remaining[1]]), float(p[remaining[0]])

    def _range(self, axis: int, slice_range: Optional[Tuple[int, int]]) -> Tuple[int, int]:
        n = self.shape_ijk[axis]
        if slice_range is None:
            return 0, n - 1
        lo, hi = sorted(int(v) for v in slice_range)
        if lo < 0 or hi >= n:
            raise InputError(f"slice range {lo}..{hi} is outside 0..{n - 1} along {AXIS_NAMES[axis]}")
        return lo, hi

    # -- public API ------------------------------------------------------------
    def segment(
        self,
        box: Optional[Tuple[Point3, Point3]] = None,
        points: Sequence[Tuple[Point3, bool]] = (),
        axis: Optional[int] = None,
        direction: str = "both",
        slice_range: Optional[Tuple[int, int]] = None,
        progress: Optional[ProgressFn] = None,
        cancel: Optional[CancelFn] = None,
        slice_done: Optional[SliceDoneFn] = None,
    ) -> PropagationResult:
        """Propagate from a box and/or clicks on one slice.

        box: two opposite corners (i, j, k) in voxel coordinates; points: [((i, j, k), include), ...].
        direction: "both", "up" (increasing slice index) or "down"; slice_range: inclusive (first, last).
        With a box-only model (the embedded default) clicks never reach the decoder: clicks alone start the box
        search of `SlideSAMLib.clicks`, clicks beside a box edit the box's mask (`result.prompt` says which).
        Returns a `PropagationResult` (masks of the slices written, per-slice scores, stop reasons).
        slice_done(index, mask): each slice's mask as it is accepted, while the run goes on (front ends show it).
        """
        if direction not in DIRECTIONS:
            raise InputError(f"direction '{direction}' is not one of both, up, down")
        if box is None and not points:
            raise InputError("empty prompt: give a box, or at least one include click")
        corners = [self._check_inside(c, "box corner") for c in box] if box is not None else []
        if box is not None and len(corners) != 2:
            raise InputError("a box needs exactly two corners")
        pts = [(self._check_inside(p, "click"), bool(inc)) for p, inc in points]
        if pts and not any(inc for _, inc in pts) and box is None:
            raise InputError("only exclude clicks were given: add an include click or a box")
        allp = np.array(corners + [p for p, _ in pts])
        ax = self._slice_axis(allp, axis)
        k = int(np.rint(allp[0, ax]))
        lo, hi = self._range(ax, slice_range)
        if not lo <= k <= hi:
            raise InputError(f"the prompt's slice {k} is outside the slice range {lo}..{hi}")
        box2d = None
        if box is not None:
            (x0, y0), (x1, y1) = (self._in_plane(c, ax) for c in corners)
            x0, x1 = sorted((x0, x1))
            y0, y1 = sorted((y0, y1))
            if x1 - x0 < 1 or y1 - y0 < 1:
                raise InputError(f"the box ({x0:g}, {y0:g})-({x1:g}, {y1:g}) has zero size on slice {k}: drag a box around the structure")
            box2d = (x0, y0, x1, y1)
        points2d = [(*self._in_plane(p, ax), inc) for p, inc in pts]
        with self._lock:
            pred = self.predictor(ax)
            passes = pred.encoder_passes
            pred.encode([k])
            if self.model.supports_points or not points2d:
                first = pred.predict(k, box=box2d, points=points2d)
                kind = "box+points" if box2d is not None and points2d else ("points" if points2d else "box")
            elif box2d is None:  # a box-only model: find the box the click means
                pixel_mm = float(np.mean([self.spacing[a] for a in range(3) if a != ax]))
                first = ClickSearch(pred, pixel_mm).predict(k, points2d)
                kind = "click-search"
            else:  # a box-only model's decoder is not given the clicks: they edit its mask
                first = apply_clicks(pred.predict(k, box=box2d), points2d)
                kind = "box+click-edits"
            if progress:
                progress(0.0, f"slice {k} (prompt)")
            prop = Propagator(pred, self.stack_spacing(ax), self.stop_rule, progress, cancel, slice_done=slice_done)
            box_area = (box2d[2] - box2d[0]) * (box2d[3] - box2d[1]) if box2d is not None else None
            result = prop.run(k, first, DIRECTIONS[direction], lo, hi, prompt_box_area=box_area)
            result.encoder_passes = pred.encoder_passes - passes  # the prompt's own window included
            result.prompt = kind
            return result

    def restart(
        self,
        slice_mask: np.ndarray,
        slice_index: int,
        axis: int = 2,
        direction: str = "up",
        slice_range: Optional[Tuple[int, int]] = None,
        progress: Optional[ProgressFn] = None,
        cancel: Optional[CancelFn] = None,
        largest_area: Optional[int] = None,
        slice_done: Optional[SliceDoneFn] = None,
    ) -> PropagationResult:
        """Propagate again from a corrected 2D mask on `slice_index` towards `direction` ("up" or "down").

        The result holds the corrected slice unchanged and new masks on that side only: the
        caller replaces that side of its segment (everything beyond the slice in that direction).
        `largest_area`: pixels of the structure's largest slice along `axis` (e.g. of the segment being
        corrected); the stop rule's limits are fractions of it. Default: the corrected mask's own area, which
        near an organ's end is small and lets the chain run on (benchmarks/RESULTS.md §1).
        """
        if direction not in ("up", "down"):
            raise InputError(f"restart direction '{direction}' must be up or down")
        if axis not in (0, 1, 2):
            raise InputError(f"slice axis {axis} is not 0 (i), 1 (j) or 2 (k)")
        pred = self.predictor(axis)
        if not 0 <= slice_index < pred.n_slices:
            raise InputError(f"slice {slice_index} is outside 0..{pred.n_slices - 1} along {AXIS_NAMES[axis]}")
        mask = np.asarray(slice_mask).astype(bool)
        if mask.shape != pred.stack.shape[1:]:
            raise InputError(f"the corrected mask has shape {mask.shape}, the slice has {pred.stack.shape[1:]}")
        box = box_of(mask)
        if box is None:
            raise InputError(f"slice {slice_index} is empty: draw the corrected structure on it before restarting")
        if largest_area is not None and (not np.isfinite(largest_area) or largest_area < 0):
            raise InputError(f"largest_area {largest_area} is not a pixel count (>= 0)")
        lo, hi = self._range(axis, slice_range)
        x0, y0, x1, y1 = box
        with self._lock:
            passes = pred.encoder_passes
            pred.encode([slice_index])
            first = pred.predict(slice_index, box=(x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)))
            prop = Propagator(pred, self.stack_spacing(axis), self.stop_rule, progress, cancel, slice_done=slice_done)
            result = prop.run(slice_index, first, DIRECTIONS[direction], lo, hi, fixed_start_mask=mask, largest_area=int(largest_area or 0))
            result.encoder_passes = pred.encoder_passes - passes
            result.prompt = "restart"
            return result

    # -- refinement (issue 12 §4) ------------------------------------------------------
    def refine(
        self,
        slice_index: int,
        points: Sequence[Tuple[Point3, bool]],
        slice_mask: np.ndarray,
        axis: int = 2,
        slice_range: Optional[Tuple[int, int]] = None,
        largest_area: Optional[int] = None,
        progress: Optional[ProgressFn] = None,
        cancel: Optional[CancelFn] = None,
        current: Optional[Dict[int, np.ndarray]] = None,
        agree_dice: float = AGREE_DICE,
        depart_dice: Optional[float] = DEPART_DICE,
        slice_done: Optional[SliceDoneFn] = None,
    ) -> PropagationResult:
        """Correct slice `slice_index` of a propagated result with clicks, then propagate again from it both ways.

        `current`: the result's masks along `axis` (index -> bool (rows, cols); a missing index is empty). Given, the
        refinement is local: each side stops at the first slice whose new mask agrees with the current one (2D Dice
        >= `agree_dice`: "agrees") or cannot replace it (Dice <= `depart_dice`, or the stop rule rejected it, where
        the current mask is not empty: "departs"; `depart_dice` None: never); that slice is not in the result. A
        side that ends by the stop rule where the current result has nothing clears the rest of the range there. An emptied slice propagates
        nothing and keeps the current masks on both sides ("kept"). `refine_span(result, slice_range)` says which
        slices the caller replaces with the result; it keeps its own masks elsewhere.

        points: [((i, j, k), include), ...] on that slice; slice_mask: the result's current mask of that slice
        ((rows, cols) of the slice along `axis`, e.g. `result.slice_masks[k]`). A box-only model edits the mask
        (`clicks.edit_mask`: an exclude click removes its part, an include click off the mask adds what the click's
        box search finds there); a point-capable model decodes the mask's box with the clicks. The corrected slice
        is kept as it is and propagation runs up and down from it within `slice_range`; the caller replaces the
        slices `refine_span(result, slice_range)` names (without `current`: the whole range; an all-excluded slice
        comes back empty, stopped "vanished" both ways). Windows already in the cache are not encoded again.
        `largest_area`: as in `restart`. slice_done(index, mask): as in `segment`, the corrected slice first, then each
        slice as it is accepted (only slices the result holds: a side's stopping slice, "agrees" / "departs", is not sent).
        """
        if axis not in (0, 1, 2):
            raise InputError(f"slice axis {axis} is not 0 (i), 1 (j) or 2 (k)")
        pred = self.predictor(axis)
        if not 0 <= int(slice_index) < pred.n_slices:
            raise InputError(f"slice {slice_index} is outside 0..{pred.n_slices - 1} along {'ijk'[axis]}")
        k = int(slice_index)
        mask = np.asarray(slice_mask).astype(bool)
        if mask.shape != pred.stack.shape[1:]:
            raise InputError(f"the slice mask has shape {mask.shape}, the slice has {pred.stack.shape[1:]}")
        if not points:
            raise InputError("no refinement click: give at least one include or exclude click")
        pts = [(self._check_inside(p, "click"), bool(inc)) for p, inc in points]
        if any(int(np.rint(p[axis])) != k for p, _ in pts):
            raise InputError(f"a refinement click is not on slice {k} along {'ijk'[axis]}: put the clicks on the slice being corrected")
        clicks2d = [(*self._in_plane(p, axis), inc) for p, inc in pts]
        lo, hi = self._range(axis, slice_range)
        if not lo <= k <= hi:
            raise InputError(f"slice {k} is outside the slice range {lo}..{hi}")
        stop_at = None
        if current is not None:
            stop_at = _local_stop(self._current_masks(current, pred.stack.shape[1:]), agree_dice, depart_dice)
        with self._lock:
            passes = pred.encoder_passes
            pred.encode([k])
            if self.model.supports_points:
                corrected = self._decode_refinement(pred, k, mask, clicks2d)
            else:
                pixel_mm = float(np.mean([self.spacing[a] for a in range(3) if a != axis]))
                corrected = edit_mask(mask, clicks2d, ClickSearch(pred, pixel_mm), k)
            box = box_of(corrected)
            if box is None:
                side = "kept" if current is not None else "vanished"  # nothing to propagate from an empty slice
                if slice_done is not None:
                    slice_done(k, corrected)
                result = PropagationResult(axis=axis, stack_shape=pred.stack.shape, slice_masks={k: corrected},
                                           stopped={"up": side, "down": side}, prompt="refine")
                return result
            x0, y0, x1, y1 = box
            first = pred.predict(k, box=(x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)))
            first = cleared(first, mask & ~corrected)  # what a click removed stays out of the neighbours' prompts
            prop = Propagator(pred, self.stack_spacing(axis), self.stop_rule, progress, cancel, slice_done=slice_done)
            result = prop.run(k, first, DIRECTIONS["both"], lo, hi, fixed_start_mask=corrected, largest_area=int(largest_area or 0),
                              stop_at=stop_at)
            result.encoder_passes = pred.encoder_passes - passes
            result.prompt = "refine"
            return result

    @staticmethod
    def _current_masks(current, plane_shape) -> Dict[int, np.ndarray]:
        if not isinstance(current, dict):
            raise InputError("current is not a {slice index: 2D mask} mapping of the result being refined")
        out = {}
        for s, m in current.items():
            m = np.asarray(m)
            if m.shape != tuple(plane_shape):
                raise InputError(f"the current mask of slice {s} has shape {m.shape}, the slices have {tuple(plane_shape)}")
            out[int(s)] = m.astype(bool)
        return out

    @staticmethod
    def _decode_refinement(pred: WindowPredictor, k: int, mask: np.ndarray, clicks2d) -> np.ndarray:
        """A point-capable decoder's corrected slice: the box of the mask and the include clicks, with every click."""
        xs = [x for x, _, inc in clicks2d if inc]
        ys = [y for _, y, inc in clicks2d if inc]
        b = box_of(mask)
        if b is not None:
            xs, ys = xs + [b[0], b[2]], ys + [b[1], b[3]]
        box = (min(xs), min(ys), max(xs), max(ys)) if xs and max(xs) - min(xs) >= 1 and max(ys) - min(ys) >= 1 else None
        return (pred.predict(k, box=box, points=clicks2d).logits[1] > 0).numpy()


def _local_stop(current: Dict[int, np.ndarray], agree_dice: float, depart_dice: Optional[float]):
    """The Propagator's `stop_at` for a refinement of `current` (see Session.refine)."""
    if not 0.0 < agree_dice <= 1.0:
        raise InputError(f"agreement Dice {agree_dice} is not in (0, 1]")
    if depart_dice is not None and not 0.0 <= depart_dice < agree_dice:
        raise InputError(f"departure Dice {depart_dice} is not in [0, {agree_dice})")

    def stop_at(c: int, mask: np.ndarray, verdict: Optional[str]) -> Optional[str]:
        there = current.get(c)
        if there is None or not there.any():
            return None  # a mask where the result has none extends it; the stop rule says where it ends
        d = dice(mask, there)
        if d >= agree_dice:
            return "agrees"
        if depart_dice is not None and (d <= depart_dice or verdict is not None):
            return "departs"
        return None

    return stop_at


def refine_span(result: PropagationResult, slice_range: Optional[Tuple[int, int]] = None) -> Tuple[int, int]:
    """(first, last), inclusive: the slices a caller replaces with a refinement's `result.slice_masks` (a slice of
    the span missing there is empty); it keeps its own masks of every other slice.

    Per side: where the structure ends (a stop rule fired, or it vanished) the span runs to the end of
    `slice_range` (default: the whole axis), clearing what lay beyond; where the new masks agreed with the current
    ones ("agrees"), left them ("departs"), were kept ("kept": an emptied slice with `current`), were cancelled, or
    reached the range's end, it ends at the last slice the refinement wrote."""
    slices = sorted(result.slice_masks)
    if not slices:
        raise InputError("the refinement wrote no slice: there is nothing to replace")
    n = result.stack_shape[0]
    lo, hi = (0, n - 1) if slice_range is None else sorted(int(v) for v in slice_range)
    first = lo if result.stopped.get("down") in STRUCTURE_ENDS else slices[0]
    last = hi if result.stopped.get("up") in STRUCTURE_ENDS else slices[-1]
    return first, last
