"""Leave-one-folder-out check of the drift rule's two settings (RESULTS_rules.md, "Session 8: ends").

On a `sweep_rules.py --features` run: for each training folder held out, the (threshold, prompt-area floor) pair
with the best mean simulated gain on the other folders among those that lose no structure there by more than 0.03
(ties: the larger floor, then the larger threshold: the more cautious rule), and its gain on the held-out folder.

    python benchmarks/lofo_drift.py FEATURES.json
"""
import json
import sys

import numpy as np

from analyse_ends import chains, first_fire, folder, signals, simulate

THRESHOLDS, FLOORS = (1.0, 1.5, 2.0, 2.5, 3.0), (0, 10, 20, 50)


def gains(rows, thr, floor):
    out = []
    for r in rows:
        ref = r["features"]["start"]["ref"]
        cut = {}
        if ref is not None and ref["area"] >= floor:
            sig = {d: signals(ch, max(r["features"]["start"]["final_area"], 1)) for d, ch in chains(r).items()}
            cut = {d: first_fire(sig[d], "|drift median| (IQR)", thr) for d in (1, -1)}
        out.append(simulate(r, cut)[0] - simulate(r, {})[0])
    return np.array(out)


def main():
    rows = [r for p in sys.argv[1:] for r in json.loads(open(p).read())["rows"] if "features" in r]
    grid = {(t, f): gains(rows, t, f) for t in THRESHOLDS for f in FLOORS}
    print("| threshold (IQR) | prompt floor (px) | mean gain | better / worse by > 0.02 | worst |\n|---:|---:|---:|---:|---:|")
    for (t, f), g in grid.items():
        print(f"| {t} | {f} | {g.mean():+.4f} | {(g > 0.02).sum()} / {(g < -0.02).sum()} | {g.min():+.3f} |")
    print("\n| held out | chosen on the other folders | held-out mean gain | held-out worst | held-out structures |\n|---|---|---:|---:|---:|")
    for held in sorted(set(map(folder, rows))):
        inn = np.array([folder(r) != held for r in rows])
        ok = [(g[inn].mean(), f, t) for (t, f), g in grid.items() if g[inn].min() >= -0.03]
        best = max(ok)
        g = grid[(best[2], best[1])][~inn]
        print(f"| {held} | {best[2]} IQR, floor {best[1]} px (gain there {best[0]:+.4f}) | {g.mean():+.4f} | {g.min():+.3f} | {(~inn).sum()} |")


if __name__ == "__main__":
    main()
