"""Merge the eval.json files of benchmarks/eval_anchors.sh into one anchors table (Markdown on stdout).

    python benchmarks/anchors_table.py OUT/evaluation_only_part1 OUT/... > table.md
    python benchmarks/anchors_table.py --means "NAME=OUT/a,OUT/b" "NAME2=OUT/c" ...   # one row of means per group
"""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from SlideSAMLib.evaluation.evaluate import summarise  # noqa: E402
from SlideSAMLib.evaluation.report import anchor_lines  # noqa: E402


def main(folders):
    results, seconds, partial = [], 0.0, []
    for f in folders:
        report = json.loads((Path(f) / "eval.json").read_text())
        results += report["results"]
        seconds += report["seconds"]
        if report.get("complete") is False:  # a run stopped early: its eval.json holds the structures it finished
            partial.append(f"{Path(f).name} ({len(report['results'])} structures finished)")
    merged = {"results": results, "summary": summarise(results)}
    print("\n".join(anchor_lines(merged)[2:]))
    s = merged["summary"]
    click = [r["runs"]["point"]["dice"] for r in results if "point" in r["runs"]]
    if click:
        print(f"\nOne include click (3D Dice, mean over {len(click)}): {sum(click) / len(click):.3f}; "
              f"click / box, mean ratio: {s.get('point_vs_box_mean', float('nan')):.3f}; eval time {seconds:.0f} s in all.")
    if partial:
        print(f"\nStopped before the end: {', '.join(partial)}.")


def load(folders):
    return [r for f in folders for r in json.loads((Path(f) / "eval.json").read_text())["results"]]


def means(groups):
    """One row per NAME=FOLDER,FOLDER group: structures, mean Dice of engine box / click / chain / oracle, issue-12 counts."""
    print("| group | structures | engine box | engine click | chain | oracle | mean engine / mean oracle | engine < 0.9 × oracle | chain > engine + 0.02 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for group in groups:
        name, folders = group.split("=", 1)
        results = load(folders.split(","))
        a = summarise(results)["anchors"]
        click = [r["runs"]["point"]["dice"] for r in results if "point" in r["runs"]]
        print(f"| {name} | {a['structures']} | {a['mean_dice_engine']:.3f} | {sum(click) / len(click):.3f} | {a['mean_dice_chain']:.3f} | "
              f"{a['mean_dice_oracle']:.3f} | {a['mean_engine_over_mean_oracle']:.3f} | {a['engine_below_0.9_oracle']} | "
              f"{a['chain_better_by_more_than_0.02']} |")


if __name__ == "__main__":
    means(sys.argv[2:]) if sys.argv[1:2] == ["--means"] else main(sys.argv[1:])
