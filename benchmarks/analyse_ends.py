"""Score candidate end signals offline on a `sweep_rules.py --features` run (RESULTS_rules.md, "Session 8: ends").

A candidate is a per-window signal and a threshold: the chain ends at the first window (in the default run's order)
where it fires. Because it only adds a rejection to the default rule, its result is the default run cut there, and
its 3D Dice follows from each slice's recorded area and intersection with the reference (exact for the default
itself; for a cut chain the last kept slice misses the rejected window's side prediction, a small difference that the
real sweep variants then measure).

    python benchmarks/analyse_ends.py FEATURES.json [--out TABLES.md]

Per candidate: the detector figure (how well the signal separates the windows past the reference's end from those
inside it: AUC, over all accepted windows of the default run), and per threshold the simulated mean one-box Dice,
structures better / worse than the default by > 0.02, worst drop, chain ends 2+ slices early / past; then each
signal's best threshold chosen leave-one-folder-out (chosen on five folders, its gain on the sixth).
"""
import argparse
import json
import math
from pathlib import Path

import numpy as np

FOLDER = {"spine_ct_vert": "ct_mr_spine", "spine_ct_subreg": "ct_mr_spine", "spine_mr_vert": "ct_mr_spine",
          "spine_mr_subreg": "ct_mr_spine"}


def folder(row):
    return FOLDER.get(row["case"], row["case"])


def _num(v):
    return float("nan") if v is None else float(v)


def signals(chain, ref_area):
    """Per window of one chain (ordered away from the prompt), the candidate signals: higher = more 'ended'."""
    out, stabs, top, low = [], [], ref_area, None
    for f in chain:
        s = {}
        s["1-stability"] = 1 - f["stability"]
        med = np.median(stabs) if stabs else f["stability"]
        s["stability drop"] = med - f["stability"]  # below the chain's median so far
        s["1-iou"] = 1 - f["iou"]
        s["|drift median| (IQR)"] = abs(_num(f.get("drift_median")))
        s["|drift mean| (IQR)"] = abs(_num(f.get("drift_mean")))
        s["1-contrast ratio"] = 1 - _num(f.get("contrast_ratio"))
        s["1-gradient ratio"] = 1 - _num(f.get("grad_ratio"))
        s["1-kept by constrain"] = 1 - f["kept"]
        s["raw / constrained area"] = f["raw_area"] / max(f["area"], 1)
        s["1-Dice to previous"] = 1 - _num(f.get("dice_prev"))
        s["centroid drift (mm)"] = _num(f.get("centroid_mm"))
        s["1-overlap"] = 1 - f["overlap"]
        # regrowth after a dip: the area over the smallest area since the chain's largest, once that fell below
        # 50 % of the largest
        a = f["area"]
        if low is not None and low < 0.5 * top:
            s["regrowth after dip"] = a / max(low, 1)
        else:
            s["regrowth after dip"] = 1.0
        s["shrink (1 - area/prompt area)"] = 1 - a / max(ref_area, 1)
        out.append(s)
        if f["accepted"]:
            stabs.append(f["stability"])
            if a > top:
                top, low = a, None
            else:
                low = a if low is None else min(low, a)
    return out


def chains(row):
    feats = row["features"]
    k0 = feats["start"]["index"]
    by = {1: [], -1: []}
    for f in feats["slices"]:
        by[f["dir"]].append(f)
    for d in by:
        by[d].sort(key=lambda f: abs(f["index"] - k0))
    return by


def simulate(row, cut):
    """(3D Dice, {dir: delta}) of the default run cut where `cut[d]` says (index into that chain's windows; None: not cut)."""
    st = row["features"]["start"]
    inter, area = st["final_inter"], st["final_area"]
    te = row["extent_true"]
    deltas = {}
    for d, chain in chains(row).items():
        stop = cut.get(d)
        last = st["index"]
        for j, f in enumerate(chain):
            if (stop is not None and j >= stop) or not f["accepted"]:
                break
            inter += f["final_inter"]
            area += f["final_area"]
            last = f["index"]
        deltas[d] = (last - te[1]) if d > 0 else (te[0] - last)
    return 2 * inter / max(area + row["voxels"], 1), deltas


def first_fire(sig, name, thr):
    for j, s in enumerate(sig):
        v = s[name]
        if not math.isnan(v) and v > thr:
            return j
    return None


def auc(pos, neg):
    pos, neg = np.asarray([p for p in pos if not math.isnan(p)]), np.asarray([n for n in neg if not math.isnan(n)])
    if not pos.size or not neg.size:
        return float("nan")
    allv = np.concatenate([pos, neg])
    ranks = allv.argsort().argsort() + 1.0
    # average ties
    for v in np.unique(allv):
        idx = allv == v
        ranks[idx] = ranks[idx].mean()
    return float((ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2) / (pos.size * neg.size))


def evaluate(rows, sigs, name, thr):
    dices, early, past = [], 0, 0
    for row in rows:
        cut = {d: first_fire(sigs[id(row)][d], name, thr) for d in (1, -1)}
        dsc, deltas = simulate(row, cut)
        dices.append(dsc)
        early += sum(v <= -2 for v in deltas.values())
        past += sum(v >= 2 for v in deltas.values())
    return np.array(dices), early, past


