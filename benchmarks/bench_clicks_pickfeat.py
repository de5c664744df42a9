"""Does the PICK look leaked? A gate on step 5's replacement, offline (RESULTS_clicks.md §10).

Step 5 (a logistic pairwise replacement of steps 3-4's choice p by a smaller candidate j) gains where p is a leaked
region (ribs, iliopsoas, adrenal glands inside a 17,000-52,000 mm2 region) and loses where p is a correct organ
(a liver patch, §9.2; two spleens, §9.4). Here a feature of the pick p (or of the pair) gates the replacement: j
replaces p only where p looks leaked. The step-5 model is NOT refitted: the gate applies when choosing, so each click
ends either at step 5's choice or at steps 3-4's. Bases: step 5 unguarded and step 5 guarded ("ring in choice >= 0.75,
sub-blob < 0.7", clicks_step5_guarded.py), each fitted leave-one-folder-out on the 120 (a large-organ click uses the
fit that left its own folder out) and fitted on all 120 (what would ship). Judged as §8-§9: 2D Dice of the refined
mask on the prompt slice, click / one tight box capped at 2.

    PYTHONPATH=.:benchmarks python benchmarks/bench_clicks_pickfeat.py DUMP SET_A SET_B [SET_C ...] [--cache FILE] [--detail]
        default: steps 3-4, each base, the CHOSEN gate and the INFORMATIVE ones on every set given
        --search: every feature x direction x base at its best in-sample threshold, then leave-one-folder-out (sets 0-2)
        --chance N: how often a random feature passes that leave-one-folder-out test
        --replay CLICKS_PY: that clicks.py's own _choose on the dumped ladders, against CHOSEN (must be equal)
"""
import argparse
import pickle
from pathlib import Path

import numpy as np
from scipy import ndimage

from bench_clicks_fit import fit_replace, load, step34
from bench_clicks_guard import GUARDS, guarded, pair_evidence

GUARD = "ring in choice >= 0.75, sub-blob < 0.7"


def pick_features(s, p, j):
    """Features of the pick p (steps 3-4's choice) and of the pair (j, p) that might say 'p leaked past the structure'."""
    img, band, grad, parts = s["image"].astype(float), s["in_band"], s["grad"], s["parts"]
    P, J = parts[p], parts[j]
    x, y = s["click"]
    ring_px = s["ring_px"]
    ring = ndimage.binary_dilation(P, iterations=ring_px) & ~P
    inner = ndimage.binary_erosion(P, iterations=max(ring_px, 1))
    outline = (P & ~ndimage.binary_erosion(P)) | (ndimage.binary_dilation(P) & ~P)
    # the click's band-connected region (band pixels 4-connected to the click)
    lab, _ = ndimage.label(band)
    comp = (lab == lab[y, x]) if band[y, x] else np.zeros_like(band)
    vals = img[P]
    # Otsu's between-class share of the pick's intensity variance (1: two classes, 0: one)
    v = np.sort(vals)
    if v.size > 4 and v.var() > 0:
        c = np.cumsum(v)
        n = np.arange(1, v.size)
        m0, m1 = c[:-1] / n, (c[-1] - c[:-1]) / (v.size - n)
        otsu = float(np.max(n * (v.size - n) * (m1 - m0) ** 2) / v.size ** 2 / v.var())
    else:
        otsu = 0.0
    rest = P & ~J
    jring = ndimage.binary_dilation(J, iterations=ring_px) & ~J
    f = s["c"]
    lo, hi = np.percentile(img[band], [5, 95]) if band.any() else (0, 1)
    box = np.load(s["path"])["boxes"][p]
    box_px = max((box[2] - box[0] + 1) * (box[3] - box[1] + 1), 1.0)
    return dict(
        pick_index=float(p), img_frac=float(P.mean()), box_fill=float(P.sum() / box_px),  # the pick's share of the slice / of its square
        band_p=float(band[P].mean()),  # share of the pick in the click's band
        ring_out_p=float(1 - band[ring].mean()) if ring.any() else 0.0,
        fit_p=f[p]["fit"], iou_p=f[p]["iou"], border_p=f[p]["border"], compact_p=f[p]["compact"],
        area_p_mm2=f[p]["area_mm2"], stable_p=f[p]["stable"],
        inner_edge=float(grad[inner].mean() / max(grad[outline].mean(), 1e-9)) if inner.any() else 0.0,  # edges inside vs on its outline
        inner_edge_q90=float(np.percentile(grad[inner], 90) / max(grad[outline].mean(), 1e-9)) if inner.any() else 0.0,
        otsu_p=otsu,
        # does its outline follow an intensity edge all round? share of outline pixels sharper than the pick's median inside
        outline_cover=float((grad[outline] > np.median(grad[P])).mean()),
        outline_cover2=float((grad[outline] > 2 * np.median(grad[P])).mean()),
        comp_in_p=float((comp & P).sum() / max(comp.sum(), 1)),  # share of the band region inside the pick
        p_in_comp=float((comp & P).sum() / max(P.sum(), 1)),  # share of the pick in the click's band region
        p_over_comp=float(P.sum() / max(comp.sum(), 1)),
        band_j=float(band[J].mean()), band_rest=float(band[rest].mean()) if rest.any() else 0.0,
        contrast=float(abs(img[J].mean() - img[rest].mean()) / max(img[P].std(), 1e-9)) if rest.any() else 0.0,
        jring_edge=float(grad[jring].mean() / max(grad[outline].mean(), 1e-9)),
        area_ratio=f[j]["area_mm2"] / f[p]["area_mm2"],
        **{k: v for k, v in pair_evidence(s, j, p).items() if k in ("sub_blob", "ring_in_pick", "edge_ratio")},
    )


