"""One click through the engine's propagation (3D Dice) with several clicks.py, on one Session per volume.

For chosen training structures and click positions (`bench_clicks_slice.py`'s `prompt_slices` / `organ_clicks`
names: "liver" is the deepest pixel of the largest slice, "liver@z48" / "liver@half-far" the large-organ clicks),
one tight box on the click's slice and one include click, each propagated both ways by `Session.segment` (the CLI's
propagation); the click once per clicks.py given (`--variant NAME=FILE`, loaded as a module of this SlideSAMLib and
swapped into `SlideSAMLib.session`), then with this checkout's. Embeddings are shared by all runs of a volume.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/bench_clicks_3d.py --variant main=/tmp/main_clicks.py \\
        --structure "ct_liver_lits:label 1@z48" "example_ct:iliopsoas_right" ...

Training folders only (../shared/data/README.md).
"""
import argparse
import os
import time
from pathlib import Path

import numpy as np

from bench_clicks_slice import CASES, D, load_clicks


def click_of(truth, tag):
    """(x, y, k) of a named click (see bench_clicks_slice.organ_clicks), k the slice."""
    from scipy import ndimage

    from SlideSAMLib.training.prompts import deepest_point

    areas = truth.sum(axis=(1, 2))
    if tag is None:
        k = int(areas.argmax())
        return (*deepest_point(truth[k]), k)
    if tag.startswith("z"):
        k = int(tag[1:])
        return (*deepest_point(truth[k]), k)
    big = np.flatnonzero(areas >= 0.3 * areas.max())
    if tag.startswith("third-"):  # "third-0.4-far": on the slice at 40 % of the extent, at a third of the depth
        k, share = int(big[int(round(float(tag.split("-")[1]) * (len(big) - 1)))]), 3
    else:
        assert tag in ("half-far", "half-near"), tag
        k, share = int(areas.argmax()), 2
    depth = ndimage.distance_transform_cdt(np.pad(truth[k], 1), metric="taxicab")[1:-1, 1:-1]
    ys, xs = np.nonzero(depth == max(1, depth.max() // share))
    far = np.hypot(xs - xs.mean(), ys - ys.mean())
    i = int(far.argmin() if tag.endswith("near") else far.argmax())
    return int(xs[i]), int(ys[i]), k


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--structure", nargs="+", required=True, help='"CASE:NAME[@TAG]"')
    ap.add_argument("--variant", nargs="*", default=[], help="NAME=clicks.py to run before this checkout's")
    args = ap.parse_args()
    import torch

    import SlideSAMLib.session as session_module
    from SlideSAMLib import Session, clicks, load_model
    from SlideSAMLib.evaluation.evaluate import load_case
    from SlideSAMLib.evaluation.metrics import dice
    from SlideSAMLib.training.prompts import tight_box

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    variants = {n: load_clicks(Path(f), f"_variant_{n}") for n, f in (v.split("=", 1) for v in args.variant)}
    variants["this"] = clicks
    model = load_model(device="cpu")
    print(f"load {'/'.join(f'{v:.1f}' for v in os.getloadavg())}, torch threads {torch.get_num_threads()}", flush=True)
    wanted = {}
    for s in args.structure:
        case, name = s.split(":", 1)
        wanted.setdefault(case, []).append(name)
    print("| case | structure | click (x, y, k) | voxels | one box | " + " | ".join(f"click, {v} (voxels)" for v in variants)
          + " | " + " | ".join(f"2D {v}" for v in variants) + " | s |\n|---|---|---|---:|---:|" + "---:|" * (2 * len(variants) + 1))
    for name, image, label, names in CASES:
        if name not in wanted:
            continue
        c = load_case(D / image, D / label, D / names if names else None)
        session = Session(model, c.volume, spacing=c.spacing)
        by_name = {v: k for k, v in c.structures.items()}
        for s in wanted[name]:
            t0 = time.time()
            sname, _, tag = s.partition("@")
            truth = c.labels == by_name[sname]
            x, y, k = click_of(truth, tag or None)
            x0, y0, x1, y1 = tight_box(truth[k])
            box = session.segment(box=((x0, y0, k), (x1, y1, k)), axis=2).volume_mask().astype(bool)
            cells, flat = [], []
            for v, module in variants.items():
                session_module.ClickSearch = module.ClickSearch
                r = session.segment(points=[((x, y, k), True)], axis=2)
                m = r.volume_mask().astype(bool)
                cells.append(f"{dice(m, truth):.3f} ({int(m.sum()):,})")
                flat.append(f"{dice(r.slice_masks[k], truth[k]):.3f}")
            session_module.ClickSearch = clicks.ClickSearch
            print(f"| {name} | {s} | ({x}, {y}, {k}) | {int(truth.sum()):,} | {dice(box, truth):.3f} | " + " | ".join(cells) + " | "
                  + " | ".join(flat) + f" | {time.time() - t0:.0f} |", flush=True)


if __name__ == "__main__":
    main()
