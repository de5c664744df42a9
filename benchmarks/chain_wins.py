"""Where the naive chain beats the engine on the training structures (RESULTS_rules.md, "Session 8: where the chain wins").

    python benchmarks/chain_wins.py --base FEATURES.json [--confirm C.json ...] [--anchors A.json ...]
        [--eval EVAL.json ...] [--diag D.json ...]

--base: a sweep of every training structure (session 8's feat_full.json: the default before the drift rule);
--confirm: sweeps whose "default" is the current default on the structures where the drift rule changes anything
(later files win; every other structure's run is the base run, RESULTS_rules.md "Session 8: ends");
--anchors: sweeps that computed the chain / oracle of structures the base lacks ("this run"), with the current
default; --eval: `slidesam eval` JSON files whose anchors replace the base's (the folder-keyed look-up of
sweep_rules.known_anchors); --diag: variant sweeps of the structures where the chain wins (their table).
"""
import argparse
import json
import math
from pathlib import Path

import sweep_rules

MARGIN = 0.02  # issue 12's "done": the chain never beats the engine by more than this


def rows(path):
    return json.loads(Path(path).read_text())["rows"]


def key(r):
    return (r["case"], r["label"])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True)
    ap.add_argument("--confirm", nargs="*", default=[])
    ap.add_argument("--anchors", nargs="*", default=[])
    ap.add_argument("--eval", nargs="*", default=[])
    ap.add_argument("--diag", nargs="*", default=[])
    args = ap.parse_args()
    table = {key(r): dict(r, engine=r["variants"]["default"]["dice"], stops=r["variants"]["default"]["stops"]) for r in rows(args.base)}
    for p in args.confirm + args.anchors:
        for r in rows(p):
            t = table[key(r)]
            t["engine"], t["stops"] = r["variants"]["default"]["dice"], r["variants"]["default"]["stops"]
            if r.get("anchors") == "this run":
                t["chain"], t["oracle"], t["anchors"] = r["chain"], r["oracle"], "this run"
    known = sweep_rules.known_anchors(args.eval)
    for t in table.values():
        k = (f"{sweep_rules.CASES[t['case']][0].parent.name}/{t['image']}", t["label_file"], t["label"])
        if k in known and t.get("anchors") != "this run":
            t["chain"], t["oracle"] = known[k]
    todo = [t for t in table.values() if math.isnan(t["chain"])]
    wins = sorted((t for t in table.values() if t["chain"] > t["engine"] + MARGIN), key=lambda t: t["engine"] - t["chain"])
    eng = [t["engine"] for t in table.values()]
    print(f"{len(table)} structures, {len(todo)} without anchors; mean engine {sum(eng) / len(eng):.4f}; "
          f"chain > engine + {MARGIN}: {len(wins)}\n")
    print("| structure | engine | chain | oracle | stops (up, down: reason, slices past (+) / short (-) of the end) |")
    print("|---|---:|---:|---:|---|")
    for t in wins:
        s = ", ".join(f"{d['reason']} {d['delta']:+d}" if d["delta"] is not None else f"{d['reason']}" for d in t["stops"].values())
        print(f"| {t['case']} {t['structure']} | {t['engine']:.3f} | {t['chain']:.3f} | {t['oracle']:.3f} | {s} |")
    if args.diag:
        diag = [r for p in args.diag for r in rows(p)]
        names = list(diag[0]["variants"])
        print("\n| structure | chain | " + " | ".join(names) + " |\n|---|---:|" + "---:|" * len(names))
        for r in diag:
            print(f"| {r['case']} {r['structure']} | {r['chain']:.3f} | " + " | ".join(f"{r['variants'][n]['dice']:.3f}" for n in names) + " |")


if __name__ == "__main__":
    main()
