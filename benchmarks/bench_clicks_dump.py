"""Dump every candidate of the click search, with its masks, for every training structure (offline rule fitting).

As `bench_clicks_slice.py` (same structures, same box, same click), but for each structure every square of the
ladder is decoded and so is each square's refining decode (its part's bounding box grown by the propagation's
margin: what the search returns when it chooses that square). Written per structure to OUT/NNN.npz: the slice
image, the reference slice, the tight box's mask, the click, each square's box, IoU, stability, part mask (or a
missing flag) and refined mask and IoU, and the mask main's search returns. `bench_clicks_fit.py` reads them.

    OMP_NUM_THREADS=1 PYTHONPATH=. nice -n 5 python benchmarks/bench_clicks_dump.py OUT_DIR [--only CASE ...] [--large [--confirm | --set-c]]

Training folders only (../shared/data/README.md).
"""
import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from bench_clicks_slice import click_mask, organ_clicks, prompt_slices


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--only", nargs="*", help="case names to run (default: all)")
    ap.add_argument("--large", action="store_true", help="the large organs' extra clicks (`organ_clicks`) instead")
    ap.add_argument("--confirm", action="store_true", help="with --large: the second set of clicks (`organ_clicks(confirm=True)`)")
    ap.add_argument("--set-c", action="store_true", help="with --large: set C (`organ_clicks(set_c=True)`: other slices, plus muscles and vertebrae)")
    args = ap.parse_args()
    import torch

    from SlideSAMLib import clicks, load_model
    from SlideSAMLib.propagation import grown_box

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    args.out.mkdir(parents=True, exist_ok=True)
    model = load_model(device="cpu")
    print(f"load {'/'.join(f'{v:.1f}' for v in os.getloadavg())}, torch threads {torch.get_num_threads()}", flush=True)
    index, t0 = [], time.time()
    for name, sname, shared, pixel_mm, k, truth_k, pixels, (x, y), box_mask in (organ_clicks(model, args.confirm, args.set_c) if args.large else prompt_slices(model, args.only)):
        search = clicks.ClickSearch(shared, pixel_mm)
        returned = click_mask(search, k, x, y, f"{name} {sname}")
        returned = np.zeros_like(truth_k) if returned is None else returned
        n = len(search.candidates)
        shape = truth_k.shape
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
            file, image=np.asarray(shared.stack[[k]][0], np.float32), truth=truth_k, box_mask=box_mask, click=np.array([x, y]),
            boxes=boxes, ious=ious, stability=stab, parts=parts, refined=refined, refined_iou=r_iou, missing=missing,
            returned=returned, pixel_mm=pixel_mm, ring_px=search.ring_px, disc_px=search.disc_px,
        )
        index.append({"file": file.name, "case": name, "structure": sname, "pixels": pixels})
        print(f"{file.name} {name} {sname} {pixels} px, {time.time() - t0:.0f} s", flush=True)
        (args.out / "index.json").write_text(json.dumps(index, indent=1))
    print(f"{len(index)} structures, {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
