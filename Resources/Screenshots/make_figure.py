"""Renders Resources/Screenshots/SlideSAM_kidney.png: a real SlideSAM run through the Slicer logic.

Run from the project root:  PYTHONPATH=. .venv/bin/python Resources/Screenshots/make_figure.py
It loads example_ct into real MRML (slicer-core), prompts a box on the left kidney's largest
axial slice, propagates with SlideSAMLogic and draws the prompt slice plus a coronal and a
sagittal cut with the propagated contour (orange) and the TotalSegmentator label (cyan).
"""
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "Testing" / "slicer"))
import conftest  # noqa: E402  (the slicer-core harness)

import SlideSAM  # noqa: E402
from SlideSAMSlicer.writer import read_segment  # noqa: E402

DATA = ROOT / ".." / "shared" / "data" / "ct_abdomen"


def main():
    import torch

    torch.set_num_threads(2)
    scene, logics = conftest.make_mrml()
    volume = logics["Volumes"].AddArchetypeVolume(str(DATA / "example_ct.nii.gz"), "example_ct", 0)
    image = sitk.ReadImage(str(DATA / "example_ct.nii.gz"))
    reference = sitk.GetArrayFromImage(sitk.ReadImage(str(DATA / "example_seg_fast_force_split.nii.gz"))) == 3
    k = int(reference.sum(axis=(1, 2)).argmax())
    js, is_ = np.nonzero(reference[k])
    box_ijk = [(is_.min() - 3, js.min() - 3, k), (is_.max() + 3, js.max() + 3, k)]
    to_ras = lambda c: np.array(image.TransformContinuousIndexToPhysicalPoint([float(v) for v in c])) * [-1, -1, 1]
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    report = SlideSAM.SlideSAMLogic().segment(volume, segmentation, "kidney_left", box=tuple(to_ras(c) for c in box_ijk))
    mask = read_segment(segmentation, report.segmentId, volume).astype(bool)
    np.save("/tmp/slidesam_figure_mask.npy", mask)  # lets the figure be re-styled without another run
    ct = np.clip(sitk.GetArrayFromImage(image), -200, 300)
    dice = 2 * (mask & reference).sum() / (mask.sum() + reference.sum())
    ci, cj = int(is_.mean()), int(js.mean())
    # example_ct's i runs to patient right and j to anterior: flip to Slicer's radiological display
    # (axial: anterior up, patient right on screen left; coronal: superior up; sagittal: anterior left).
    ni, nj = ct.shape[2], ct.shape[1]
    axial = lambda a: a[::-1, ::-1]
    coronal = lambda a: a[::-1, ::-1]
    sagittal = lambda a: a[::-1, ::-1]
    flipped_box = [(ni - 1 - box_ijk[1][0], nj - 1 - box_ijk[1][1], k), (ni - 1 - box_ijk[0][0], nj - 1 - box_ijk[0][1], k)]
    views = [
        (f"axial slice {k} (prompt)", axial(ct[k]), axial(mask[k]), axial(reference[k]), flipped_box),
        (f"coronal row {cj}", coronal(ct[:, cj, :]), coronal(mask[:, cj, :]), coronal(reference[:, cj, :]), None),
        (f"sagittal column {ci}", sagittal(ct[:, :, ci]), sagittal(mask[:, :, ci]), sagittal(reference[:, :, ci]), None),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.4), dpi=100)
    for ax, (title, img, m, ref, box) in zip(axes, views):
        ax.imshow(img, cmap="gray", interpolation="nearest")
        ax.contour(ref, levels=[0.5], colors="cyan", linewidths=1.0)
        ax.contour(m, levels=[0.5], colors="orange", linewidths=1.6)
        if box:
            (x0, y0, _), (x1, y1, _) = box
            ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="yellow", linewidth=1.2))
        ax.set_title(title)
        ax.axis("off")
    fig.suptitle(f"SlideSAM: one box on one slice -> left kidney in {len(report.slices)} slices "
                 f"(orange; TotalSegmentator label cyan; Dice {dice:.3f})")
    fig.tight_layout()
    out = Path(__file__).with_name("SlideSAM_kidney.png")
    fig.savefig(out)
    print(out, report.summary(), f"Dice {dice:.4f}")


if __name__ == "__main__":
    main()
