"""One click against one box, 3D Dice per structure, through the engine's `Session` (the same propagation as the CLI).

Per structure: the tight box of its largest slice, and one include click on the deepest interior pixel of that
slice (`deepest_point`, as `slidesam eval` does), each propagated both ways; one Session per volume, so the click
and the box share the embeddings. With a box-only model the click goes through the box search of
SlideSAMLib/clicks.py; the table also gives its decodes and the click run's seconds (search and propagation).

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/bench_clicks.py training [-o OUT.json] [--only NAME ...]
    OMP_NUM_THREADS=1 python benchmarks/bench_clicks.py evaluation_only --code /tmp/old   # another checkout's code

`--code DIR` imports SlideSAMLib from DIR (e.g. an export of main) to measure its click search on the same cases.
"training" holds train/tune folders only; "evaluation_only" those never tuned on (../shared/data/README.md).
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
D = ROOT / ".." / "shared" / "data"
CT_ABD = ["spleen", "kidney_right", "kidney_left", "liver", "gallbladder", "stomach", "adrenal_gland_right", "portal_vein_and_splenic_vein"]
MR_ABD = ["spleen", "kidney_right", "liver"]
SPINE = "ct_mr_spine/sub-{0}_label-{1}_{2}.nii.gz", "ct_mr_spine/sub-{0}_seg-{3}_label-{1}_msk.nii.gz"


def _spine(modality, level, suffix, seg, labels):
    return (f"spine_{modality}_{seg}", SPINE[0].format(modality, level, suffix), SPINE[1].format(modality, level, suffix, seg), None, labels)


# (name, image, label, label names, structures: names or numbers; None = all)
CASES = {
    "training": [
        ("ct_chest_nodule", "ct_chest_nodule/image.nrrd", "ct_chest_nodule/label.nrrd", None, None),
        ("mr_breast_lesion", "mr_breast_lesion/image.nrrd", "mr_breast_lesion/label.nrrd", None, None),
        _spine("ct", 22, "ct", "vert", ["22"]),  # L3
        _spine("mri", 6, "T2w", "vert", ["6"]),  # C6
        _spine("mri", 6, "T2w", "subreg", ["60"]),  # spinal cord
        ("ct_liver_lits", "ct_liver_lits/image.nii.gz", "ct_liver_lits/label.nii.gz", None, None),
        ("mr_abdomen", "mr_abdomen/example_mr_sm.nii.gz", "mr_abdomen/example_seg_mr.nii.gz", "mr_abdomen/labels_total_mr.json", MR_ABD),
        ("example_ct", "ct_abdomen/example_ct.nii.gz", "ct_abdomen/example_seg_fast_force_split.nii.gz", "ct_abdomen/labels_total.json", CT_ABD),
    ],
    "evaluation_only": [
        ("mr_brain_tumour", "mr_brain_tumour/brain1_image.nrrd", "mr_brain_tumour/brain1_label.nrrd", None, None),
        ("mr_brain_tumour2", "mr_brain_tumour2/image.nrrd", "mr_brain_tumour2/label.nrrd", None, None),
        ("mr_spinal_cord t1", "mr_spinal_cord/t1_image.nii.gz", "mr_spinal_cord/t1_label_cord.nii.gz", None, None),
        ("mr_spinal_cord t2", "mr_spinal_cord/t2_image.nii.gz", "mr_spinal_cord/t2_label_cord.nii.gz", None, None),
        ("mr_spinal_cord t2s", "mr_spinal_cord/t2s_image.nii.gz", "mr_spinal_cord/t2s_label_graymatter.nii.gz", None, None),
        ("ct_liver_3slice", "ct_liver_3slice/dicom", "ct_liver_3slice/liver_spine_seg.nrrd", "ct_liver_3slice/labels.json", None),
        ("ct_liver_3slice heart", "ct_liver_3slice/dicom", "ct_liver_3slice/heart_seg.nrrd", "ct_liver_3slice/labels.json", None),
        ("ct_dicom", "ct_dicom/dicom", "ct_dicom/seg_on_dicom_grid.nii.gz", "ct_dicom/labels_total.json",
         ["spleen", "liver", "stomach", "pancreas", "aorta", "portal_vein_and_splenic_vein"]),
    ],
}


def measure(case, model, load_case, deepest_point, tight_box, dice, decodes, Session):
    name, image, label, names, structures = case
    c = load_case(D / image, D / label, D / names if names else None, structures=structures)
    session = Session(model, c.volume, spacing=c.spacing)
    rows = []
    for value, sname in c.structures.items():
        truth = c.labels == value
        areas = truth.sum(axis=(1, 2))
        if areas.max() < 10:  # as `slidesam eval` (MIN_AREA)
            continue
        k = int(areas.argmax())
        x0, y0, x1, y1 = tight_box(truth[k])
        x, y = deepest_point(truth[k])
        box = session.segment(box=((x0, y0, k), (x1, y1, k)), axis=2)
        t0 = time.perf_counter()
        click = session.segment(points=[((x, y, k), True)], axis=2)
        seconds = time.perf_counter() - t0
        vbox, vclick = box.volume_mask().astype(bool), click.volume_mask().astype(bool)
        rows.append({"case": name, "structure": sname, "voxels": int(truth.sum()), "slice": k,
                     "box": round(dice(vbox, truth), 4), "click": round(dice(vclick, truth), 4),
                     "click_voxels": int(vclick.sum()), "click_2d": round(dice(click.slice_masks[k], truth[k]), 4),
                     "box_2d": round(dice(box.slice_masks[k], truth[k]), 4), "decodes": decodes,
                     "click_s": round(seconds, 1), "prompt": click.prompt})
        print("| {case} | {structure} | {voxels} | {box:.3f} | {click:.3f} | {click_voxels} | {box_2d:.3f} | {click_2d:.3f} | {decodes} | {click_s:.0f} |".format(**rows[-1]), flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", choices=sorted(CASES), help="which folders (training: train/tune only)")
    ap.add_argument("--only", nargs="*", default=None, help="case names to run (default: all of the part)")
    ap.add_argument("--code", type=Path, default=ROOT, help="the checkout whose SlideSAMLib is measured (default: this one)")
    ap.add_argument("-o", "--output", type=Path, help="write the rows as JSON here")
    args = ap.parse_args()
    sys.path.insert(0, str(args.code.resolve()))
    import numpy as np
    import torch

    import SlideSAMLib
    from SlideSAMLib import Session, load_model
    from SlideSAMLib.clicks import BOX_FRACTIONS
    from SlideSAMLib.evaluation.evaluate import load_case
    from SlideSAMLib.evaluation.metrics import dice
    from SlideSAMLib.training.prompts import deepest_point, tight_box

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    model = load_model(device="cpu")
    print(f"code {Path(SlideSAMLib.__file__).parent}, load {'/'.join(f'{v:.1f}' for v in os.getloadavg())}, torch threads {torch.get_num_threads()}")
    print("| case | structure | voxels | box 3D Dice | click 3D Dice | click voxels | box 2D | click 2D | decodes | click s |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = []
    for case in CASES[args.part]:
        if args.only is None or case[0] in args.only:
            rows += measure(case, model, load_case, deepest_point, tight_box, dice, len(BOX_FRACTIONS) + 1, Session)
    ratios = [min(r["click"] / max(r["box"], 1e-6), 2.0) for r in rows]
    print(f"mean box {np.mean([r['box'] for r in rows]):.3f}, mean click {np.mean([r['click'] for r in rows]):.3f}, "
          f"mean click/box {np.mean(ratios):.3f} (each ratio capped at 2), below 0.7x: {sum(q < 0.7 for q in ratios)} of {len(rows)}")
    if args.output:
        args.output.write_text(json.dumps({"code": str(args.code), "part": args.part, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
