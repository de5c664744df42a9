"""Choice rules for the click search compared offline on `bench_clicks_dump.py`'s candidates, leave-one-folder-out.

Each structure's candidates get the features the search can compute (SlideSAMLib/clicks.py's own `_band`, `_fit`,
`_edge`, `_on_border`; plus area, compactness, the click's offset from the centroid, the refining decode's IoU and
its agreement with the part, and how many other squares give the same part). A rule picks one candidate; it is
judged on what the search would return for it (the refined mask), 2D Dice against the reference, as click / one
tight box capped at 2, and the count below 0.7 x box. Rules:

  main      clicks.py's steps 3 + 4 (replayed: must equal what the dump's search, main's code, returned);
  grid      step 4's four limits re-chosen on the training folders (216 settings);
  rank      a linear score of the features, argmax, fitted by a softmax over each ladder (expected click / box);
  replace   main's pick, replaced by the candidate a logistic pairwise model says beats it by > 0.05 (P > 0.5),
            any candidate (larger or smaller), with the refined-decode features;
  smaller   the same, smaller candidates only, step 5's eight features (STEP5_FEATURES) (no refining decodes): step 5;
  shipped   steps 3-5 with 9e34781's constants (STEP5_WEIGHTS, must equal "smaller, in-sample"; not in clicks.py since d58e595).
`--weights` prints the fit of "smaller" on all structures in raw units (STEP5_WEIGHTS).

Fitted rules are reported in-sample (fit on all 120) and held out (fit on five folders, measured on the sixth).
Needs numpy and scipy only.

    PYTHONPATH=. python benchmarks/bench_clicks_fit.py DUMP_DIR
"""
import argparse
import itertools
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from scipy import ndimage
from scipy.optimize import minimize

from SlideSAMLib import clicks as C
from SlideSAMLib.evaluation.metrics import dice
from bench_clicks_slice import load_clicks

GUARDED = load_clicks(Path(__file__).with_name("clicks_step5_guarded.py"), "_clicks_step5_guarded")
E = 1e-3
RANK = ["log_iou", "log_fit", "log_area_mm2", "log_edge_rel", "border", "stable", "compact", "offset", "log_refined_iou", "refined_agree", "plateau", "is_main"]


def load(d: Path):
    out = []
    for e in json.loads((d / "index.json").read_text()):
        z = np.load(d / e["file"])
        image, truth, (x, y), parts, missing = z["image"], z["truth"], z["click"], z["parts"], z["missing"]
        shell = object.__new__(C.ClickSearch)  # the search's own band and fit, without a predictor
        shell.rows, shell.cols = image.shape
        shell.disc_px, shell.ring_px = float(z["disc_px"]), int(z["ring_px"])
        in_band, grad = shell._band(image, [(x, y)]), np.hypot(ndimage.sobel(image, 0), ndimage.sobel(image, 1))
        n, rows = len(parts), []
        for i in range(n):
            if missing[i]:
                rows.append(None)
                continue
            p, r = parts[i], z["refined"][i]
            nxt = parts[i + 1] if i + 1 < n and not missing[i + 1] else None
            cy, cx = ndimage.center_of_mass(p)
            a = float(p.sum())
            rows.append(dict(
                iou=float(z["ious"][i]), fit=shell._fit(p, in_band), edge=C._edge(p, grad), border=C._on_border(p, z["boxes"][i]),
                stable=dice(p, nxt) if nxt is not None else 0.0, area_mm2=a * float(z["pixel_mm"]) ** 2,
                compact=4 * np.pi * a / max(int((p & ~ndimage.binary_erosion(p)).sum()), 1) ** 2,
                offset=float(np.hypot(cx - x, cy - y) / np.sqrt(a / np.pi)), refined_iou=float(z["refined_iou"][i]),
                refined_agree=dice(p, r), plateau=sum(j != i and not missing[j] and dice(p, parts[j]) >= 0.8 for j in range(n)),
                dice=dice(r if r[y, x] else p, truth)))  # the search returns the refined decode when it holds the click
        ladder = [None if missing[i] else (z["boxes"][i], SimpleNamespace(iou=float(z["ious"][i])), parts[i]) for i in range(n)]
        e["X8"] = step5_features(shell, ladder, in_band, grad, (x, y), float(z["pixel_mm"]))
        e["shipped"] = step5_replacement(e["X8"], step34({"c": rows}))
        e.update(image=image, in_band=in_band, grad=grad, parts=parts, click=(int(x), int(y)), pixel_mm=float(z["pixel_mm"]), ring_px=int(z["ring_px"]), path=d / e["file"])
        box = dice(z["box_mask"], truth)
        e.update(c=rows, box=box, returned=dice(z["returned"], truth), folder="ct_mr_spine" if e["case"].startswith("spine_") else e["case"])
        e["ratio"] = np.array([0.0 if c is None else min(c["dice"] / max(box, 1e-6), 2.0) for c in rows])
        out.append(e)
    return out


