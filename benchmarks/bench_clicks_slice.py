"""One click against one box on the prompt slice only (2D Dice), every structure of the training folders.

Per structure (as `slidesam eval` places its prompts): its largest slice k, the tight box of that slice and one
include click on its deepest interior pixel (`evaluate.load_case`, `training.prompts.tight_box` / `deepest_point`).
The box is decoded once on window k; the click goes through the click's box search (SlideSAMLib/clicks.py) of each
variant below; each mask is compared with the reference slice (2D Dice). One encoded window per structure: cheap.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/bench_clicks_slice.py [--baseline OLD_clicks.py] [-o OUT.json]

`--baseline`: another clicks.py (e.g. `git show main:SlideSAMLib/clicks.py > /tmp/old.py`), run beside this
checkout's in the same process on the same embeddings. Training folders only (../shared/data/README.md).
"""
import argparse
import importlib.util
import json
import os
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
D = ROOT / ".." / "shared" / "data"
SP = "ct_mr_spine/sub-{0}_label-{1}_{2}.nii.gz", "ct_mr_spine/sub-{0}_seg-{3}_label-{1}_msk.nii.gz"
# (name, image, label, label names); every structure of each (benchmarks/eval_anchors.sh, "training").
CASES = [
    ("ct_chest_nodule", "ct_chest_nodule/image.nrrd", "ct_chest_nodule/label.nrrd", None),
    ("mr_breast_lesion", "mr_breast_lesion/image.nrrd", "mr_breast_lesion/label.nrrd", None),
    ("mr_abdomen", "mr_abdomen/example_mr_sm.nii.gz", "mr_abdomen/example_seg_mr.nii.gz", "mr_abdomen/labels_total_mr.json"),
    *[(f"spine_{m}_{seg}", SP[0].format(m, lv, sfx), SP[1].format(m, lv, sfx, seg), None)
      for m, lv, sfx in (("ct", 22, "ct"), ("mri", 6, "T2w")) for seg in ("vert", "subreg")],
    ("ct_liver_lits", "ct_liver_lits/image.nii.gz", "ct_liver_lits/label.nii.gz", None),
    ("example_ct", "ct_abdomen/example_ct.nii.gz", "ct_abdomen/example_seg_fast_force_split.nii.gz", "ct_abdomen/labels_total.json"),
]


