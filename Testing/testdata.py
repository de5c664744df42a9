"""Paths to the real data in ../shared/data and small helpers the tests share."""
import os
from pathlib import Path

import numpy as np

from SlideSAMLib.evaluation.metrics import dice  # noqa: F401  (the package's one Dice, for the tests)

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SLIDESAM_DATA", ROOT.parent / "shared" / "data"))
CT = DATA / "ct_abdomen" / "example_ct.nii.gz"
CT_LABELS = DATA / "ct_abdomen" / "example_seg_fast_force_split.nii.gz"
MR = DATA / "mr_abdomen" / "example_mr_sm.nii.gz"
MR_LABELS = DATA / "mr_abdomen" / "example_seg_mr.nii.gz"
# TotalSegmentator numbering (the same for these four in the CT and MR label files)
ORGANS = {"spleen": 1, "kidney_right": 2, "kidney_left": 3, "liver": 5}
# Acceptance thresholds of the engine issue on example_ct (embedded default, ONE tight box on the largest slice):
# Testing/engine/test_propagation.py asserts them; benchmarks/margin_table.py reports every variant against them.
TARGETS = {"kidney_right": 0.80, "kidney_left": 0.80, "spleen": 0.88, "liver": 0.88}


def tight_box(label: np.ndarray, k: int = None):
    """((i0, j0, k), (i1, j1, k)) around a binary label on slice k (default: its largest slice)."""
    if k is None:
        k = int(label.sum(axis=(1, 2)).argmax())
    js, is_ = np.nonzero(label[k])
    return ((int(is_.min()), int(js.min()), k), (int(is_.max()), int(js.max()), k))
