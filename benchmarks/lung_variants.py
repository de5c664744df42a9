"""The training chest CT's lungs under rule variants, beside the chain and the oracle (benchmarks/RESULTS_rules.md).

benchmarks/sweep_rules.py keeps a decode memo per structure, which held 17.8 GB on these 512 x 512 lungs, so they
are run here in-process on one `Session` (embeddings encoded once, shared by every variant). The label is the
threshold pseudo-label of benchmarks/lung_pseudolabel.py (training folder ct_chest_nodule only):

    python benchmarks/lung_pseudolabel.py LUNG_DIR
    OMP_NUM_THREADS=2 python benchmarks/lung_variants.py LUNG_DIR [--variants default,edge0.5+closed0.2,...]

A variant is sweep_rules.py's ("a+b" applies both), plus two diagnostics of this script:
  overlap-grown  the overlap rule compares the window's mask with the edge rule's grown mask, not the neighbour mask
  egrowN         EDGE_GROW_MODEL_PX = N (model px)
Prints one line per lung and variant: 3D Dice, stop reasons and the first / last slice written; with --slices, the
per-slice areas of the first two variants.
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "benchmarks"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import sweep_rules  # noqa: E402
from SlideSAMLib import Session, load_model, propagation  # noqa: E402
from SlideSAMLib.evaluation import anchors, evaluate, metrics  # noqa: E402
from SlideSAMLib.training.prompts import tight_box  # noqa: E402

IMAGE = ROOT / ".." / "shared" / "data" / "ct_chest_nodule" / "image.nrrd"


def settings_of(name: str) -> tuple:
    """(sweep_rules settings, overlap against the grown mask?) of a variant name."""
    parts, grown, grow = [], False, None
    for part in name.split("+"):
        if part == "overlap-grown":
            grown = True
        elif part.startswith("egrow") and part[5:].replace(".", "").isdigit():
            grow = float(part[5:])
        else:
            parts.append(part)
    settings = sweep_rules.variant("+".join(parts) or "default")
    if grow is not None:
        settings["const"]["EDGE_GROW_MODEL_PX"] = grow
    return settings, grown


def run(session, box2d, k0, name: str):
    settings, grown = settings_of(name)
    reach, score = propagation.reach_edge, propagation.score_slice
    last = {}

    def reach_kept(mask, *a, **k):
        last["grown"] = reach(mask, *a, **k)
        return last["grown"]

    def score_grown(c, pred, raw, centre, prompt_mask, *a, **k):
        g = last.pop("grown", None)
        return score(c, pred, raw, centre, prompt_mask if g is None else g, *a, **k)

    with sweep_rules.applied(settings, session):
        if grown:
            propagation.reach_edge, propagation.score_slice = reach_kept, score_grown
        try:
            return session.segment(box=evaluate._box3(box2d, k0), axis=2)
        finally:
            propagation.reach_edge, propagation.score_slice = reach, score


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("lung_dir", type=Path, help="the folder lung_pseudolabel.py wrote (lungs.nrrd, labels.json)")
    ap.add_argument("--variants", default="default,edge0.5+closed0.2,edge0.5+closed0.2+overlap-grown")
    ap.add_argument("--slices", action="store_true", help="per-slice areas of the first two variants")
    ap.add_argument("-o", "--output", type=Path, help="JSON of the figures")
    args = ap.parse_args(argv)
    case = evaluate.load_case(IMAGE, args.lung_dir / "lungs.nrrd", args.lung_dir / "labels.json", name="ct_chest_nodule lungs")
    session = Session(load_model(device="cpu"), case.volume, spacing=case.spacing)
    out = {}
    for value, name in case.structures.items():
        truth = case.labels == value
        k0 = int(truth.sum(axis=(1, 2)).argmax())
        box2d = tight_box(truth[k0])
        extent = np.nonzero(truth.any(axis=(1, 2)))[0]
        row = {"reference_slices": [int(extent[0]), int(extent[-1])], "prompt_slice": k0}
        masks = []
        for variant in args.variants.split(","):
            res = run(session, box2d, k0, variant)
            pred = res.volume_mask().astype(bool)
            written = np.nonzero(pred.any(axis=(1, 2)))[0]
            row[variant] = {"dice": round(metrics.dice(pred, truth), 4), "stopped": res.stopped,
                            "slices": [int(written[0]), int(written[-1])] if written.size else None}
            masks.append(pred)
            print(name, variant, row[variant], flush=True)
        predictor = session.predictor(2)
        chain, ends = anchors.chain(predictor, k0, box2d)
        row["chain"], row["oracle"] = round(metrics.dice(chain, truth), 4), round(metrics.dice(anchors.oracle(predictor, truth), truth), 4)
        print(name, "chain", row["chain"], "ends", ends, "oracle", row["oracle"], "reference slices", row["reference_slices"], flush=True)
        if args.slices:
            for s in range(truth.shape[0]):
                print(f"  slice {s:3d} reference {int(truth[s].sum()):6d}", *(f"{int(m[s].sum()):6d}" for m in masks[:2]))
        out[name] = row
    if args.output:
        args.output.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
