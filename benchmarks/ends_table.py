"""The drift rule against the rule before it on every training structure (RESULTS_rules.md, "Session 8: ends").

    python benchmarks/ends_table.py FEATURES.json CONFIRM.json [CONFIRM2.json ...]

FEATURES.json: a `sweep_rules.py --features` run made before the drift rule existed (its "default" is the old
rule). CONFIRM*.json: real sweeps with variants "default" (the new rule) and "drift-off" (the old), run on the
structures where the drift signal fired in the features run (later files win). For every other structure the new
rule never fires on any window the old run scored, so its run is the old run, window for window: its Dice is the
old one. Checks that each confirm run's "drift-off" reproduces the features run's Dice.
"""
import json
import sys
from pathlib import Path

import numpy as np

from analyse_ends import folder


def key(r):
    return (r["case"], r["label"])


def ends(stops):
    d = [s["delta"] for s in stops.values() if s["delta"] is not None]
    return sum(x <= -2 for x in d), sum(x >= 2 for x in d)


def main():
    base = [r for r in json.loads(Path(sys.argv[1]).read_text())["rows"]]
    confirm = {}
    for p in sys.argv[2:]:
        for r in json.loads(Path(p).read_text())["rows"]:
            confirm[key(r)] = r
    old, new, early, past, changed, worst_repro = [], [], [0, 0], [0, 0], [], 0.0
    for r in base:
        o = r["variants"]["default"]
        c = confirm.get(key(r))
        n = c["variants"]["default"] if c else o
        if c:
            worst_repro = max(worst_repro, abs(c["variants"]["drift-off"]["dice"] - o["dice"]))
        old.append(o["dice"])
        new.append(n["dice"])
        for i, v in enumerate((o, n)):
            e, p = ends(v["stops"])
            early[i] += e
            past[i] += p
        if abs(n["dice"] - o["dice"]) > 0.005:
            changed.append((r, o, n))
    old, new = np.array(old), np.array(new)
    diff = new - old
    print(f"{len(base)} structures ({len(confirm)} re-run for real); drift-off reproduces the features run to {worst_repro:.4f}\n")
    print("| rule | mean one-box Dice | better / worse by > 0.02 | worst change | chain ends ≥ 2 slices early | ≥ 2 slices past |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| before (drift off) | {old.mean():.4f} | - | - | {early[0]} | {past[0]} |")
    w = int(np.argmin(diff))
    print(f"| drift 1.5 IQR, prompt ≥ 20 px | {new.mean():.4f} | {(diff > 0.02).sum()} / {(diff < -0.02).sum()} | "
          f"{diff[w]:+.3f} ({base[w]['case']} {base[w]['structure']}) | {early[1]} | {past[1]} |")
    print("\n| folder | structures | before | after |\n|---|---:|---:|---:|")
    for f in sorted(set(map(folder, base))):
        m = np.array([folder(r) == f for r in base])
        print(f"| {f} | {m.sum()} | {old[m].mean():.4f} | {new[m].mean():.4f} |")
    print("\n| case | structure | before | after | change | stops before (up / down) | stops after |\n|---|---|---:|---:|---:|---|---|")
    for r, o, n in sorted(changed, key=lambda t: t[2]["dice"] - t[1]["dice"], reverse=True):
        s = lambda v: " / ".join(f"{v['stops'][d]['reason']} {v['stops'][d]['delta']:+d}" for d in ("up", "down"))  # noqa: E731
        print(f"| {r['case']} | {r['structure']} | {o['dice']:.3f} | {n['dice']:.3f} | {n['dice'] - o['dice']:+.3f} | {s(o)} | {s(n)} |")


if __name__ == "__main__":
    main()
