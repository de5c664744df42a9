"""Can a prompt-time feature choose the box margin per structure? Offline, leave-one-folder-out
(RESULTS_rules.md, "Session 9: can a prompt-time feature choose the margin? (offline)").

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/margin_rule.py SWEEP.json [SWEEP2.json ...] [--features-cache F.json]

SWEEP*.json: `sweep_rules.py` runs with the variants default (5 model px), margin4 and margin3 (merged as
margin_table.py does: by case, image, label file and label; only structures that have all three count). No model is
run: the one-box Dice of every structure at each margin is read from the sweeps.

Features are what the engine could know at PROMPT time, from the prompt slice alone: eval's prompt is the tight
reference box on the structure's largest slice (slice axis k), and the mask there is the reference's (in the engine
it would be the prompt decode's mask, which this offline analysis does not decode; see the verdict). Per structure:
size (mask area and box sides in model-input px, area in mm^2), fill (mask / tight box area), compactness
(4 pi A / P^2, P = boundary pixels), intensity inside vs a ring outside the mask (the ring is 5 model px wide, the
default margin), and the modality as the engine has it (`Session` runs `preprocess.guess_modality` on the volume
when none is given; nothing else about the folder is used). Intensities enter only as unit-free ratios.

A rule is (feature, direction, threshold, small margin m in {3, 4}): margin m where `feature <= t` (or `>= t`), the
default 5 elsewhere. It is fitted by the pooled mean one-box Dice over the training structures it sees (ties: the
rule that changes fewer structures; "never" = 5 everywhere is a candidate). Leave-one-folder-out: for each of the six
training folders, the rule (feature included) is chosen on the other five and scored on the held-out one; the
pooled held-out figure scores every structure with the rule fitted without its folder. Training folders only.
"""
import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

import sweep_rules
from analyse_ends import folder
from margin_table import CI_FLOORS, MARGIN

VARIANT_OF = {5: "default", 4: "margin4", 3: "margin3"}
RING_MODEL_PX = 5.0  # the ring outside the mask: the default margin's width (propagation.BOX_MARGIN_MODEL_PX)
IMG_SIZE = 256  # the embedded LiteMedSAM default's input side; longest slice side -> 256 (keep_aspect)
FEATURES = ["area_model_px2", "min_side_model_px", "max_side_model_px", "area_mm2", "fill", "compactness",
            "contrast", "ring_lookalike", "box_lookalike", "spread_ratio", "in_rel_iqr", "is_ct"]


def slice_features(image2d, mask2d, spacing_xy, modality):
    """Prompt-slice features of one structure (see the module docstring)."""
    rows, cols = mask2d.shape
    s = IMG_SIZE / max(rows, cols)  # model px per image px
    ys, xs = np.nonzero(mask2d)
    x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
    w, h = x1 - x0 + 1, y1 - y0 + 1
    area = int(mask2d.sum())
    r = RING_MODEL_PX / s  # ring width, image px
    pad = int(math.ceil(r)) + 2
    sl = (slice(max(0, y0 - pad), min(rows, y1 + pad + 1)), slice(max(0, x0 - pad), min(cols, x1 + pad + 1)))
    m, im = mask2d[sl], image2d[sl].astype(np.float64)
    dist = ndimage.distance_transform_edt(~m)
    ring = (dist > 0) & (dist <= r)
    # the margin-5 box around the tight box, minus the mask: what the default box adds around the structure
    gy0, gx0 = y0 - sl[0].start, x0 - sl[1].start
    box = np.zeros_like(m)
    rr = int(round(r))
    box[max(0, gy0 - rr):gy0 + h + rr, max(0, gx0 - rr):gx0 + w + rr] = True
    box_bg = box & ~m
    inside = im[m]
    lo, hi = np.percentile(inside, [10, 90])
    q1, med, q3 = np.percentile(inside, [25, 50, 75])
    rq1, rmed, rq3 = np.percentile(im[ring], [25, 50, 75]) if ring.any() else (np.nan,) * 3
    iqr_in, iqr_ring = q3 - q1, rq3 - rq1
    boundary = m & ~ndimage.binary_erosion(m)
    perim = max(int(boundary.sum()), 1)
    eps = 1e-6
    return {
        "area_model_px2": area * s * s,
        "min_side_model_px": min(w, h) * s,
        "max_side_model_px": max(w, h) * s,
        "area_mm2": area * spacing_xy[0] * spacing_xy[1],
        "fill": area / float(w * h),
        "compactness": 4 * math.pi * area / perim ** 2,
        # |inside median - ring median| over the mean of the two IQRs
        "contrast": abs(med - rmed) / (0.5 * (iqr_in + iqr_ring) + eps),
        # share of the ring / of the margin-5 box background inside the inside's 10-90 % band: neighbours that look alike
        "ring_lookalike": float(np.mean((im[ring] >= lo) & (im[ring] <= hi))) if ring.any() else np.nan,
        "box_lookalike": float(np.mean((im[box_bg] >= lo) & (im[box_bg] <= hi))) if box_bg.any() else np.nan,
        "spread_ratio": iqr_ring / (iqr_in + eps),
        # inside IQR relative to the slice's IQR (unit-free)
        "in_rel_iqr": iqr_in / (np.subtract(*np.percentile(image2d, [75, 25])) + eps),
        "is_ct": 1.0 if modality == "ct" else 0.0,
    }