def bases(S, sets):
    """Step 5's choice per click: {base name: {id: j}} for unguarded / guarded, held out and all-120."""
    folders = sorted({s["folder"] for s in S})
    allx = S + [s for X in sets for s in X]
    out = {}
    for gname in ("none", GUARD):
        guarded(allx, GUARDS[gname])
        held = {}
        for f in folders:
            rule = fit_replace([s for s in S if s["folder"] != f], smaller=True, allowed=True)
            held.update({id(s): rule(s) for s in allx if s["folder"] == f})
        rule = fit_replace(S, smaller=True, allowed=True)
        full = {id(s): rule(s) for s in allx}
        tag = "unguarded" if gname == "none" else "guarded"
        out[f"{tag} held out"], out[f"{tag} all-120"] = held, full
    return out


BASES = ("guarded all-120", "guarded held out", "unguarded all-120", "unguarded held out")
# The gate chosen on the 120, set A and set B before set C was drawn (RESULTS_clicks.md §10.2): the only one of the
# searched pick features whose threshold, chosen leave-one-folder-out, lost no click of A or B. Threshold: the best
# in-sample cut on the three sets (between 1.649 and 1.698 of the changed clicks), fixed before set C.
CHOSEN = ("inner_edge_q90", "<=", 1.673)
# The size gates that pass in-sample but not leave-one-folder-out (shown on set C for information only)
INFORMATIVE = (("box_fill", ">=", 0.4858), ("img_frac", ">=", 0.1238), ("area_p_mm2", ">=", 13730.0))


def gate_of(k, sgn, t):
    return (lambda f: f[k] >= t) if sgn == ">=" else (lambda f: f[k] <= t)


def result(r, base, gate):
    """(Dice, click / box) of the click under `base` with `gate` on its replacement."""
    b = r["base"][base]
    return (b["d"], b["r"]) if b["f"] is not None and gate(b["f"]) else (r["main_d"], r["main_r"])


def figures(R, out):
    """mean click, click / box, below 0.7 x, changed (better / worse by > 0.02 Dice) of rows R under out[id] = (d, r)."""
    d = np.array([out[id(r)][0] for r in R])
    q = np.array([out[id(r)][1] for r in R])
    m = np.array([r["main_d"] for r in R])
    return f"{d.mean():.3f} | {q.mean():.3f} | {(q < 0.7).sum()} | {int((np.abs(d - m) > 1e-9).sum())} ({(d - m > 0.02).sum()} / {(d - m < -0.02).sum()})"


def table(rows, nsets, lines):
    head = " | ".join(f"set {si}: mean click | click / box | below 0.7 x | changed (better / worse)" for si in range(nsets))
    print(f"| base | gate | {head} |\n|---|---|" + "---:|" * (4 * nsets))
    for base, name, gate in lines:
        out = {id(r): result(r, base, gate) for r in rows}
        print(f"| {base} | {name} | " + " | ".join(figures([r for r in rows if r["set"] == si], out) for si in range(nsets)) + " |", flush=True)


