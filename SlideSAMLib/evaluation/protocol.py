"""The CVPR 2025 interactive-segmentation protocol, with `Session.refine` as the interaction.

One box (the structure's tight box on its largest slice, propagated), then up to CLICKS refinement clicks.
Each click goes on the worst slice (lowest 2D Dice among the slices where the reference or the prediction has
voxels; ties: the larger error), at the centre (the pixel deepest inside, Euclidean distance transform) of that
slice's largest 4-connected error region: an include click on a missed region, an exclude click on a false one.
This follows issue 12 ("the largest error region of the worst slice"); the challenge's own script
(CVPR25_iter_eval.py of the CVPR-MedSegFMCompetition repository) takes the largest 26-connected error component
of the whole volume instead.

A click re-propagates both ways from its slice (`Session.refine` given the current result), at most up to, not
including, the nearest slice already prompted on each side (the box's slice, earlier clicks' slices). Each side
stops where the new masks agree with the current ones or leave them (`Session.refine`), and only the slices `session.refine_span` names are
replaced: a local correction, as an annotator expects. A click that empties its slice erases the slices beyond it
on the side where no prompted slice lies (the structure ends there); between prompted slices, that slice only.
`agree_dice=None` replaces instead every slice between the prompted ones, without `current` (session 6's rule,
for comparison: benchmarks/RESULTS_protocol.md).

After each interaction: 3D Dice and surface Dice at 2 mm. Areas under the curves as the challenge computes them:
the trapezoid rule over the CLICKS click interactions at unit spacing (the box excluded; at most CLICKS - 1).
"""
from typing import List, Optional, Tuple

import numpy as np
from scipy import ndimage

from ..errors import InputError
from ..session import AGREE_DICE, DEPART_DICE, refine_span
from . import metrics

CLICKS = 5


def error_click(pred: np.ndarray, truth: np.ndarray) -> Optional[Tuple[int, int, int, bool]]:
    """(slice k, x, y, include) of the next click, or None when the prediction is exact."""
    per_slice = metrics.slice_dice(pred, truth)
    wrong = {k: int((pred[k] != truth[k]).sum()) for k, d in per_slice.items() if d < 1.0}
    if not wrong:
        return None
    k = min(wrong, key=lambda s: (per_slice[s], -wrong[s]))
    best = None
    for region, include in ((truth[k] & ~pred[k], True), (pred[k] & ~truth[k], False)):
        labels, n = ndimage.label(region)
        if n:
            sizes = ndimage.sum_labels(region, labels, range(1, n + 1))
            if best is None or sizes.max() > best[0]:
                best = (sizes.max(), labels == 1 + int(np.argmax(sizes)), include)
    _, part, include = best
    depth = ndimage.distance_transform_edt(np.pad(part, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(depth)), depth.shape)
    return k, int(x), int(y), include


def _score(pred, truth, spacing) -> dict:
    return {"dice": round(metrics.dice(pred, truth), 4),
            "surface_dice_2mm": round(metrics.surface_dice(pred, truth, spacing, 2.0), 4)}


def auc(values: List[float]) -> float:
    """The challenge's area under a curve: trapezoids over the click interactions, unit spacing."""
    v = np.asarray(values[-CLICKS:], dtype=float)
    return round(float(np.sum((v[1:] + v[:-1]) / 2.0)), 4)


def interactive(session, truth: np.ndarray, spacing, k0: int, start_pred: np.ndarray, clicks: int = CLICKS,
                agree_dice: Optional[float] = AGREE_DICE, depart_dice: Optional[float] = DEPART_DICE) -> dict:
    """The protocol on one structure along axis k, from the box's propagated result `start_pred`."""
    pred = start_pred.astype(bool).copy()
    n = truth.shape[0]
    prompted = {k0}
    curve = [dict(interaction="box", **_score(pred, truth, spacing))]
    passes0 = session.encoder_passes
    for i in range(clicks):
        click = error_click(pred, truth)
        step = {"interaction": f"click-{i + 1}"}
        if click is None:  # nothing left to correct: the curve stays where it is
            curve.append({**step, **{k: curve[-1][k] for k in ("dice", "surface_dice_2mm")}, "click": None})
            continue
        k, x, y, include = click
        others = prompted - {k}
        lo = max([a for a in others if a < k], default=-1) + 1
        hi = min([a for a in others if a > k], default=n) - 1
        step["click"] = {"slice": k, "x": x, "y": y, "include": include}
        current = None if agree_dice is None else {int(s): pred[s] for s in np.nonzero(pred.any(axis=(1, 2)))[0]}
        try:
            res = session.refine(k, [((x, y, k), include)], pred[k], axis=2, slice_range=(lo, hi),
                                 largest_area=int(pred.reshape(n, -1).sum(axis=1).max()), current=current,
                                 agree_dice=agree_dice or AGREE_DICE, depart_dice=depart_dice)
        except InputError as exc:  # e.g. the click's box search found no structure: the click changes nothing
            step["refused"] = str(exc)
        else:
            if res.slice_masks[k].any():
                a, b = refine_span(res, (lo, hi))
            else:  # the click emptied its slice: where no prompted slice lies beyond it, the structure ends there
                a, b = (k, n - 1) if hi == n - 1 and lo > 0 else (0, k) if lo == 0 and hi < n - 1 else (k, k)
            pred[a:b + 1] = res.volume_mask().astype(bool)[a:b + 1]  # slices the result did not write are empty
            step["replaced"] = [int(a), int(b)]
            step["stopped"] = dict(res.stopped)
            prompted.add(k)
        curve.append({**step, **_score(pred, truth, spacing)})
    dice, nsd = [c["dice"] for c in curve], [c["surface_dice_2mm"] for c in curve]
    return {"curve": curve, "dice_auc": auc(dice), "surface_dice_auc": auc(nsd), "dice_final": dice[-1],
            "surface_dice_final": nsd[-1], "encoder_passes": session.encoder_passes - passes0}
