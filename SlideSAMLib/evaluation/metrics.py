"""Overlap and surface metrics on (z, y, x) boolean volumes with (x, y, z) spacing in mm.

Surfaces are the mask voxels with a 6-neighbour outside the mask (the volume border counts
as outside); distances are between surface-voxel centres, in mm, from SimpleITK's Maurer
distance map on the other mask's surface.
"""
from typing import Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    s = int(a.sum()) + int(b.sum())
    return 2.0 * int(np.logical_and(a, b).sum()) / s if s else 1.0


def surface(mask: np.ndarray) -> np.ndarray:
    m = np.pad(mask.astype(bool), 1)
    inner = m.copy()
    for axis in range(3):
        inner &= np.roll(m, 1, axis) & np.roll(m, -1, axis)
    return (m & ~inner)[1:-1, 1:-1, 1:-1]


def _distance_to(surf: np.ndarray, spacing_xyz: Sequence[float]) -> np.ndarray:
    img = sitk.GetImageFromArray(surf.astype(np.uint8))
    img.SetSpacing(tuple(float(s) for s in spacing_xyz))
    d = sitk.SignedMaurerDistanceMap(img, insideIsPositive=False, squaredDistance=False, useImageSpacing=True)
    return np.maximum(sitk.GetArrayFromImage(d), 0.0)


def surface_distances(a: np.ndarray, b: np.ndarray, spacing_xyz: Sequence[float]) -> Tuple[np.ndarray, np.ndarray]:
    """(distances of a's surface voxels to b's surface, and of b's to a's), mm."""
    sa, sb = surface(a), surface(b)
    return _distance_to(sb, spacing_xyz)[sa], _distance_to(sa, spacing_xyz)[sb]


def surface_dice(a: np.ndarray, b: np.ndarray, spacing_xyz, tolerance_mm: float = 2.0) -> float:
    """Share of both surfaces lying within `tolerance_mm` of the other surface (Nikolov et al.)."""
    if not a.any() and not b.any():
        return 1.0
    if not a.any() or not b.any():
        return 0.0
    dab, dba = surface_distances(a, b, spacing_xyz)
    return float((np.sum(dab <= tolerance_mm) + np.sum(dba <= tolerance_mm)) / (dab.size + dba.size))


def hd95(a: np.ndarray, b: np.ndarray, spacing_xyz) -> Optional[float]:
    """95th-percentile Hausdorff distance (max of the two directed ones), mm; None when one mask is empty."""
    if not a.any() and not b.any():
        return 0.0
    if not a.any() or not b.any():
        return None
    dab, dba = surface_distances(a, b, spacing_xyz)
    return float(max(np.percentile(dab, 95), np.percentile(dba, 95)))


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
