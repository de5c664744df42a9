"""One-box 3D Dice of the untuned default vs the same model with a neighbour-heads adapter, in one process.

Both are scored by `slidesam eval`'s own `evaluate_structure` (tight box on the largest slice, propagated both
ways; also its one-click run), structure by structure, on the same `Session`: the adapter changes only the
decoder's two outer branches, so the image embeddings are the same for both and are computed once (on this
2-core machine the encoder is nearly all of an eval's cost). The adapter's tensors are swapped in and out of
one loaded network between the two runs; the model's `trained_neighbours` capability follows.

  PYTHONPATH=. python benchmarks/compare_neighbours.py --adapter FOLDER [--adapter FOLDER2 ...] \
      --case IMAGE LABEL [NAMES.json] ... [--structures a,b] [--box-only] [--rule-off] -o out.json

--rule-off adds, per adapter, a run with its heads but without its `trained_neighbours` capability (so without
the vanishing-neighbour stop): it separates what the heads do from what that rule does.  --box-only skips the
one-click run (the box run alone, as `slidesam eval` runs it).  The chain / oracle anchors and the interactive
protocol are not run here (`slidesam eval` runs them).
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
    from SlideSAMLib.evaluation.evaluate import MIN_AREA, _box3, _run, evaluate_structure, load_case
    from SlideSAMLib.training.prompts import tight_box
    from SlideSAMLib.training.dataset import read_label_names
    from SlideSAMLib.session import Session
    from SlideSAMLib.structures import check_structure_names, parse_structures

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--adapter", action="append", required=True)
    ap.add_argument("--box-only", action="store_true")
    ap.add_argument("--rule-off", action="store_true")
    ap.add_argument("--case", nargs="+", action="append", required=True, metavar="FILE")
    ap.add_argument("--structures", default=None)
    ap.add_argument("-o", "--out", required=True)
    args = ap.parse_args(argv)
    wanted = parse_structures(args.structures)
    if wanted:  # the same one-line check as `slidesam eval`, before any model work
        check_structure_names(wanted, [read_label_names(spec[2]) for spec in args.case if len(spec) > 2],
                              map_hint="give NAMES.json as --case's third value")
    variants = []
    for folder in args.adapter:
        manifest = json.loads((Path(folder) / "slidesam_adapter.json").read_text())
        assert manifest.get("trained_neighbours") and manifest["lora"]["rank"] == 0, "only a neighbour-heads adapter (no LoRA) can share embeddings"
        heads = load_file(str(Path(folder) / "heads.safetensors"))
        variants.append((folder, heads, True))
        if args.rule_off:
            variants.append((folder + ":rule-off", heads, False))
    untuned = load_model(device="cpu")
    own = dict(untuned.net.named_parameters())
    base = {k: own[k].detach().clone() for k in variants[0][1]}
    variants.insert(0, ("untuned", base, False))
    model = untuned

    def use(weights, trained: bool) -> None:
        with torch.no_grad():
            for k, v in weights.items():
                own[k].copy_(v)
        model.trained_neighbours = trained  # the capability the adapter's manifest declares

    rows, t0 = [], time.perf_counter()
    for spec in args.case:
        case = load_case(spec[0], spec[1], spec[2] if len(spec) > 2 else None, wanted)
        session = Session(model, case.volume, spacing=case.spacing)
        for value in case.structures:
            truth = case.labels == value
            if truth.reshape(truth.shape[0], -1).sum(axis=1).max() < MIN_AREA:
                continue
            row = {"case": case.name, "structure": case.structures[value]}
            for name, weights, trained in variants:
                use(weights, trained)
                if args.box_only:
                    k0 = int(np.argmax(truth.reshape(truth.shape[0], -1).sum(axis=1)))
                    run, _ = _run(session, truth, case.spacing, box=_box3(tight_box(truth[k0]), k0))
                    runs = {"box": run}
                else:
                    runs = evaluate_structure(model, case, value, jitter=0, with_efficiency=False, session=session,
                                              with_anchors=False, with_interactive=False)[0]["runs"]
                row[name] = {"box": runs["box"]["dice"], "point": runs["point"]["dice"] if "point" in runs else None,
                             "extent_pred": runs["box"]["extent_pred"], "extent_true": runs["box"]["extent_true"],
                             "stopped": runs["box"]["stopped"]}
            use(base, False)
            row["delta_box"] = {n: round(row[n]["box"] - row["untuned"]["box"], 4) for n, _, _ in variants[1:]}
            rows.append(row)
            print(f"{row['case']:32s} {row['structure']:28s} box " + " | ".join(f"{row[n]['box']:.3f} {row[n]['stopped']}" for n, _, _ in variants), flush=True)
    summary = {n: round(float(np.mean([r[n]["box"] for r in rows])), 4) for n, _, _ in variants}
    summary["worst_drop"] = {n: round(float(min(r["delta_box"][n] for r in rows)), 4) for n, _, _ in variants[1:]}
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    Path(args.out).write_text(json.dumps({"adapters": args.adapter, "rows": rows, "summary": summary}, indent=2, default=str))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    from SlideSAMLib.errors import InputError

    try:
        sys.exit(main())
    except InputError as e:  # bad arguments: one line, no traceback
        sys.exit(f"compare_neighbours: {e}")
