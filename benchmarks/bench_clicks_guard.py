"""Step 5 of the click search (9e34781) on the large training organs, and guards against its failure, offline.

Step 5 (a pairwise logistic model replacing steps 3-4's choice by a smaller candidate) was taken out (d58e595) after
it took CI's one-click liver (ct_liver_3slice, evaluation-only) from Dice 0.836 to 0.034. This script, on training
data only, replays it on `bench_clicks_dump.py --large`'s clicks on the large organs (five slices along each organ and
two off-centre clicks), says which candidates it takes there and why, and compares guards on the replacement:

  none      step 5 as fitted (smaller candidates only, bench_clicks_fit.py's "smaller");
  each guard, a condition a smaller candidate j must also meet to replace the choice p, applied both when fitting
  (only allowed pairs are training rows) and when choosing.

Each rule is fitted leave-one-folder-out on the 120 structures of `bench_clicks_dump.py` (fit on five folders,
measured on the sixth); the large-organ clicks are measured with the fit that left their own folder out. Judged on
the refined mask the search returns, 2D Dice on the prompt slice, click / one tight box capped at 2.

    PYTHONPATH=. python benchmarks/bench_clicks_guard.py DUMP_DIR LARGE_DUMP_DIR
"""
import argparse
from pathlib import Path

import numpy as np
from scipy import ndimage

from bench_clicks_fit import fit_replace, load, step34, step5_probability
from SlideSAMLib import clicks as C


def pair_evidence(s, j, p):
    """What the guards look at for smaller candidate j against the choice p (both parts of the same ladder)."""
    parts, in_band, ring_px = s["parts"], s["in_band"], s["ring_px"]
    a, b = parts[j], parts[p]
    ring = ndimage.binary_dilation(a, iterations=ring_px) & ~a
    inside = ring & b
    fj, fp = s["c"][j], s["c"][p]
    return dict(
        area_ratio=fj["area_mm2"] / fp["area_mm2"],
        fit_ratio=fj["fit"] / max(fp["fit"], 1e-6),
        edge_ratio=fj["edge"] / max(fp["edge"], 1e-12),
        ring_in_pick=float(inside.sum() / max(ring.sum(), 1)),  # its ring lies inside the larger choice
        ring_in_band=float(in_band[ring].mean()) if ring.any() else 0.0,  # its ring has the click's intensities
        sub_blob=float((inside & in_band).sum() / max(ring.sum(), 1)),  # ... and has them: a sub-blob of the region
        band_j=float(in_band[a].mean()), band_p=float(in_band[b].mean()),
        iou_j=fj["iou"], iou_p=fp["iou"])


GUARDS = {
    "none": lambda e: True,
    **{f"sub-blob < {t}": (lambda t: lambda e: e["sub_blob"] < t)(t) for t in (0.3, 0.5, 0.7)},
    **{f"fit ratio >= {t}": (lambda t: lambda e: e["fit_ratio"] >= t)(t) for t in (0.25, 0.5)},
    **{f"area ratio >= {t}": (lambda t: lambda e: e["area_ratio"] >= t)(t) for t in (0.01, 0.03, 0.1)},
}


def guarded(S, guard):
    for s in S:
        p = step34(s)
        s["allowed"] = {j for j in range(p) if s["c"][j] is not None and guard(pair_evidence(s, j, p))}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dump", type=Path)
    ap.add_argument("large", type=Path)
    ap.add_argument("--guards", nargs="*", help="guard names (default: all)")
    args = ap.parse_args()
    S, L = load(args.dump), load(args.large)
    folders = sorted({s["folder"] for s in S})
    main_r = lambda X: np.array([s["ratio"][step34(s)] for s in X])
    main_d = lambda X: np.array([s["c"][step34(s)]["dice"] for s in X])
    print(f"{len(S)} structures, {len(L)} large-organ clicks; one box {np.mean([s['box'] for s in S]):.3f} / {np.mean([s['box'] for s in L]):.3f}")
    print(f"main (steps 3-4): 120: click/box {main_r(S).mean():.3f}, below 0.7 x {(main_r(S) < 0.7).sum()}; large: click {main_d(L).mean():.3f}, "
          f"click/box {main_r(L).mean():.3f}, below 0.7 x {(main_r(L) < 0.7).sum()}")
    # 9e34781's constants, in-sample, on the large-organ clicks: which replacements, with which evidence
    print("\n9e34781's step 5 (its constants) on the large-organ clicks, where it changes steps 3-4's choice:")
    for s in L:
        p = step34(s)
        j = s["shipped"]
        if j != p:
            e = pair_evidence(s, j, p)
            prob = step5_probability(s["X8"], j, p)
            print(f"  {s['case']} {s['structure']}: square {p} -> {j}, Dice {s['c'][p]['dice']:.3f} -> {s['c'][j]['dice']:.3f} "
                  f"(box {s['box']:.3f}), P {prob:.2f}, " + ", ".join(f"{k} {v:.3g}" for k, v in e.items()))
            contrib = np.r_[s["X8"][j], s["X8"][j, :4] - s["X8"][p, :4]]
            from bench_clicks_fit import STEP5_WEIGHTS
            print("     terms w*x: " + " ".join(f"{v:+.2f}" for v in contrib * STEP5_WEIGHTS))
    print("\n| guard | 120 held out: mean click / box | below 0.7 x | changed (better / worse > 0.02) | large clicks held out: mean click | click / box | "
          "below 0.7 x | worse than main by > 0.02 Dice | worst loss |\n|---|---:|---:|---|---:|---:|---:|---:|---|")
    for name, guard in GUARDS.items():
        if args.guards and name not in args.guards:
            continue
        guarded(S + L, guard)
        held = {}
        for f in folders:
            rule = fit_replace([s for s in S if s["folder"] != f], smaller=True, allowed=True)
            held.update({id(s): rule(s) for s in S + L if s["folder"] == f})
        r = np.array([s["ratio"][held[id(s)]] for s in S])
        d = r - main_r(S)
        rl = np.array([s["ratio"][held[id(s)]] for s in L])
        dl = np.array([s["c"][held[id(s)]]["dice"] for s in L])
        loss = dl - main_d(L)
        w = int(np.argmin(loss))
        print(f"| {name} | {r.mean():.3f} | {(r < 0.7).sum()} | {int((np.abs(d) > 1e-9).sum())} ({(d > 0.02).sum()} / {(d < -0.02).sum()}) | "
              f"{dl.mean():.3f} | {rl.mean():.3f} | {(rl < 0.7).sum()} | {(loss < -0.02).sum()} | "
              f"{L[w]['case']} {L[w]['structure']} {main_d(L)[w]:.3f} -> {dl[w]:.3f} |", flush=True)


if __name__ == "__main__":
    main()
