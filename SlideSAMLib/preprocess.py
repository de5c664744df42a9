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

# The authors' windows (Slide-SAM, arXiv 2311.10121, and its code): CT clipped to [-200, 400] HU, MR to [0, 600].
SLIDESAM_CT_RANGE = (-200.0, 400.0)
SLIDESAM_MR_RANGE = (0.0, 600.0)
# MedSAM's CT window (level 40, width 400) and MR percentiles, for the LiteMedSAM default.
LITEMEDSAM_CT_RANGE = (-160.0, 240.0)
MR_PERCENTILES = (0.5, 99.5)
SAM_PIXEL_MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
SAM_PIXEL_STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)


# CT or MR from the intensities: a CT in Hounsfield units has fat (-150..-50 HU) or air (-1000 HU) in nearly any
# field of view, an MR's intensities are non-negative apart from small undershoots of resampling and bias-field
# correction. Training volumes (benchmarks' evidence): the four CTs have 22-78 % of their voxels below -50, and
# 8-68 % of a centre crop without the air around the body (where "minimum below -500", the rule before, called
# the spine CT's crop MR); the three MRs have none below -50 (mr_abdomen's minimum is -47). The authors' rule,
# minimum below -10, calls such MRs CT.
CT_FAT_HU = -50.0
CT_MIN_SHARE = 0.005


def guess_modality(volume: np.ndarray) -> Tuple[str, str]:
    """('ct' or 'mr', why): CT when at least 0.5 % of the voxels are below -50 (fat or air in Hounsfield units)."""
    share = float(np.count_nonzero(np.asarray(volume) < CT_FAT_HU)) / max(1, np.asarray(volume).size)
    if share >= CT_MIN_SHARE:
        return "ct", f"CT: {share:.1%} of the voxels are below -50, fat or air in Hounsfield units"
    return "mr", f"MR: {share:.1%} of the voxels are below -50, so the intensities are not Hounsfield units"


def detect_modality(volume: np.ndarray) -> str:
    """'ct' or 'mr' (see `guess_modality`)."""
    return guess_modality(volume)[0]


@dataclass(frozen=True)
class Normalisation:
    """The model's intensity clipping for one volume: clip to [lo, hi], then (LiteMedSAM) scale to [0, 1]."""

    lo: float
    hi: float
    scale: bool

    def apply(self, values: np.ndarray) -> np.ndarray:
        v = np.array(values, dtype=np.float32)  # one copy, then in place
        np.clip(v, self.lo, self.hi, out=v)
        if self.scale:
            v -= self.lo
            v /= self.hi - self.lo
        return v


def normalisation_for(volume: np.ndarray, preprocessing: str, modality: str = "auto") -> Normalisation:
    """'litemedsam': CT window [-160, 240] HU or MR 0.5–99.5 percentiles, scaled to [0, 1] per volume.
    'slidesam'  : CT [-200, 400] or MR [0, 600] clipping; min–max is per window (see `window_to_input`)."""
    if modality == "auto":
        modality = detect_modality(volume)
    if modality not in ("ct", "mr"):
        raise InputError(f"unknown modality '{modality}': use ct, mr or auto")
    if preprocessing == "slidesam":
        lo, hi = SLIDESAM_CT_RANGE if modality == "ct" else SLIDESAM_MR_RANGE
        return Normalisation(lo, hi, scale=False)
    if modality == "ct":
        lo, hi = LITEMEDSAM_CT_RANGE
    else:
        floor = volume.min()
        nonzero = volume[volume > floor] if np.any(volume > floor) else volume
        lo, hi = (float(x) for x in np.percentile(nonzero, MR_PERCENTILES))
    return Normalisation(float(lo), float(hi) if hi > lo else float(lo) + 1.0, scale=True)


def normalise_volume(volume: np.ndarray, preprocessing: str, modality: str = "auto") -> np.ndarray:
    """Float32 volume after the model's intensity clipping (see `normalisation_for`)."""
    return normalisation_for(volume, preprocessing, modality).apply(volume)


class NormalisedStack:
    """The volume seen along one axis (axis 0 = slices), normalised slice by slice when indexed.

    Holds no float copy of the volume: a 512x512x300 CT would need 300 MB for one.
    """

    def __init__(self, volume: np.ndarray, axis: int, normalisation: Normalisation):
        self._view = np.moveaxis(volume, 2 - axis, 0)  # numpy (k, j, i); IJK axis 2 is numpy axis 0
        self.normalisation = normalisation
        self.shape = self._view.shape

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        return self.normalisation.apply(self._view[key])


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