# Step 5 as merged in 9e34781 and taken out in d58e595 (it took CI's one-click liver on ct_liver_3slice from 0.836 to
# 0.034): its eight features, its pairwise input and its constants, kept here to replay it (RESULTS_clicks.md §8-§9).
STEP5_FEATURES = ("log decoder IoU", "log step-3 fit", "log area mm2", "log edge / sharpest edge of the ladder",
                  "share of outline on the box border", "Dice with the next square's part", "compactness 4 pi A / P^2",
                  "click to centroid / equivalent radius")
STEP5_WEIGHTS = np.array([-1.78176, 0.0492789, 0.39554, 0.665479, -0.425273, 0.599669, -2.11362, -0.56891,
                          0.949301, 0.0894822, -0.752829, 0.786693])
STEP5_BIAS = -2.11237


def step5_features(shell, candidates, in_band, gradient, click, pixel_mm):
    """Step 5's features of each candidate (9e34781's `ClickSearch._features`, kept in clicks_step5_guarded.py; a row
    of NaN where it missed a click). `shell`: a clicks.ClickSearch of the dumped slice (its ring and band)."""
    search = object.__new__(GUARDED.ClickSearch)
    search.__dict__.update(vars(shell), pixel_mm=pixel_mm)
    return search._features(candidates, in_band, gradient, click)


step5_pair = GUARDED.pair_features  # candidate j's features, then the first four's differences to the choice


def step5_probability(features, j, pick, weights=STEP5_WEIGHTS, bias=STEP5_BIAS):
    return float(1.0 / (1.0 + np.exp(-(step5_pair(features, j, pick) @ weights + bias))))


def step5_replacement(features, pick, allowed=lambda j: True):
    """9e34781's step 5: the smaller candidate most likely to beat the choice `pick`, where that probability > 0.5."""
    best, top = pick, 0.5
    for j in range(pick):
        if not np.isnan(features[j, 0]) and allowed(j):
            p = step5_probability(features, j, pick)
            best, top = (j, p) if p > top else (best, top)
    return best


def step34(s, contained=C.CONTAINED_MAX, stable=C.STABLE_MIN, iou=C.IOU_MIN, edge=C.EDGE_GAIN):
    """clicks.py's choice (step 3's score, then step 4's smaller candidate) with the given step-4 limits."""
    c = s["c"]
    pick = int(np.argmax([-1.0 if f is None else f["fit"] * f["iou"] for f in c]))
    for i in range(pick):
        f = c[i]
        if f is not None and c[i + 1] is not None and f["border"] <= contained and f["stable"] >= stable \
                and f["iou"] >= iou and f["edge"] >= edge * c[pick]["edge"]:
            return i
    return pick


def rank_features(s):
    c, main = s["c"], step34(s)
    top = max(f["edge"] for f in c if f is not None)
    X = np.full((len(c), len(RANK)), np.nan)
    for i, f in enumerate(c):
        if f is not None:
            X[i] = [np.log(f["iou"] + E), np.log(f["fit"] + E), np.log(f["area_mm2"]), np.log(f["edge"] / top + E), f["border"], f["stable"],
                    f["compact"], f["offset"], np.log(f["refined_iou"] + E), f["refined_agree"], f["plateau"], float(i == main)]
    return X


def fit_rank(train, tau=0.1, lam=0.003):
    data = [(s["X"][~np.isnan(s["X"][:, 0])], s["ratio"][~np.isnan(s["X"][:, 0])]) for s in train]
    allx = np.concatenate([x for x, _ in data])
    mu, sd = allx.mean(0), allx.std(0) + 1e-9

    def loss(w):  # minus the mean expected click / box under a softmax of the scores over each ladder
        value, grad = 0.0, np.zeros_like(w)
        for x, t in data:
            z = (x - mu) / sd
            q = np.exp((z @ w) / tau - np.max((z @ w) / tau))
            q /= q.sum()
            value -= q @ t
            grad -= z.T @ (q * (t - q @ t)) / tau
        return value / len(data) + lam * w @ w, grad / len(data) + 2 * lam * w

    best = min((minimize(loss, np.random.default_rng(seed).normal(0, 0.3, len(mu)), jac=True, method="L-BFGS-B") for seed in range(3)), key=lambda r: r.fun)
    w = best.x
    return lambda s: int(np.nanargmax(np.where(np.isnan(s["X"][:, 0]), -np.inf, ((s["X"] - mu) / sd) @ w)))


def pair_features(s, j, p):
    a, b = s["X"][j], s["X"][p]
    return np.r_[a[:10], a[[0, 1, 2, 3, 8]] - b[[0, 1, 2, 3, 8]], float(j < p)]


