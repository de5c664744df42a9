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

    PYTHONPATH=. python benchmarks/bench_clicks_guard.py DUMP_DIR LARGE_DUMP_DIR [--guards SUBSTRING ...] [--detail]
    PYTHONPATH=. python benchmarks/bench_clicks_guard.py DUMP_DIR LARGE_DUMP_DIR --weights "GUARD NAME"

`--weights`: that guard's rule fitted on all 120 in raw units (as written in clicks_step5_guarded.py, whose own code is
replayed and compared), with its in-sample figures. Results: RESULTS_clicks.md §9.
"""
import argparse
from pathlib import Path

import numpy as np
from scipy import ndimage

from bench_clicks_fit import STEP5_WEIGHTS, fit_replace, load, step34, step5_probability
from bench_clicks_slice import load_clicks

# Step 5 with the guard "ring in choice >= 0.75, sub-blob < 0.7", refitted: a whole clicks.py, NOT shipped (§9)
GUARDED = load_clicks(Path(__file__).with_name("clicks_step5_guarded.py"), "_clicks_step5_guarded")


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
    **{f"edge ratio >= {t}": (lambda t: lambda e: e["edge_ratio"] >= t)(t) for t in (1.0, 1.1)},
    **{f"IoU >= {t}": (lambda t: lambda e: e["iou_j"] >= t)(t) for t in (0.6, 0.7)},
    "IoU >= 0.6, sub-blob < 0.7": lambda e: e["iou_j"] >= 0.6 and e["sub_blob"] < 0.7,
    "edge ratio >= 1, sub-blob < 0.7": lambda e: e["edge_ratio"] >= 1.0 and e["sub_blob"] < 0.7,
    "edge ratio >= 1, IoU >= 0.6": lambda e: e["edge_ratio"] >= 1.0 and e["iou_j"] >= 0.6,
    # inside the choice (its ring mostly in the choice's mask) and cut from it by an intensity change (not a sub-blob)
    **{f"ring in choice >= {a}, sub-blob < {b}": (lambda a, b: lambda e: e["ring_in_pick"] >= a and e["sub_blob"] < b)(a, b)
       for a in (0.5, 0.75, 0.9) for b in (0.6, 0.7, 0.8)},
}


PAIRS = {
    "step5": None,  # 9e34781's: eight features of j, the first four's differences to the choice
    # without the two inputs that grow without bound away from the training pairs: the log-area difference and j's own log IoU
    "bounded": lambda s, j, p: np.delete(np.r_[s["X8"][j], s["X8"][j, :4] - s["X8"][p, :4]], [0, 10]),
}


def shipped_choice(s):
    """The candidate clicks_step5_guarded.py's steps 3-5 choose for a dumped structure (its own code and constants)."""
    shell = object.__new__(GUARDED.ClickSearch)
    shell.rows, shell.cols = s["image"].shape
    shell.ring_px, shell.pixel_mm = s["ring_px"], s["pixel_mm"]
    n = len(s["parts"])
    ladder = [None if s["c"][i] is None else (None, None, s["parts"][i]) for i in range(n)]
    p = step34(s)
    allowed = [c is not None and i < p and shell._nested_apart(c[2], s["parts"][p], s["in_band"]) for i, c in enumerate(ladder)]
    return shell._replacement(s["X8"], p, allowed)


def guarded(S, guard):
    for s in S:
        p = step34(s)
        s["allowed"] = {j for j in range(p) if s["c"][j] is not None and guard(pair_evidence(s, j, p))}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dump", type=Path)
    ap.add_argument("large", type=Path)
    ap.add_argument("--guards", nargs="*", help="run the guards whose names contain one of these (default: all)")
    ap.add_argument("--choice-only", action="store_true", help="fit on every pair, apply the guard when choosing only")
    ap.add_argument("--pair", choices=sorted(PAIRS), default="step5", help="the pairwise input (default: step 5's)")
    ap.add_argument("--weights", help="print this guard's rule fitted on all 120 (raw units) and its in-sample figures")
    ap.add_argument("--detail", action="store_true", help="list each structure a rule changes")
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
            print("     terms w*x: " + " ".join(f"{v:+.2f}" for v in contrib * STEP5_WEIGHTS))
    if args.weights:  # the guard's rule fitted on all 120, in raw units (clicks_step5_guarded.py's), in-sample figures
        guarded(S + L, GUARDS[args.weights])
        w, b = fit_replace(S, smaller=True, allowed=True, raw=True)
        print(f"{args.weights}: REPLACE_WEIGHTS = np.array([" + ", ".join(f"{v:.6g}" for v in w) + f"])\nREPLACE_BIAS = {b:.6g}")
        rule = fit_replace(S, smaller=True, allowed=True)
        for X, tag in ((S, "120"), (L, "large")):
            picks = [rule(s) for s in X]
            shipped = [shipped_choice(s) for s in X]  # clicks_step5_guarded.py's own step 5, replayed
            print(f"{tag}: clicks_step5_guarded.py's step 5 replayed differs from this fit on {sum(a != b for a, b in zip(picks, shipped))}")
            r = np.array([s["ratio"][j] for s, j in zip(X, picks)])
            d = np.array([s["c"][j]["dice"] for s, j in zip(X, picks)])
            print(f"in-sample {tag}: mean click {d.mean():.3f}, click / box {r.mean():.3f}, below 0.7 x {(r < 0.7).sum()}, "
                  f"worse than main by > 0.02 Dice {(d - main_d(X) < -0.02).sum()}")
            for s, j in zip(X, picks):
                p = step34(s)
                if j != p:
                    print(f"    {s['folder']} {s['structure']} ({s['pixels']} px): Dice {s['c'][p]['dice']:.3f} -> {s['c'][j]['dice']:.3f}, "
                          f"click/box {s['ratio'][p]:.2f} -> {s['ratio'][j]:.2f}")
        return
    print("\n| guard | 120 held out: mean click / box | below 0.7 x | changed (better / worse > 0.02) | large clicks held out: mean click | click / box | "
          "below 0.7 x | worse than main by > 0.02 Dice | worst loss |\n|---|---:|---:|---|---:|---:|---:|---:|---|")
    for name, guard in GUARDS.items():
        if args.guards and not any(g in name for g in args.guards):
            continue
        guarded(S + L, guard)
        held = {}
        for f in folders:
            rule = fit_replace([s for s in S if s["folder"] != f], smaller=True, allowed=True, fit_all=args.choice_only, pair=PAIRS[args.pair])
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
        if args.detail:
            for X, tag in ((S, "120"), (L, "large")):
                for s in X:
                    p, j = step34(s), held[id(s)]
                    if j != p:
                        print(f"    {tag} {s['folder']} {s['structure']} ({s['pixels']} px): click/box {s['ratio'][p]:.2f} -> {s['ratio'][j]:.2f}, "
                              f"Dice {s['c'][p]['dice']:.3f} -> {s['c'][j]['dice']:.3f}, " + ", ".join(f"{k} {v:.2f}" for k, v in pair_evidence(s, j, p).items()))


if __name__ == "__main__":
    main()
