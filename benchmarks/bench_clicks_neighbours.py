"""Do the neighbouring slices support step 5's replacement? Agreement on k-1 / k+1 of the choice and its replacement.

For every dumped click (`bench_clicks_dump.py`: the 120 structures, the large-organ sets) where step 5 changes
steps 3-4's choice p to a smaller candidate j (unguarded and guarded, each fitted leave-one-folder-out on the 120,
as bench_clicks_guard.py), the squares of p and j are decoded on the windows centred on k-1 and k+1; a candidate's
agreement is the mean over the two of the Dice between its part on k and the decode's connected part that overlaps
it most (0 where none does). Printed: each pair with its Dice change and both agreements, then how well "j agrees
with its neighbours at least as well as p" separates the replacements that help from those that hurt.

    OMP_NUM_THREADS=1 PYTHONPATH=.:benchmarks python benchmarks/bench_clicks_neighbours.py DUMP LARGE [CONFIRM ...]

Training folders only.
"""
import argparse
import os
from pathlib import Path

import numpy as np
from scipy import ndimage

from bench_clicks_3d import click_of
from bench_clicks_fit import fit_replace, load, step34
from bench_clicks_guard import GUARDS, guarded
from bench_clicks_slice import case_sessions


def agreement(pred, k, box, part, depth):
    """Mean over k-1 and k+1 (those inside the volume) of Dice(part, the overlapping part of box's decode there)."""
    from SlideSAMLib.evaluation.metrics import dice

    out = []
    for n in (k - 1, k + 1):
        if not 0 <= n < depth:
            continue
        m = (pred.predict(n, box=tuple(float(v) for v in box)).logits[1] > 0).numpy()
        labels, count = ndimage.label(m)
        overlap = np.bincount(labels[part], minlength=count + 1)[1:] if count else np.zeros(0)
        out.append(0.0 if not overlap.any() else dice(part, labels == 1 + int(overlap.argmax())))
    return float(np.mean(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dumps", type=Path, nargs="+")
    ap.add_argument("--guard", default="ring in choice >= 0.75, sub-blob < 0.7")
    args = ap.parse_args()
    import torch

    from SlideSAMLib import load_model

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    sets = [load(d) for d in args.dumps]
    S, every = sets[0], [s for X in sets for s in X]
    folders = sorted({s["folder"] for s in S})
    pairs = {}  # id(s) -> set of (rule, j)
    for rule_name, guard in (("unguarded", GUARDS["none"]), ("guarded", GUARDS[args.guard])):
        guarded(every, guard)
        for f in folders:
            rule = fit_replace([s for s in S if s["folder"] != f], smaller=True, allowed=True)
            for s in every:
                if s["folder"] == f and rule(s) != step34(s):
                    pairs.setdefault(id(s), set()).add((rule_name, rule(s)))
    model = load_model(device="cpu")
    print(f"load {'/'.join(f'{v:.1f}' for v in os.getloadavg())}, {sum(map(len, pairs.values()))} replacements on {len(pairs)} clicks", flush=True)
    rows = []
    by_case = {}
    for s in every:
        if id(s) in pairs:
            by_case.setdefault(s["case"], []).append(s)
    for name, c, session, pred, _ in case_sessions(model, lambda name: name in by_case):
        by_name = {v: k for k, v in c.structures.items()}
        for s in by_case[name]:
            sname, _, tag = s["structure"].partition("@")
            truth = c.labels == by_name[sname]
            x, y, k = click_of(truth, tag or None)
            assert (x, y) == s["click"], (s["structure"], (x, y), s["click"])
            p = step34(s)
            z = np.load(s["path"])
            a_p = agreement(pred, k, z["boxes"][p], s["parts"][p], c.volume.shape[0])
            for rule_name, j in sorted(pairs[id(s)]):
                a_j = agreement(pred, k, z["boxes"][j], s["parts"][j], c.volume.shape[0])
                d = s["c"][j]["dice"] - s["c"][p]["dice"]
                rows.append((rule_name, d, a_p, a_j))
                print(f"{rule_name:9s} {s['folder']:14s} {s['structure']:34s} Dice {s['c'][p]['dice']:.3f} -> {s['c'][j]['dice']:.3f} ({d:+.3f}), "
                      f"agreement k+-1: choice {a_p:.2f}, replacement {a_j:.2f}", flush=True)
    for rule_name in ("unguarded", "guarded"):
        r = [(d, ap, aj) for n, d, ap, aj in rows if n == rule_name]
        for margin in (0.0, 0.05, 0.1):
            kept = [d for d, ap, aj in r if aj >= ap - margin]
            dropped = [d for d, ap, aj in r if aj < ap - margin]
            print(f"{rule_name}: replacement agreement >= choice's - {margin}: keeps {len(kept)} (better {sum(d > 0.02 for d in kept)}, "
                  f"worse {sum(d < -0.02 for d in kept)}), drops {len(dropped)} (better {sum(d > 0.02 for d in dropped)}, worse {sum(d < -0.02 for d in dropped)})")


if __name__ == "__main__":
    main()