THRESHOLDS = {
    "1-stability": [0.3, 0.4, 0.5, 0.6, 0.7], "stability drop": [0.1, 0.15, 0.2, 0.3, 0.4],
    "1-iou": [0.4, 0.45, 0.5, 0.55, 0.6], "|drift median| (IQR)": [0.5, 0.75, 1.0, 1.5, 2.0, 3.0],
    "|drift mean| (IQR)": [0.5, 0.75, 1.0, 1.5, 2.0, 3.0], "1-contrast ratio": [0.5, 0.6, 0.7, 0.8, 0.9, 1.0],
    "1-gradient ratio": [0.3, 0.4, 0.5, 0.6, 0.7, 0.8], "1-kept by constrain": [0.3, 0.5, 0.6, 0.7, 0.8, 0.9],
    "raw / constrained area": [1.5, 2, 3, 4, 6, 10], "1-Dice to previous": [0.3, 0.4, 0.5, 0.6, 0.7],
    "centroid drift (mm)": [3, 5, 7, 10, 15], "1-overlap": [0.35, 0.4, 0.45],
    "regrowth after dip": [1.2, 1.5, 2.0, 3.0], "shrink (1 - area/prompt area)": [0.8, 0.9, 0.95, 0.98],
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("features", nargs="+")
    ap.add_argument("--out")
    args = ap.parse_args()
    rows = [r for p in args.features for r in json.loads(Path(p).read_text())["rows"] if "features" in r]
    sigs = {}
    for row in rows:
        ref = row["features"]["start"]
        sigs[id(row)] = {d: signals(ch, max(ref["final_area"], 1)) for d, ch in chains(row).items()}
    base = np.array([simulate(row, {})[0] for row in rows])
    check = max(abs(b - r["variants"]["default"]["dice"]) for b, r in zip(base, rows))
    lines = [f"{len(rows)} structures, {len(set(map(folder, rows)))} folders; simulated default mean {base.mean():.4f} "
             f"(largest difference to the run's own Dice {check:.4f})", ""]
    # detector figures: accepted windows past the reference's end vs inside it
    lines += ["| signal | AUC past-end vs inside (all) | first past-end vs inside | per folder AUC |", "|---|---:|---:|---|"]
    for name in THRESHOLDS:
        pos, first, neg, per = [], [], [], {}
        for row in rows:
            te = row["extent_true"]
            for d, ch in chains(row).items():
                seen = False
                for f, s in zip(ch, sigs[id(row)][d]):
                    if not f["accepted"]:
                        continue
                    inside = te[0] <= f["index"] <= te[1]
                    p = per.setdefault(folder(row), ([], []))
                    (neg if inside else pos).append(s[name])
                    (p[1] if inside else p[0]).append(s[name])
                    if not inside and not seen:
                        first.append(s[name])
                        seen = True
        lines.append(f"| {name} | {auc(pos, neg):.3f} (n {len(pos)} / {len(neg)}) | {auc(first, neg):.3f} (n {len(first)}) | "
                     + ", ".join(f"{k} {auc(*v):.2f}" for k, v in sorted(per.items())) + " |")
    lines += ["", "| signal > threshold ends the chain | mean Dice | vs default | better / worse by > 0.02 | worst drop (structure) | early ≥ 2 | past ≥ 2 |",
              "|---|---:|---:|---:|---|---:|---:|"]
    _, e0, p0 = evaluate(rows, sigs, "1-stability", 9e9)
    lines.append(f"| default | {base.mean():.4f} | +0.0000 | 0 / 0 | - | {e0} | {p0} |")
    best = {}
    for name, ths in THRESHOLDS.items():
        for t in ths:
            d, e, p = evaluate(rows, sigs, name, t)
            diff = d - base
            w = int(np.argmin(diff))
            lines.append(f"| {name} > {t} | {d.mean():.4f} | {d.mean() - base.mean():+.4f} | {(diff > 0.02).sum()} / {(diff < -0.02).sum()} | "
                         f"{diff[w]:+.3f} ({rows[w]['case']} {rows[w]['structure']}) | {e} | {p} |")
            best.setdefault(name, []).append((t, diff))
    # leave one folder out: on five folders choose the threshold with the best mean gain among those that lose
    # nowhere by more than 0.03 (none: no rule); report the sixth folder's gain and worst drop with it
    folders = sorted(set(map(folder, rows)))
    lines += ["", "Leave one folder out (threshold chosen on the other five: best mean gain, no structure there losing > 0.03):", "",
              "| signal | " + " | ".join(folders) + " |", "|---|" + "---|" * len(folders)]
    for name, opts in best.items():
        cells = []
        for held in folders:
            inn = np.array([folder(r) != held for r in rows])
            ok = [(diff[inn].mean(), t, diff) for t, diff in opts if diff[inn].min() >= -0.03]
            if not ok or max(ok)[0] <= 0:
                cells.append("no rule")
                continue
            g, t, diff = max(ok, key=lambda x: x[0])
            out = diff[~inn]
            cells.append(f"{t}: {out.mean():+.3f} (worst {out.min():+.3f})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