def search(rows):
    """Every pick feature x direction x base, its best threshold in-sample on sets 0-2 (no loss on A, B first, then the
    120's click / box); then every feature x direction on the guarded bases with the threshold chosen leave-one-folder-out (on every other folder's clicks)."""
    rows = [r for r in rows if r["set"] <= 2]
    feats = list(next(r["base"][BASES[0]]["f"] for r in rows if r["base"][BASES[0]]["f"]))

    def key(R, base, gate):
        loss = sum(result(r, base, gate)[0] - r["main_d"] < -0.02 for r in R if r["set"] > 0)
        return -loss, np.mean([result(r, base, gate)[1] for r in R if r["set"] == 0] or [0.0])

    def cuts(base, k):
        v = sorted({r["base"][base]["f"][k] for r in rows if r["base"][base]["f"]})
        return [v[0] - 1] + [(a + b) / 2 for a, b in zip(v, v[1:])] + [v[-1] + 1]

    lines, n = [], 0
    for base in BASES:
        lines += [(base, "none (the base)", lambda f: True), (base, "never (steps 3-4)", lambda f: False)]
        for k in feats:
            for sgn in (">=", "<="):
                n += 1
                t = max(cuts(base, k), key=lambda t: key(rows, base, gate_of(k, sgn, t)))
                lines.append((base, f"{k} {sgn} {t:.4g} (in-sample)", gate_of(k, sgn, t)))
    print(f"{n} gates (feature x direction x base), each at its best in-sample threshold:")
    table(rows, 3, lines)
    print("\nThreshold chosen leave-one-folder-out (on the other folders' clicks of the 120, A and B):")
    folders = sorted({r["folder"] for r in rows})
    head = " | ".join(f"set {si}: mean click | click / box | below 0.7 x | changed (better / worse)" for si in range(3))
    print(f"| base | gate | {head} | thresholds per held-out folder |\n|---|---|" + "---:|" * 12 + "---|")
    for base in BASES[:2]:
        for k, sgn in [(k, sgn) for k in feats for sgn in (">=", "<=")]:
            out, chosen = {}, {}
            for f in folders:
                train = [r for r in rows if r["folder"] != f]
                t = chosen[f] = max(cuts(base, k), key=lambda t: key(train, base, gate_of(k, sgn, t)))
                out.update({id(r): result(r, base, gate_of(k, sgn, t)) for r in rows if r["folder"] == f})
            print(f"| {base} | {k} {sgn} t (LOFO) | " + " | ".join(figures([r for r in rows if r["set"] == si], out) for si in range(3))
                  + " | " + ", ".join(f"{f} {t:.3g}" for f, t in chosen.items()) + " |", flush=True)


def chance(rows, n, base="guarded all-120", seed=0):
    """How often a RANDOM pick feature (uniform, drawn per changed click) passes the leave-one-folder-out test of
    `search` (threshold chosen on the other folders: no A/B loss first, then the 120's click / box; pass: no A/B click
    worse by > 0.02, the 120's click / box above steps 3-4's and fewer below 0.7 x)."""
    rows = [r for r in rows if r["set"] <= 2]
    n120 = sum(r["set"] == 0 for r in rows)
    main_r = np.mean([r["main_r"] for r in rows if r["set"] == 0])
    main_below = sum(r["main_r"] < 0.7 for r in rows if r["set"] == 0)
    ch = [r for r in rows if r["base"][base]["f"] is not None]
    dr = np.array([r["base"][base]["r"] - r["main_r"] for r in ch])
    dd = np.array([r["base"][base]["d"] - r["main_d"] for r in ch])
    cross = np.array([int(r["base"][base]["r"] < 0.7) - int(r["main_r"] < 0.7) for r in ch])
    st, fo = np.array([r["set"] for r in ch]), np.array([r["folder"] for r in ch])
    rng, passed = np.random.default_rng(seed), np.zeros((n, 2), bool)
    for i in range(n):
        v = rng.random(len(ch))
        cuts = np.r_[v.min() - 1, (np.sort(v)[1:] + np.sort(v)[:-1]) / 2, v.max() + 1]
        for d, sgn in enumerate((1, -1)):
            take = np.zeros(len(v), bool)
            for f in set(fo):
                train = fo != f
                key = lambda t: (-((dd < -0.02) & (sgn * v >= sgn * t) & train & (st > 0)).sum(), (dr * ((sgn * v >= sgn * t) & train & (st == 0))).sum())
                t = max(cuts, key=key)
                take |= (sgn * v >= sgn * t) & (fo == f)
            passed[i, d] = (not ((dd < -0.02) & take & (st > 0)).any() and (dr * take * (st == 0)).sum() / n120 > 1e-9
                            and main_below + (cross * take * (st == 0)).sum() < main_below)
    print(f"{base}: {len(ch)} clicks changed by the base; a random feature passes leave-one-folder-out: '>=' {passed[:, 0].mean():.3f}, "
          f"'<=' {passed[:, 1].mean():.3f}, either {passed.any(1).mean():.3f} ({n} draws; steps 3-4 on the 120: {main_r:.3f}, {main_below} below 0.7 x)")


