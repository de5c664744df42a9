"""Helpers shared by the propagation / encoder benchmarks: data, boxes, memory, machine load."""
import os
import resource
import sys
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from SlideSAMLib.evaluation.metrics import dice  # noqa: E402,F401  (the package's one Dice, for the benchmarks)

DATA = ROOT / ".." / "shared" / "data"
CT = DATA / "ct_abdomen" / "example_ct.nii.gz"
CT_LABELS = DATA / "ct_abdomen" / "example_seg_fast_force_split.nii.gz"
LIVER, SPLEEN = 5, 1
LARGE_SIZE_XYZ = (512, 512, 300)


def load_avg() -> str:
    try:
        return "/".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def peak_rss_mb() -> float:
    """Peak resident set of this process.

    Linux: VmHWM, the high-water mark of this program's own memory. ru_maxrss would do on macOS only: on Linux a
    child started by a big parent inherits the parent's ru_maxrss across fork and exec (measured: a bare child of
    a 400 MB parent reports 427 MB), which made the benchmark's "after model load" figures the parent's.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024.0 if sys.platform != "darwin" else kib / 2**20


def current_rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def resample_to_size(image, size_xyz, interpolator, pixel_type=None):
    """`image` on a grid of `size_xyz` voxels that covers the same physical extent (voxel edges kept)."""
    import SimpleITK as sitk

    old_size = np.array(image.GetSize(), float)
    old_spacing = np.array(image.GetSpacing(), float)
    new_size = np.array(size_xyz, float)
    new_spacing = old_size * old_spacing / new_size
    direction = np.array(image.GetDirection(), float).reshape(3, 3)
    # First voxel centre moves from half an old voxel to half a new voxel inside the extent's corner.
    origin = np.array(image.GetOrigin(), float) + direction @ ((new_spacing - old_spacing) / 2.0)
    out_type = image.GetPixelID() if pixel_type is None else pixel_type
    return sitk.Resample(
        image, [int(s) for s in size_xyz], sitk.Transform(), interpolator, origin.tolist(), new_spacing.tolist(),
        image.GetDirection(), 0, out_type,
    )


def load_case(case: str) -> Tuple[np.ndarray, np.ndarray, tuple]:
    """(volume (k, j, i), labels (k, j, i), spacing xyz) of 'example' (example_ct as is) or 'large' (512x512x300)."""
    import SimpleITK as sitk

    image, labels = sitk.ReadImage(str(CT)), sitk.ReadImage(str(CT_LABELS))
    if case == "large":
        image = resample_to_size(image, LARGE_SIZE_XYZ, sitk.sitkLinear, sitk.sitkInt16)
        labels = resample_to_size(labels, LARGE_SIZE_XYZ, sitk.sitkNearestNeighbor)
    elif case != "example":
        raise ValueError(f"unknown case {case}")
    return sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(labels), image.GetSpacing()


def largest_slice(labels: np.ndarray, label: int) -> int:
    return int(np.argmax((labels == label).sum(axis=(1, 2))))


def tight_box(labels: np.ndarray, label: int, k: int):
    """Session box ((i0, j0, k), (i1, j1, k)) around `label` on slice k."""
    jj, ii = np.nonzero(labels[k] == label)
    return (int(ii.min()), int(jj.min()), k), (int(ii.max()), int(jj.max()), k)


def label_extent(labels: np.ndarray, label: int) -> Optional[Tuple[int, int]]:
    ks = np.nonzero((labels == label).any(axis=(1, 2)))[0]
    return (int(ks.min()), int(ks.max())) if ks.size else None
