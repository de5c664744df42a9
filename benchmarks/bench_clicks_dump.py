"""Dump every candidate of the click search, with its masks, for every training structure (offline rule fitting).

As `bench_clicks_slice.py` (same structures, same box, same click), but for each structure every square of the
ladder is decoded and so is each square's refining decode (its part's bounding box grown by the propagation's
margin: what the search returns when it chooses that square). Written per structure to OUT/NNN.npz: the slice
image, the reference slice, the tight box's mask, the click, each square's box, IoU, stability, part mask (or a
missing flag) and refined mask and IoU, and the mask main's search returns. `bench_clicks_fit.py` reads them.

    OMP_NUM_THREADS=1 PYTHONPATH=. nice -n 5 python benchmarks/bench_clicks_dump.py OUT_DIR [--only CASE ...]

Training folders only (../shared/data/README.md).
"""
import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from bench_clicks_slice import CASES, D, SharedDecodes


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--only", nargs="*", help="case names to run (default: all)")
    args = ap.parse_args()
    import torch

    from SlideSAMLib import Session, clicks, load_model
    from SlideSAMLib.evaluation.evaluate import MIN_AREA, load_case
    from SlideSAMLib.propagation import grown_box
    from SlideSAMLib.training.prompts import deepest_point, tight_box

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    args.out.mkdir(parents=True, exist_ok=True)
    model = load_model(device="cpu")
    print(f"load {'/'.join(f'{v:.1f}' for v in os.getloadavg())}, torch threads {torch.get_num_threads()}", flush=True)
    index, t0 = [], time.time()
    for name, image, label, names in CASES:
        if args.only and name not in args.only:
            continue
        c = load_case(D / image, D / label, D / names if names else None)
        session = Session(model, c.volume, spacing=c.spacing)
        pred = session.predictor(2)
        pixel_mm = float(np.mean(c.spacing[:2]))
        for value, sname in c.structures.items():
            truth = c.labels == value
            areas = truth.sum(axis=(1, 2))
            if areas.max() < MIN_AREA:
                continue
            k = int(areas.argmax())
            x, y = deepest_point(truth[k])
            shared = SharedDecodes(pred)
            box_mask = (pred.predict(k, box=tight_box(truth[k])).logits[1] > 0).numpy()
            search = clicks.ClickSearch(shared, pixel_mm)
            try:
                returned = (search.predict(k, [(x, y, True)]).logits[1] > 0).numpy()
            except Exception as e:  # InputError: no candidate held the click
                print(f"  {name} {sname}: {e}")
                returned = np.zeros_like(truth[k])
            n = len(search.candidates)
            shape = truth[k].shape
            parts, refined = np.zeros((n, *shape), bool), np.zeros((n, *shape), bool)
            boxes, ious, stab, r_iou, missing = np.zeros((n, 4)), np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n, bool)
            for i, cand in enumerate(search.candidates):
                if cand is None:
                    missing[i] = True
                    continue
                box, p, part = cand
                boxes[i], ious[i], stab[i], parts[i] = box, p.iou, p.stability, part
                rp = shared.predict(k, box=grown_box(part, search.margin))
                refined[i], r_iou[i] = (rp.logits[1] > 0).numpy(), rp.iou
            file = args.out / f"{len(index):03d}.npz"
            np.savez_compressed(
                file, image=np.asarray(pred.stack[[k]][0], np.float32), truth=truth[k], box_mask=box_mask, click=np.array([x, y]),
                boxes=boxes, ious=ious, stability=stab, parts=parts, refined=refined, refined_iou=r_iou, missing=missing,
                returned=returned, pixel_mm=pixel_mm, ring_px=search.ring_px, disc_px=search.disc_px,
            )
            index.append({"file": file.name, "case": name, "structure": sname, "pixels": int(areas[k])})
            print(f"{file.name} {name} {sname} {int(areas[k])} px, {time.time() - t0:.0f} s", flush=True)
            (args.out / "index.json").write_text(json.dumps(index, indent=1))
    print(f"{len(index)} structures, {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
