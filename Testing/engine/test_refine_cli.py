"""`slidesam segment` then `slidesam refine` as a user runs them (two processes), on a real scan, read back."""
import os
import subprocess
import sys

import numpy as np

from SlideSAMLib import Session, array_of, read_image
from SlideSAMLib.session import refine_span
from SlideSAMLib.training.prompts import deepest_point, tight_box
from testdata import ROOT


def _slidesam(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))  # this checkout's SlideSAMLib
    return subprocess.run([sys.executable, "-m", "SlideSAMLib.cli", *map(str, args)], capture_output=True, text=True, env=env, cwd=ROOT)


def test_refine_cli_corrects_the_clicked_slice_and_repropagates(data_dir, model, tmp_path):
    d = data_dir / "mr_breast_lesion"  # training folder: a 143-voxel lesion on slices 8-10 of 21
    image, truth = read_image(d / "image.nrrd"), array_of(read_image(d / "label.nrrd")) == 1
    k = int(truth.sum(axis=(1, 2)).argmax())
    x0, y0, x1, y1 = tight_box(truth[k])
    first, refined_path = tmp_path / "first.nii.gz", tmp_path / "refined.nii.gz"
    run = _slidesam("segment", d / "image.nrrd", "--box", x0, y0, x1, y1, "--slice", k, "-o", first)
    assert run.returncode == 0, run.stderr
    before = array_of(read_image(first)) > 0
    mask = before[k]
    assert before[k - 1].any() and before[k + 1].any()
    keep = deepest_point(mask)
    ys, xs = np.nonzero(mask)
    far = int(np.argmax((xs - keep[0]) ** 2 + (ys - keep[1]) ** 2))
    cut = (int(xs[far]), int(ys[far]))  # the mask pixel farthest from the include click
    run = _slidesam("refine", d / "image.nrrd", first, "--slice", k, "--point", *keep, "--negative", *cut, "-o", refined_path)
    assert run.returncode == 0, run.stderr
    assert f"wrote {refined_path}: slice {k} corrected" in run.stdout
    out = read_image(refined_path)
    assert out.GetSize() == image.GetSize() and np.allclose(out.GetOrigin(), image.GetOrigin())
    after = array_of(out) > 0
    # The clicked slice as asked: the include pixel stays, the exclude pixel goes, it only loses pixels.
    new = after[k]
    assert new[keep[1], keep[0]] and not new[cut[1], cut[0]]
    assert not (new & ~mask).any() and 0 < new.sum() < mask.sum()
    # The slices refine_span names are the local re-propagation from it (Session.refine with the saved result as
    # `current`, in this process, the same inputs); every other slice is the saved result's.
    session = Session(model, array_of(image), spacing=image.GetSpacing())
    current = {s: before[s] for s in range(before.shape[0]) if before[s].any()}
    res = session.refine(k, [((*keep, k), True), ((*cut, k), False)], mask, axis=2,
                         largest_area=int(before.sum(axis=(1, 2)).max()), current=current)
    first, last = refine_span(res)
    assert first <= k <= last
    expected = before.copy()
    expected[first:last + 1] = res.volume_mask().astype(bool)[first:last + 1]
    assert np.array_equal(after, expected) and not np.array_equal(after, before)
    assert f"slices {first}..{last} along k replaced" in run.stdout
    outside = [s for s in range(before.shape[0]) if not first <= s <= last]
    assert all(np.array_equal(after[s], before[s]) for s in outside)