def compute_features(rows):
    from SlideSAMLib.evaluation import evaluate
    from SlideSAMLib.preprocess import guess_modality

    out = {}
    for group in sorted({r["case"] for r in rows}):
        paths = sweep_rules.CASES[group]
        case = evaluate.load_case(*paths, name=group)
        modality, why = guess_modality(case.volume)
        print(f"{group}: {why}", file=sys.stderr, flush=True)
        for r in (r for r in rows if r["case"] == group):
            truth = case.labels == r["label"]
            areas = truth.reshape(truth.shape[0], -1).sum(axis=1)
            k0 = int(np.argmax(areas))
            if k0 != r["prompt_slice"]:
                raise SystemExit(f"{group} {r['structure']}: largest slice {k0}, the sweep's prompt slice {r['prompt_slice']}")
            out[f"{group}|{r['label']}"] = slice_features(case.volume[k0], truth[k0], case.spacing[:2], modality)
        del case
    return out


def fid(r):
    return f"{r['case']}|{r['label']}"


def rule_margins(F, rule):
    """Per structure, the margin the rule picks (5 where it does not fire or where the feature is nan)."""
    if rule is None:
        return np.full(len(next(iter(F.values()))), 5)
    f, op, t, m = rule
    v = F[f]
    fire = (v <= t) if op == "<=" else (v >= t)
    return np.where(fire & ~np.isnan(v), m, 5)


def dice_under(D, margins):
    return np.choose(np.searchsorted([3, 4, 5], margins), [D[3], D[4], D[5]])


def fit(F, D, idx, features=FEATURES):
    """The rule with the best pooled mean one-box Dice on structures `idx` (ties: fewer changed structures)."""
    best = (D[5][idx].mean(), 0, None)
    for f in features:
        v = F[f][idx]
        u = np.unique(v[~np.isnan(v)])
        if len(u) < 2:
            continue
        ts = np.concatenate([(u[:-1] + u[1:]) / 2])
        for op in ("<=", ">="):
            for m in (3, 4):
                for t in ts:
                    mm = rule_margins({f: v}, (f, op, t, m))
                    score = dice_under({k: D[k][idx] for k in D}, mm).mean()
                    changed = int((mm != 5).sum())
                    if (score, -changed) > (best[0], -best[1]):
                        best = (score, changed, (f, op, float(t), m))
    return best[2]


