"""One-box 3D Dice of the untuned default vs the same model with a neighbour-heads adapter, in one process.

Both are scored by `slidesam eval`'s own `evaluate_structure` (tight box on the largest slice, propagated both
ways; also its one-click run), structure by structure, on the same `Session`: the adapter changes only the
decoder's two outer branches, so the image embeddings are the same for both and are computed once (on this
2-core machine the encoder is nearly all of an eval's cost). The adapter's tensors are swapped in and out of
one loaded network between the two runs; the model's `trained_neighbours` capability follows.

  PYTHONPATH=. python benchmarks/compare_neighbours.py --adapter FOLDER \
      --case IMAGE LABEL [NAMES.json] ... [--structures a,b] -o out.json
"""
import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    import numpy as np
    import torch
    from safetensors.torch import load_file

    from SlideSAMLib import load_model
    from SlideSAMLib.evaluation.evaluate import MIN_AREA, evaluate_structure, load_case
    from SlideSAMLib.session import Session

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--adapter", required=True)
    ap.add_argument("--case", nargs="+", action="append", required=True, metavar="FILE")
    ap.add_argument("--structures", default=None)
    ap.add_argument("-o", "--out", required=True)
    args = ap.parse_args(argv)
    heads = load_file(str(Path(args.adapter) / "heads.safetensors"))
    manifest = json.loads((Path(args.adapter) / "slidesam_adapter.json").read_text())
    assert manifest.get("trained_neighbours") and manifest["lora"]["rank"] == 0, "only a neighbour-heads adapter (no LoRA) can share embeddings"
    untuned = load_model(device="cpu")
    own = dict(untuned.net.named_parameters())
    base = {k: own[k].detach().clone() for k in heads}
    model = untuned

    def use(weights, trained: bool) -> None:
        with torch.no_grad():
            for k, v in weights.items():
                own[k].copy_(v)
        model.trained_neighbours = trained  # the capability the adapter's manifest declares

    wanted = [s for s in args.structures.split(",")] if args.structures else None
    rows, t0 = [], time.perf_counter()
    for spec in args.case:
        case = load_case(spec[0], spec[1], spec[2] if len(spec) > 2 else None, wanted)
        session = Session(model, case.volume, spacing=case.spacing)
        for value in case.structures:
            truth = case.labels == value
            if truth.reshape(truth.shape[0], -1).sum(axis=1).max() < MIN_AREA:
                continue
            row = {"case": case.name, "structure": case.structures[value]}
            for name, weights, trained in (("untuned", base, False), ("tuned", heads, True)):
                use(weights, trained)
                res, _ = evaluate_structure(model, case, value, jitter=0, with_efficiency=False, session=session)
                row[name] = {"box": res["runs"]["box"]["dice"], "point": res["runs"]["point"]["dice"],
                             "extent_pred": res["runs"]["box"]["extent_pred"], "extent_true": res["runs"]["box"]["extent_true"],
                             "stopped": res["runs"]["box"]["stopped"]}
            use(base, False)
            row["delta_box"] = round(row["tuned"]["box"] - row["untuned"]["box"], 4)
            rows.append(row)
            print(f"{row['case']:40s} {row['structure']:28s} box {row['untuned']['box']:.3f} -> {row['tuned']['box']:.3f}"
                  f"  click {row['untuned']['point']:.3f} -> {row['tuned']['point']:.3f}", flush=True)
    summary = {m: round(float(np.mean([r[m]["box"] for r in rows])), 4) for m in ("untuned", "tuned")}
    summary["worst_drop"] = round(float(min(r["delta_box"] for r in rows)), 4)
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    Path(args.out).write_text(json.dumps({"adapter": str(args.adapter), "rows": rows, "summary": summary}, indent=2, default=str))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
