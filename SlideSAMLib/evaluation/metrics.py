"""Overlap and surface metrics on (z, y, x) boolean volumes with (x, y, z) spacing in mm.

Dice is the one Dice of the package (two empty masks agree: 1.0). Surface Dice and HD95 are MONAI's
(`compute_surface_dice` with DeepMind's surface elements weighted by their physical area, `use_subvoxels=True`;
`compute_hausdorff_distance`), on physical distances from the voxel spacing. monai is the `eval` extra: the
engine imports this module for `dice` only, and never imports monai.
"""
from typing import Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError


def monai_metrics():
    """monai.metrics, or one line saying how to install it."""
    try:
        from monai import metrics
    except ImportError as exc:
        raise InputError("surface Dice and HD95 (slidesam eval) need monai: pip install 'slidesam[eval]' (or 'monai>=1.6')") from exc
    return metrics


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """2|A and B| / (|A| + |B|); 1.0 when both masks are empty (nothing to find, nothing found)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    s = int(a.sum()) + int(b.sum())
    return 2.0 * int(np.logical_and(a, b).sum()) / s if s else 1.0


def _monai_inputs(a: np.ndarray, b: np.ndarray, spacing_xyz: Sequence[float]):
    import torch

    as_tensor = lambda m: torch.from_numpy(np.ascontiguousarray(m, dtype=np.float32)[None, None])  # [B=1, C=1, z, y, x]
    return as_tensor(a), as_tensor(b), [float(v) for v in reversed(tuple(spacing_xyz))]  # spacing in array order


def surface_dice(a: np.ndarray, b: np.ndarray, spacing_xyz, tolerance_mm: float = 2.0) -> float:
    """Share of both surfaces (by area) lying within `tolerance_mm` of the other surface (Nikolov et al.)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    if not a.any() and not b.any():
        return 1.0
    if not a.any() or not b.any():
        return 0.0
    ta, tb, spacing = _monai_inputs(a, b, spacing_xyz)
    value = monai_metrics().compute_surface_dice(ta, tb, [float(tolerance_mm)], include_background=True, spacing=spacing, use_subvoxels=True)
    return float(value.item())


def hd95(a: np.ndarray, b: np.ndarray, spacing_xyz) -> Optional[float]:
    """95th-percentile Hausdorff distance (max of the two directed ones), mm; None when one mask is empty."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    if not a.any() and not b.any():
        return 0.0
    if not a.any() or not b.any():
        return None
    ta, tb, spacing = _monai_inputs(a, b, spacing_xyz)
    return float(monai_metrics().compute_hausdorff_distance(ta, tb, include_background=True, percentile=95, spacing=spacing).item())


def slice_dice(pred: np.ndarray, truth: np.ndarray) -> dict:
    """{slice index: Dice} along numpy axis 0 for every slice where either mask has voxels."""
    out = {}
    for k in range(truth.shape[0]):
        if truth[k].any() or pred[k].any():
            out[k] = dice(pred[k], truth[k])
    return out


def extent(mask: np.ndarray) -> Optional[Tuple[int, int]]:
    ks = np.nonzero(mask.reshape(mask.shape[0], -1).any(axis=1))[0]
    return (int(ks[0]), int(ks[-1])) if ks.size else None
