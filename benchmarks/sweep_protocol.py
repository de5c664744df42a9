"""The CVPR 2025 protocol with local refinement at several agreement thresholds, on training structures only.

    python benchmarks/sweep_protocol.py OUT.json IMAGE LABEL [NAMES] --structures a,b [--thresholds none,0.8,0.9]

One Session per case, one box run per structure (as `slidesam eval`), then `protocol.interactive` once per
variant "AGREE/DEPART" (e.g. 0.9/0.0, 0.9/none: no departure stop; "none": session 6's rule, every slice between the prompted ones replaced, no `current`); the windows
are encoded once and shared by all runs. Writes the curves (Dice, surface Dice, each click's replaced span and stop
reasons) to OUT.json. benchmarks/RESULTS_protocol.md reports what it measured.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from SlideSAMLib import Session, load_model  # noqa: E402
from SlideSAMLib.evaluation import protocol  # noqa: E402
from SlideSAMLib.evaluation.evaluate import _box3, _run, load_case  # noqa: E402
from SlideSAMLib.training.prompts import tight_box  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("case", nargs="+", help="IMAGE LABEL [NAMES]")
    p.add_argument("--structures", required=True)
    p.add_argument("--thresholds", default="none,0.8/none,0.9/none,0.8/0.0,0.9/0.0,0.95/0.0")
    args = p.parse_args(argv)
    case = load_case(*args.case, structures=args.structures.split(","))
    model = load_model(None, device="cpu")
    session = Session(model, case.volume, spacing=case.spacing)
    out = {"case": case.name, "model": model.source, "results": []}
    for value, name in case.structures.items():
        truth = case.labels == value
        k0 = int(np.argmax(truth.reshape(truth.shape[0], -1).sum(axis=1)))
        box, pred = _run(session, truth, case.spacing, box=_box3(tight_box(truth[k0]), k0))
        row = {"structure": name, "label": value, "voxels": int(truth.sum()), "box_dice": box["dice"], "runs": {}}
        for t in args.thresholds.split(","):
            t0 = time.perf_counter()
            agree, depart = (None, None) if t == "none" else (float(v) if v != "none" else None for v in t.split("/"))
            row["runs"][t] = protocol.interactive(session, truth, case.spacing, k0, pred, agree_dice=agree, depart_dice=depart)
            row["runs"][t]["seconds"] = round(time.perf_counter() - t0, 1)
            curve = [c["dice"] for c in row["runs"][t]["curve"]]
            print(f"{name} t={t}: {curve} AUC {row['runs'][t]['dice_auc']}", flush=True)
        out["results"].append(row)
        Path(args.out).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