def replay(path, rows, dumps):
    """A clicks.py's own `_choose` on each dumped ladder, against CHOSEN on the guarded all-120 base (must be equal)."""
    from types import SimpleNamespace

    from bench_clicks_slice import load_clicks

    module, bad, n = load_clicks(path, "_clicks_replay"), 0, 0
    for si, d in enumerate(dumps):
        R = [r for r in rows if r["set"] == si]
        for s, r in zip(load(d), R):
            z = np.load(s["path"])
            shell = object.__new__(module.ClickSearch)
            shell.rows, shell.cols = s["image"].shape
            shell.ring_px, shell.pixel_mm, shell.disc_px = s["ring_px"], s["pixel_mm"], float(z["disc_px"])
            ladder = [None if s["c"][i] is None else (z["boxes"][i], SimpleNamespace(iou=float(z["ious"][i])), s["parts"][i])
                      for i in range(len(s["parts"]))]
            scores = [-1.0 if c is None else shell._fit(c[2], s["in_band"]) * c[1].iou for c in ladder]
            b = r["base"]["guarded all-120"]
            want = b["j"] if b["f"] is not None and gate_of(*CHOSEN)(b["f"]) else step34(s)
            n += 1
            if shell._choose(ladder, scores, s["image"], s["in_band"], s["click"]) != want:
                bad += 1
                print(f"  differs: set {si} {s['folder']} {s['structure']}")
    print(f"{path}: {n} dumped clicks replayed, {bad} differ from CHOSEN on the guarded all-120 base")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dumps", type=Path, nargs="+", help="the 120's dump, then set A, set B, ...")
    ap.add_argument("--cache", type=Path, help="pickle of the per-click rows (written if absent)")
    ap.add_argument("--search", action="store_true", help="the gate search on the 120, A and B (in-sample and LOFO)")
    ap.add_argument("--chance", type=int, metavar="N", help="N random features through the leave-one-folder-out test (chance rate)")
    ap.add_argument("--replay", type=Path, metavar="CLICKS_PY", help="replay that clicks.py's _choose on the dumps (must equal CHOSEN)")
    ap.add_argument("--detail", action="store_true", help="list each click a base changes, with the pick's features")
    args = ap.parse_args()
    if args.cache and args.cache.exists():
        rows = pickle.loads(args.cache.read_bytes())
    else:
        sets = [load(d) for d in args.dumps]
        B = bases(sets[0], sets[1:])
        rows = []
        for si, X in enumerate(sets):
            for s in X:
                p = step34(s)
                r = dict(set=si, folder=s["folder"], case=s["case"], structure=s["structure"], pixels=s["pixels"], box=s["box"],
                         main_d=s["c"][p]["dice"], main_r=s["ratio"][p], base={})
                for name, ch in B.items():
                    j = ch[id(s)]
                    r["base"][name] = dict(j=j, d=s["c"][j]["dice"], r=s["ratio"][j], f=pick_features(s, p, j) if j != p else None)
                rows.append(r)
        if args.cache:
            args.cache.write_bytes(pickle.dumps(rows))
    nsets = 1 + max(r["set"] for r in rows)
    if args.search:
        search(rows)
        return
    if args.replay:
        replay(args.replay, rows, args.dumps)
        return
    if args.chance:
        chance(rows, args.chance)
        return
    print(f"{nsets} sets: " + ", ".join(f"set {si} {sum(r['set'] == si for r in rows)} clicks" for si in range(nsets)))
    lines = []
    for base in BASES:
        lines += [(base, "never (steps 3-4)", lambda f: False), (base, "none (the base)", lambda f: True),
                  (base, "CHOSEN: " + " ".join(map(str, CHOSEN)), gate_of(*CHOSEN))]
        lines += [(base, "informative: " + " ".join(map(str, g)), gate_of(*g)) for g in INFORMATIVE]
    table(rows, nsets, lines)
    if args.detail:
        for name in BASES:
            print(f"\n## {name}: the clicks it changes")
            for r in rows:
                b = r["base"][name]
                if b["f"] is not None:
                    print(f"  set{r['set']} {r['folder']} {r['structure']} {r['main_d']:.3f}->{b['d']:.3f} (box {r['box']:.3f}) "
                          + " ".join(f"{k}={v:.3g}" for k, v in b["f"].items()))

if __name__ == "__main__":
    main()