def load_clicks(path: Path, name: str):
    """A clicks.py loaded as a module of this SlideSAMLib (its relative imports resolve here)."""
    spec = importlib.util.spec_from_file_location(f"SlideSAMLib.{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class SharedDecodes:
    """The predictor, its decodes remembered per (window, box): the variants decode the same squares once."""

    def __init__(self, predictor):
        self._p, self._seen = predictor, {}

    def __getattr__(self, name):
        return getattr(self._p, name)

    def predict(self, k, box=None, points=()):
        key = (k, None if box is None else tuple(float(v) for v in box), tuple(points))
        if key not in self._seen:
            self._seen[key] = self._p.predict(k, box=box, points=points)
        return self._seen[key]


def case_sessions(model, wanted):
    """(case name, its loaded case, one Session on it, the three-slice predictor, in-plane pixel mm) for each training
    case of CASES whose name `wanted(name)` accepts; one Session per volume (its windows encoded as they are asked for)."""
    from SlideSAMLib import Session
    from SlideSAMLib.evaluation.evaluate import load_case

    for name, image, label, names in CASES:
        if not wanted(name):
            continue
        c = load_case(D / image, D / label, D / names if names else None)
        session = Session(model, c.volume, spacing=c.spacing)
        yield name, c, session, session.predictor(2), float(np.mean(c.spacing[:2]))


def prompt_slices(model, only=None):
    """Every training structure's prompt slice, as `slidesam eval` places its prompts: (case name, structure name,
    the decodes shared by the variants, pixel mm, slice k, its reference, its area, the click (x, y), the tight box's
    mask). One Session per volume: one encoded window per structure."""
    from SlideSAMLib.evaluation.evaluate import MIN_AREA
    from SlideSAMLib.training.prompts import deepest_point, tight_box

    for name, c, session, pred, pixel_mm in case_sessions(model, lambda name: not only or name in only):
        for value, sname in c.structures.items():
            truth = c.labels == value
            areas = truth.sum(axis=(1, 2))
            if areas.max() < MIN_AREA:
                continue
            k = int(areas.argmax())
            shared = SharedDecodes(pred)
            box_mask = (pred.predict(k, box=tight_box(truth[k])).logits[1] > 0).numpy()
            yield name, sname, shared, pixel_mm, k, truth[k], int(areas[k]), deepest_point(truth[k]), box_mask


# The large training organs (issue 12's step-5 failure: one click on a liver returned a tiny candidate inside it).
LARGE = {"example_ct": ("liver", "spleen", "kidney_right", "kidney_left", "stomach"),
         "mr_abdomen": ("liver", "spleen", "kidney_right", "kidney_left", "stomach"), "ct_liver_lits": ("label 1",)}
LARGE_QUANTILES = (0.1, 0.3, 0.5, 0.7, 0.9)  # slices along the organ's extent (those with >= 30 % of its largest area)


# A second, later set (RESULTS_clicks.md §9: drawn after the guard was chosen on the first, to confirm it): other
# slices, and clicks at a third of the deepest depth on the slices at 40 % and 60 % of the extent.
CONFIRM_QUANTILES = (0.2, 0.4, 0.6, 0.8)


# Set C (RESULTS_clicks.md §10: drawn after the pick gate was chosen on the 120, A and B, to confirm it): other slices
# of the same organs, and the large muscles and lumbar vertebrae of the two abdomens, deepest pixel of each slice.
SET_C_QUANTILES = (0.15, 0.35, 0.55, 0.75, 0.95)
SET_C_MORE = {"example_ct": ("iliopsoas_left", "iliopsoas_right", "autochthon_left", "autochthon_right",
                             "vertebrae_L1", "vertebrae_L3", "vertebrae_L5"),
              "mr_abdomen": ("iliopsoas_left", "iliopsoas_right", "autochthon_left", "autochthon_right", "vertebrae")}


def organ_clicks(model, confirm=False, set_c=False):
    """More clicks on the large training organs than `prompt_slices`' one: on five slices along each organ (its
    deepest pixel), and on its largest slice two pixels at half its deepest depth (the one nearest the centroid and
    the one farthest from it): an annotator does not always click the organ's middle. `confirm`: the second set
    (CONFIRM_QUANTILES, and on the slices at 40 % and 60 % the pixel at a third of the deepest depth farthest from
    the centroid). `set_c`: set C (SET_C_QUANTILES' slices, deepest pixel, of the organs and of SET_C_MORE's muscles
    and vertebrae). Same tuple as `prompt_slices`, the structure named "NAME@zK" or "NAME@half-near" / "NAME@half-far"
    / "NAME@third-0.4-far". Training folders only."""
    from scipy import ndimage

    from SlideSAMLib.training.prompts import deepest_point, tight_box

    for name, c, session, pred, pixel_mm in case_sessions(model, lambda name: name in LARGE):
        for value, sname in c.structures.items():
            if sname not in LARGE[name] + (SET_C_MORE.get(name, ()) if set_c else ()):
                continue
            truth = c.labels == value
            areas = truth.sum(axis=(1, 2))
            if areas.max() == 0:
                continue
            big = np.flatnonzero(areas >= 0.3 * areas.max())
            at = lambda q: int(big[int(round(q * (len(big) - 1)))])
            clicks = [(at(q), None) for q in (SET_C_QUANTILES if set_c else CONFIRM_QUANTILES if confirm else LARGE_QUANTILES)]
            clicks = list(dict.fromkeys(clicks)) if set_c else clicks  # a short structure's quantiles can share a slice
            for k0, share, tag in ([] if set_c else [(at(0.4), 3, "third-0.4"), (at(0.6), 3, "third-0.6")] if confirm else
                                   [(int(areas.argmax()), 2, "half")]):
                depth = ndimage.distance_transform_cdt(np.pad(truth[k0], 1), metric="taxicab")[1:-1, 1:-1]
                ys, xs = np.nonzero(depth == max(1, depth.max() // share))
                far = np.hypot(xs - xs.mean(), ys - ys.mean())
                clicks += [(k0, (f"{tag}-far", (int(xs[far.argmax()]), int(ys[far.argmax()]))))] + \
                          ([] if confirm else [(k0, (f"{tag}-near", (int(xs[far.argmin()]), int(ys[far.argmin()]))))])
            for k, extra in clicks:
                shared = SharedDecodes(pred)
                box_mask = (pred.predict(k, box=tight_box(truth[k])).logits[1] > 0).numpy()
                tag, xy = (f"z{k}", deepest_point(truth[k])) if extra is None else extra
                yield name, f"{sname}@{tag}", shared, pixel_mm, k, truth[k], int(areas[k]), xy, box_mask


def click_mask(search, k, x, y, label):
    """The search's mask for one include click at (x, y); empty (and said) where no candidate held it."""
    try:
        return (search.predict(k, [(x, y, True)]).logits[1] > 0).numpy()
    except Exception as e:  # InputError: no candidate held the click
        print(f"  {label}: {e}")
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", type=Path, help="another clicks.py to measure beside this checkout's")
    ap.add_argument("--only", nargs="*", help="case names to run (default: all)")
    ap.add_argument("-o", "--output", type=Path)
    args = ap.parse_args()
    import torch

    from SlideSAMLib import clicks, load_model
    from SlideSAMLib.evaluation.metrics import dice

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    searches = {"new": clicks}
    if args.baseline:
        searches = {"old": load_clicks(args.baseline, "_baseline_clicks"), **searches}
    model = load_model(device="cpu")
    print(f"load {'/'.join(f'{v:.1f}' for v in os.getloadavg())}, torch threads {torch.get_num_threads()}, variants {list(searches)}", flush=True)
    rows, t0 = [], time.time()
    for name, sname, shared, pixel_mm, k, truth_k, pixels, (x, y), box in prompt_slices(model, args.only):
        row = {"case": name, "structure": sname, "pixels": pixels, "box": round(dice(box, truth_k), 4)}
        for v, module in searches.items():
            mask = click_mask(module.ClickSearch(shared, pixel_mm), k, x, y, f"{name} {sname} {v}")
            mask = np.zeros_like(truth_k) if mask is None else mask
            row[v] = round(dice(mask, truth_k), 4)
            row[f"{v}_pixels"] = int(mask.sum())
        rows.append(row)
        print(" | ".join(f"{row[c]}" for c in row), flush=True)
    print(f"{len(rows)} structures, {time.time() - t0:.0f} s")
    summarise(rows, list(searches))
    if args.output:
        args.output.write_text(json.dumps(rows, indent=1))


def ratio(row, v):
    return min(row[v] / max(row["box"], 1e-6), 2.0)  # capped at 2: a click may beat a failing box


def summarise(rows, variants):
    print("| variant | mean click | mean box | mean click/box (each capped at 2) | below 0.7 x box |\n|---|---:|---:|---:|---:|")
    for v in variants:
        q = [ratio(r, v) for r in rows]
        print(f"| {v} | {np.mean([r[v] for r in rows]):.3f} | {np.mean([r['box'] for r in rows]):.3f} | {np.mean(q):.3f} | {sum(x < 0.7 for x in q)} of {len(rows)} |")
    v = variants[-1]
    print(f"worst click/box ({v}):")
    for r in sorted(rows, key=lambda r: ratio(r, v))[:15]:
        print("  " + ", ".join(f"{c} {r[c]}" for c in r))


if __name__ == "__main__":
    main()