def fit_replace(train, lam=0.01, gain=0.05, smaller=False, raw=False, allowed=False, fit_all=False, pair=None):
    """Logistic P(candidate j beats main's pick by > `gain` x box); the rule takes the most probable j if P > 0.5.
    `smaller`: only j below the pick, step 5's features. `raw`: return (weights, bias) in raw units. `allowed`: only
    the candidates j in each structure's s["allowed"] (a guard, bench_clicks_guard.py), when choosing, and when
    fitting unless `fit_all`. `pair`: another pairwise input (s, j, p) -> features."""
    ok = (lambda s, j: j in s["allowed"]) if allowed else (lambda s, j: True)
    fit_ok = (lambda s, j: True) if fit_all else ok
    pf = pair or ((lambda s, j, p: step5_pair(s["X8"], j, p)) if smaller else pair_features)
    X, y = [], []
    for s in train:
        p = step34(s)
        for j, f in enumerate(s["c"]):
            if f is not None and j != p and (j < p or not smaller) and fit_ok(s, j):
                X.append(pf(s, j, p))
                y.append(float(s["ratio"][j] > s["ratio"][p] + gain))
    X, y = np.array(X), np.array(y)
    mu, sd = X.mean(0), X.std(0) + 1e-9
    Z = np.c_[(X - mu) / sd, np.ones(len(X))]

    def loss(w):
        q = 1 / (1 + np.exp(-(Z @ w)))
        g = Z.T @ (q - y) / len(y)
        g[:-1] += 2 * lam * w[:-1]
        return -np.mean(y * np.log(q + 1e-12) + (1 - y) * np.log(1 - q + 1e-12)) + lam * w[:-1] @ w[:-1], g

    w = minimize(loss, np.zeros(Z.shape[1]), jac=True, method="L-BFGS-B").x
    if raw:
        return w[:-1] / sd, float(w[-1] - (w[:-1] * mu / sd).sum())

    def rule(s):
        p = step34(s)
        best, top = p, 0.5
        for j, f in enumerate(s["c"]):
            if f is not None and j != p and (j < p or not smaller) and ok(s, j):
                q = 1 / (1 + np.exp(-(np.r_[(pf(s, j, p) - mu) / sd, 1.0] @ w)))
                best, top = (j, q) if q > top else (best, top)
        return best
    return rule


GRID = list(itertools.product((0.2, 0.3, 0.4, 0.5, 0.6, 1.0), (0.8, 0.85, 0.9), (0.5, 0.6, 0.7), (1.0, 1.25, 1.5, 2.0)))


def fit_grid(train):
    def key(g):
        r = np.array([s["ratio"][step34(s, *g)] for s in train])
        return r.mean(), -(r < 0.7).sum()
    g = max(GRID, key=key)
    return lambda s: step34(s, *g)


def figures(S, picks):
    r = np.array([s["ratio"][i] for s, i in zip(S, picks)])
    return f"{np.mean([s['c'][i]['dice'] for s, i in zip(S, picks)]):.3f} | {r.mean():.3f} | {(r < 0.7).sum()}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dump", type=Path)
    ap.add_argument("--weights", action="store_true", help="print step 5's fit on all structures, raw units")
    args = ap.parse_args()
    S = load(args.dump)
    if args.weights:
        w, b = fit_replace(S, smaller=True, raw=True)
        print("REPLACE_WEIGHTS = np.array([" + ", ".join(f"{v:.6g}" for v in w) + f"])\nREPLACE_BIAS = {b:.6g}")
        return
    for s in S:
        s["X"] = rank_features(s)
    off = [s["structure"] for s in S if abs(s["c"][step34(s)]["dice"] - s["returned"]) > 1e-6]
    print(f"{len(S)} structures; main replayed differs from the dumped search on {len(off)} {off}")
    print(f"one box {np.mean([s['box'] for s in S]):.3f}\n| rule | mean click | mean click / box | below 0.7 x box |\n|---|---:|---:|---:|")
    print(f"| main (shipped limits, chosen on these 120 in session 7) | {figures(S, [step34(s) for s in S])} |")
    print(f"| best square (oracle) | {figures(S, [int(np.argmax(s['ratio'])) for s in S])} |")
    folders = sorted({s["folder"] for s in S})
    print(f"| shipped (9e34781's step-5 constants) | {figures(S, [s['shipped'] for s in S])} |")
    smaller = lambda train: fit_replace(train, smaller=True)
    for name, fit in (("grid", fit_grid), ("rank", fit_rank), ("replace", fit_replace), ("smaller", smaller)):
        rule = fit(S)
        held = {}
        for f in folders:
            r = fit([s for s in S if s["folder"] != f])
            held.update({id(s): r(s) for s in S if s["folder"] == f})
        print(f"| {name}, in-sample | {figures(S, [rule(s) for s in S])} |")
        print(f"| {name}, held out (leave one folder out) | {figures(S, [held[id(s)] for s in S])} |", flush=True)
        moved = [(s["ratio"][held[id(s)]] - s["ratio"][step34(s)], s) for s in S if held[id(s)] != step34(s)]
        print(f"    held out vs main: {len(moved)} changed, {sum(d > 0.02 for d, _ in moved)} better, {sum(d < -0.02 for d, _ in moved)} worse by > 0.02 x box: "
              + ", ".join(f"{s['folder']} {s['structure']} {s['ratio'][step34(s)]:.2f}->{s['ratio'][held[id(s)]]:.2f}" for d, s in sorted(moved, key=lambda m: m[0]) if abs(d) > 0.02))


if __name__ == "__main__":
    main()