def show(rule):
    return "never (5 everywhere)" if rule is None else f"{rule[0]} {rule[1]} {rule[2]:.4g} -> {rule[3]} px"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweeps", nargs="+")
    ap.add_argument("--permutations", type=int, default=100, help="shuffles per feature for the diagnostic table's chance column")
    ap.add_argument("--features-cache", help="JSON: read the features from it if it exists, else compute and write them")
    args = ap.parse_args()
    rows = sweep_rules.merged(args.sweeps, list(VARIANT_OF.values()))
    cache = Path(args.features_cache) if args.features_cache else None
    if cache is not None and cache.exists():
        feats = json.loads(cache.read_text())
    else:
        feats = compute_features(rows)
        if cache is not None:
            cache.write_text(json.dumps(feats, indent=1))
    F = {f: np.array([feats[fid(r)][f] for r in rows], dtype=float) for f in FEATURES}
    D = {m: np.array([r["variants"][n]["dice"] for r in rows]) for m, n in VARIANT_OF.items()}
    folders = sorted(set(map(folder, rows)))
    fmask = {g: np.array([folder(r) == g for r in rows]) for g in folders}
    n = len(rows)
    best_each = np.maximum(np.maximum(D[3], D[4]), D[5])
    print(f"{n} structures in {len(folders)} folders ({', '.join(f'{g} {fmask[g].sum()}' for g in folders)})")
    print(f"mean one-box Dice: 5 px {D[5].mean():.4f}, 4 px {D[4].mean():.4f}, 3 px {D[3].mean():.4f}; "
          f"per-structure best of the three (oracle ceiling) {best_each.mean():.4f}\n")

    # which margin each structure wants, against each feature (Spearman-like: rank correlation with the 3-px gain)
    gain3 = D[3] - D[5]
    print("Each feature against the 3-px gain (Dice at 3 px - at 5 px): rank correlation; medians where 3 px is better / worse by > 0.02\n")
    print("| feature | rank corr. with 3-px gain | median, 3 px better (n) | median, 3 px worse (n) | median, all |")
    print("|---|---:|---:|---:|---:|")
    better, worse = gain3 > MARGIN, gain3 < -MARGIN
    for f in FEATURES:
        v = F[f]
        ok = ~np.isnan(v)
        rc = np.corrcoef(np.argsort(np.argsort(v[ok])), np.argsort(np.argsort(gain3[ok])))[0, 1]
        print(f"| {f} | {rc:+.2f} | {np.nanmedian(v[better]):.4g} ({better.sum()}) | {np.nanmedian(v[worse]):.4g} ({worse.sum()}) | {np.nanmedian(v):.4g} |")

    allidx = np.arange(n)
    rule_all = fit(F, D, allidx)
    mm_all = rule_margins(F, rule_all)
    d_all = dice_under(D, mm_all)
    print(f"\nIn-sample (fitted and scored on all {n}; an upper bound, not a result): {show(rule_all)}: mean {d_all.mean():.4f} "
          f"vs {D[5].mean():.4f}, better / worse by > 0.02: {((d_all - D[5]) > MARGIN).sum()} / {((d_all - D[5]) < -MARGIN).sum()}, "
          f"structures changed {(mm_all != 5).sum()}\n")
    print("| folder | structures | in-sample rule vs 5 px | better / worse by > 0.02 | changed |\n|---|---:|---:|---:|---:|")
    for g in folders:
        te = fmask[g]
        dd = (d_all - D[5])[te]
        print(f"| {g} | {te.sum()} | {d_all[te].mean():.4f} vs {D[5][te].mean():.4f} | {(dd > MARGIN).sum()} / {(dd < -MARGIN).sum()} | {(mm_all[te] != 5).sum()} |")
    print()

    print("Leave-one-folder-out: the rule (feature, direction, threshold, margin) fitted on the other five folders, on the held-out one\n")
    print("| held out | structures | rule fitted on the other five | held-out mean: rule vs 5 px | better / worse by > 0.02 | changed |")
    print("|---|---:|---|---:|---:|---:|")
    held = np.zeros(n)
    held_m = np.full(n, 5)
    rules = {}
    for g in folders:
        tr, te = np.nonzero(~fmask[g])[0], fmask[g]
        rule = fit(F, D, tr)
        rules[g] = rule
        mm = rule_margins(F, rule)
        d = dice_under(D, mm)
        held[te], held_m[te] = d[te], mm[te]
        diff = (d - D[5])[te]
        print(f"| {g} | {te.sum()} | {show(rule)} | {d[te].mean():.4f} vs {D[5][te].mean():.4f} | "
              f"{(diff > MARGIN).sum()} / {(diff < -MARGIN).sum()} | {(mm[te] != 5).sum()} |")
    diff = held - D[5]
    print(f"| **pooled** | {n} | (each structure by its fold's rule) | **{held.mean():.4f} vs {D[5].mean():.4f}** | "
          f"{(diff > MARGIN).sum()} / {(diff < -MARGIN).sum()} | {(held_m != 5).sum()} |")
    fm = np.mean([held[fmask[g]].mean() for g in folders]), np.mean([D[5][fmask[g]].mean() for g in folders])
    print(f"\nmean of folder means, held out: {fm[0]:.4f} vs {fm[1]:.4f}")
    lst = sorted((i for i in range(n) if abs(diff[i]) > MARGIN), key=lambda i: diff[i])
    if lst:
        print("\nHeld-out moves > 0.02 (structure: margin picked, Dice 5 px -> rule)\n")
        for i in lst:
            print(f"- {rows[i]['case']} {rows[i]['structure']}: {held_m[i]} px, {D[5][i]:.3f} -> {held[i]:.3f} ({diff[i]:+.3f})")

    print("\nexample_ct's CI-floor organs (Testing/engine/test_propagation.py floors; Dice only, ends as in margin_table.py)\n")
    print("| organ | floor | 5 px | held-out rule (fitted without ct_abdomen) | all-folder rule |")
    print("|---|---:|---:|---|---|")
    for organ, floor in CI_FLOORS.items():
        i = next((i for i, r in enumerate(rows) if (r["case"], r["structure"]) == ("ct_abdomen", organ)), None)
        if i is None:
            print(f"| {organ} | {floor} | not in the sweeps | | |")
            continue
        cells = []
        for m in (held_m[i], mm_all[i]):
            r = rows[i]["variants"][VARIANT_OF[int(m)]]
            ends_ok = all(s["delta"] is not None and abs(s["delta"]) <= 2 for s in r["stops"].values())
            cells.append(f"{int(m)} px: {r['dice']:.3f} {'ok' if r['dice'] >= floor and ends_ok else 'BELOW FLOOR / ENDS'}")
        print(f"| {organ} | {floor} | {D[5][i]:.3f} | {cells[0]} | {cells[1]} |")

    print("\nDiagnostic only (the feature fixed beforehand, only direction / threshold / margin fitted per fold; choosing the best "
          "row of this table afterwards would be fitting on the held-out folders)\n")
    print("| feature | pooled held-out mean vs 5 px | better / worse by > 0.02 | folds where it fires on held-out structures | "
          f"share of {args.permutations} shuffles of this feature that gain as much |")
    print("|---|---:|---:|---:|---:|")

    def lofo_one(FF, f):
        h, fires = np.zeros(n), 0
        for g in folders:
            te = fmask[g]
            mm = rule_margins(FF, fit(FF, D, np.nonzero(~te)[0], [f]))
            h[te] = dice_under(D, mm)[te]
            fires += int((mm[te] != 5).any())
        return h, fires

    rng = np.random.default_rng(0)
    for f in FEATURES:
        h, fires = lofo_one(F, f)
        dd = h - D[5]
        # the same fit on the feature's values shuffled across structures: how often chance gains as much held out
        null = [lofo_one({f: rng.permutation(F[f])}, f)[0].mean() for _ in range(args.permutations)]
        share = np.mean(np.array(null) >= h.mean()) if null else float("nan")
        print(f"| {f} | {h.mean():.4f} vs {D[5].mean():.4f} | {(dd > MARGIN).sum()} / {(dd < -MARGIN).sum()} | {fires} | {share:.2f} |")


if __name__ == "__main__":
    main()
