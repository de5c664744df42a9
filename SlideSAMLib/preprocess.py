"""Intensity normalisation and the slice <-> model-input geometry.

All image work happens on a *stack*: the volume re-ordered so that axis 0 is the
slice axis, each slice a 2D (rows, cols) array.  Resizing maps pixel centres to
pixel centres (align_corners=False both ways), so a mask lands on the voxels it
was predicted for.
"""
from dataclasses import dataclass
from typing import Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .errors import InputError

# The authors' windows (REFERENCE §1).
SLIDESAM_CT_RANGE = (-200.0, 400.0)
SLIDESAM_MR_RANGE = (0.0, 600.0)
# MedSAM's CT window (level 40, width 400) and MR percentiles, for the LiteMedSAM default.
LITEMEDSAM_CT_RANGE = (-160.0, 240.0)
MR_PERCENTILES = (0.5, 99.5)
SAM_PIXEL_MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
SAM_PIXEL_STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)


def detect_modality(volume: np.ndarray) -> str:
    """'ct' when the volume reaches air in Hounsfield units (below -500), else 'mr'.

    The authors' rule (minimum below -10) calls MR volumes with small negative values
    (bias-field corrected, resampled: mr_abdomen's minimum is -47) CT.
    """
    return "ct" if float(np.min(volume)) < -500 else "mr"


def normalise_volume(volume: np.ndarray, preprocessing: str, modality: str = "auto") -> np.ndarray:
    """Float32 volume after the model's intensity clipping.

    'litemedsam': CT window [-160, 240] HU or MR 0.5–99.5 percentiles, scaled to [0, 1] per volume.
    'slidesam'  : CT [-200, 400] or MR [0, 600] clipping; min–max is per window (see `window_to_input`).
    """
    if modality == "auto":
        modality = detect_modality(volume)
    if modality not in ("ct", "mr"):
        raise InputError(f"unknown modality '{modality}': use ct, mr or auto")
    v = volume.astype(np.float32, copy=False)
    if preprocessing == "slidesam":
        lo, hi = SLIDESAM_CT_RANGE if modality == "ct" else SLIDESAM_MR_RANGE
        return np.clip(v, lo, hi)
    if modality == "ct":
        lo, hi = LITEMEDSAM_CT_RANGE
    else:
        nonzero = v[v > v.min()] if np.any(v > v.min()) else v
        lo, hi = (float(x) for x in np.percentile(nonzero, MR_PERCENTILES))
    if hi <= lo:
        hi = lo + 1.0
    return (np.clip(v, lo, hi) - lo) / (hi - lo)


@dataclass(frozen=True)
class SliceGeometry:
    """How one (rows, cols) slice sits in the square model input of side `img_size`."""

    rows: int
    cols: int
    img_size: int
    keep_aspect: bool  # True: longest side -> img_size, pad bottom/right; False: plain resize

    @property
    def resized(self) -> Tuple[int, int]:
        if not self.keep_aspect:
            return self.img_size, self.img_size
        scale = self.img_size / max(self.rows, self.cols)
        return max(1, int(round(self.rows * scale))), max(1, int(round(self.cols * scale)))

    def to_model(self, xy: np.ndarray) -> np.ndarray:
        """Slice pixel coordinates (x=col, y=row, centres at integers) -> model input coordinates."""
        rh, rw = self.resized
        xy = np.asarray(xy, dtype=np.float64)
        out = np.empty_like(xy)
        out[..., 0] = (xy[..., 0] + 0.5) * (rw / self.cols) - 0.5
        out[..., 1] = (xy[..., 1] + 0.5) * (rh / self.rows) - 0.5
        return out


def window_to_input(window: np.ndarray, geometry: SliceGeometry, preprocessing: str) -> torch.Tensor:
    """(3, rows, cols) normalised slices -> (3, img_size, img_size) encoder input tensor."""
    t = torch.from_numpy(np.ascontiguousarray(window, dtype=np.float32)).unsqueeze(0)
    rh, rw = geometry.resized
    t = F.interpolate(t, size=(rh, rw), mode="bilinear", align_corners=False)[0]
    if preprocessing == "slidesam":
        lo, hi = float(t.min()), float(t.max())
        t = (t - lo) / max(hi - lo, 1e-8) * 255.0
        mean = torch.from_numpy(SAM_PIXEL_MEAN).view(3, 1, 1)
        std = torch.from_numpy(SAM_PIXEL_STD).view(3, 1, 1)
        return (t - mean) / std
    out = torch.zeros((3, geometry.img_size, geometry.img_size), dtype=torch.float32)
    out[:, :rh, :rw] = t
    return out


def logits_to_slice(low_res: torch.Tensor, geometry: SliceGeometry) -> torch.Tensor:
    """Low-res logits [..., 256, 256] -> logits on the slice grid [..., rows, cols] (SAM's post-processing)."""
    lead = low_res.shape[:-2]
    x = low_res.reshape(-1, 1, *low_res.shape[-2:]).float()
    x = F.interpolate(x, size=(geometry.img_size, geometry.img_size), mode="bilinear", align_corners=False)
    rh, rw = geometry.resized
    x = x[..., :rh, :rw]
    x = F.interpolate(x, size=(geometry.rows, geometry.cols), mode="bilinear", align_corners=False)
    return x.reshape(*lead, geometry.rows, geometry.cols)
