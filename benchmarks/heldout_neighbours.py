"""Neighbour-slice predictions, window by window, of the untuned default vs neighbour-heads adapters (a diagnosis).

For every window of the given volumes whose centre slice shows a structure (>= 10 voxels): the centre slice's
tight box grown by the propagation's margin (5 model px) is decoded on the cached training embeddings, and
the k-1 / k+1 outputs are compared with the labels of slices k-1 / k+1 in the 256 model frame:
hard Dice (an empty target and an empty prediction count 1), predicted / true area, the share of windows with
a non-empty target whose prediction is empty, and the Dice when k-1 and k+1 are swapped (an orientation check).
Meant for TRAINING volumes held out of an adapter's training (select settings on them, never on
evaluation-only data).

  PYTHONPATH=. python benchmarks/heldout_neighbours.py --pair IMAGE LABEL [NAMES] ... [--adapter FOLDER ...] -o out.json
"""
import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def hard_dice(pred, target):
    import torch

    inter = (pred & target).sum(dim=(-2, -1)).float()
    sums = (pred.sum(dim=(-2, -1)) + target.sum(dim=(-2, -1))).float()
    return torch.where(sums > 0, 2 * inter / sums.clamp(min=1), torch.ones_like(sums))


def score(trainer, windows, batch=8):
    """Per-window rows: dice / area ratio for k-1 and k+1 (and swapped), centre Dice."""
    import torch

    rows = []
    for start in range(0, len(windows), batch):
        chunk = windows[start:start + batch]
        emb = torch.stack([w[0] for w in chunk])
        low = torch.stack([w[1] for w in chunk]) > 0.5
        boxes = torch.tensor([w[2] for w in chunk], dtype=torch.float32)
        with torch.no_grad():
            pred = trainer.forward(emb, boxes) > 0
        d = hard_dice(pred, low)
        swapped = hard_dice(pred[:, [2, 1, 0]], low)
        for j, w in enumerate(chunk):
            for s, side in ((0, "k-1"), (2, "k+1")):
                t, p = int(low[j, s].sum()), int(pred[j, s].sum())
                rows.append({"volume": w[3], "structure": w[4], "k": w[5], "side": side, "dice": float(d[j, s]),
                             "dice_swapped": float(swapped[j, s]), "true_area": t, "pred_area": p,
                             "centre_dice": float(d[j, 1]), "centre_area": int(low[j, 1].sum())})
    return rows


def summarise(rows):
    import numpy as np

    nonempty = [r for r in rows if r["true_area"] > 0]
    empty = [r for r in rows if r["true_area"] == 0]
    return {"windows_sides": len(rows), "neighbour_dice": round(float(np.mean([r["dice"] for r in rows])), 4),
            "neighbour_dice_nonempty": round(float(np.mean([r["dice"] for r in nonempty])), 4) if nonempty else None,
            "dice_if_swapped": round(float(np.mean([r["dice_swapped"] for r in rows])), 4),
            "area_ratio_median": round(float(np.median([r["pred_area"] / r["true_area"] for r in nonempty])), 3) if nonempty else None,
            "empty_pred_on_nonempty_target": round(float(np.mean([r["pred_area"] == 0 for r in nonempty])), 3) if nonempty else None,
            "empty_targets": len(empty), "empty_target_pred_empty": round(float(np.mean([r["pred_area"] == 0 for r in empty])), 3) if empty else None,
            "centre_dice": round(float(np.mean([r["centre_dice"] for r in rows])), 4)}


def main(argv=None) -> int:
    import numpy as np
    from safetensors.torch import load_file
    import torch

    from SlideSAMLib import load_model
    from SlideSAMLib.training.dataset import _slices_with, labels_to_model, load_pair, select_structures
    from SlideSAMLib.training.embeddings import EmbeddingStore
    from SlideSAMLib.training.neighbours import NeighbourConfig, NeighbourTrainer
    from SlideSAMLib.training.prompts import tight_box

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pair", nargs="+", action="append", required=True, metavar="FILE")
    ap.add_argument("--adapter", action="append", default=[])
    ap.add_argument("--max-windows", type=int, default=None)
    ap.add_argument("--margin", type=float, default=5.0, help="model px the tight box is grown by (the propagation's 5)")
    ap.add_argument("-o", "--out", required=True)
    args = ap.parse_args(argv)
    volumes = [load_pair(*p[:3]) for p in args.pair]
    select_structures(volumes)
    model = load_model(device="cpu")
    store = EmbeddingStore(model)
    trainer = NeighbourTrainer(model, volumes, NeighbourConfig(out="/tmp/unused", max_windows=args.max_windows, progress=False), store=store)
    trainer.sampler.embed(print)
    windows = []
    for i, s, ks in trainer.sampler.items:
        v = volumes[i]
        p = store.predictor(v)
        for k in ks:
            idx = np.clip([k - 1, k, k + 1], 0, v.labels.shape[0] - 1)
            _, low = labels_to_model(v.labels[idx] == s, p.geometry)
            if not low[1].any():
                continue
            x0, y0, x1, y1 = tight_box(low[1].numpy() > 0.5)
            m, n = args.margin, low.shape[-1] - 1
            box = (max(0, x0 - m), max(0, y0 - m), min(n, x1 + m), min(n, y1 + m))
            windows.append((store.load(v, k), low, box, v.name, v.structure_name(s), k))
    own = dict(model.net.named_parameters())
    base = {k: v.detach().clone() for k, v in own.items() if k.startswith(("mask_decoder.output_upscaling.", "mask_decoder.output_upscaling3."))}
    out = {}
    for name, weights in [("untuned", base)] + [(a, load_file(str(Path(a) / "heads.safetensors"))) for a in args.adapter]:
        with torch.no_grad():
            for k, v in weights.items():
                own[k].copy_(v)
        rows = score(trainer, windows)
        out[name] = {"summary": summarise(rows), "rows": rows}
        print(name, json.dumps(out[name]["summary"]), flush=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
