"""Eval outputs: JSON (everything), a Markdown table, and one PNG figure per structure."""
import json
import re
from pathlib import Path

import numpy as np

from ..atomic import atomic_write, atomic_write_text
from ..errors import InputError

RUN_COLUMNS = ("dice", "surface_dice_2mm", "hd95_mm", "extent_pred", "extent_true", "encoder_passes", "seconds")


def write_json(report: dict, path: Path) -> Path:
    atomic_write_text(path, json.dumps(report, indent=1, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
    return Path(path)


def _fmt(v):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
    if isinstance(v, (list, tuple)):
        return "–" if not v else f"{v[0]}–{v[1]}"
    return str(v)


def markdown(report: dict) -> str:
    lines = [f"# SlideSAM evaluation", "", f"Model: {report['model']} (clicks: {'decoder point prompts' if report['supports_points'] else 'box search around the click'})", ""]
    lines += ["| case | structure | prompt | Dice | surface Dice 2 mm | HD95 mm | slices pred | slices true | encoder passes | s |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        for name, run in r["runs"].items():
            lines.append(f"| {r['case']} | {r['structure']} | {name} | " + " | ".join(_fmt(run.get(c)) for c in RUN_COLUMNS) + " |")
    lines += anchor_lines(report) + interactive_lines(report)
    eff = [r for r in report["results"] if "efficiency" in r]
    if eff:
        lines += ["", "Labelling efficiency (prompts until 3D Dice ≥ 0.90: one box + corrections, vs a box on every slice):", "",
                  "| case | structure | prompts | reached | final Dice | box-every-slice prompts | box-every-slice Dice |", "|---|---|---|---|---|---|---|"]
        for r in eff:
            e = r["efficiency"]
            lines.append(f"| {r['case']} | {r['structure']} | {e['prompts']} | {'yes' if e['reached'] else 'no'} | {e['final_dice']:.3f} | "
                         f"{e['box_every_slice_prompts']} | {e['box_every_slice_dice']:.3f} |")
    s = report["summary"]
    lines += ["", "| prompt | structures | mean Dice | mean surface Dice 2 mm | median HD95 mm |", "|---|---|---|---|---|"]
    for name, v in s.items():
        if isinstance(v, dict) and "mean_dice" in v:
            lines.append(f"| {name} | {v['structures']} | {v['mean_dice']:.3f} | {v['mean_surface_dice_2mm']:.3f} | {_fmt(v['median_hd95_mm'])} |")
    if "point_vs_box_mean" in s:
        lines += ["", f"One include click vs one box (mean ratio of 3D Dice): {s['point_vs_box_mean']:.3f}"]
    return "\n".join(lines) + "\n"


def anchor_lines(report: dict) -> list:
    """The engine (one box) beside the chain and oracle anchors, per structure and on average."""
    rows = [r for r in report["results"] if "anchors" in r]
    if not rows:
        return []
    lines = ["", "Anchors (same model, same run): chain = box from the previous slice's mask until it vanishes; "
             "oracle = the reference's tight box on every slice of the structure. 3D Dice (surface Dice 2 mm).", "",
             "| case | structure | voxels | engine box | engine click | chain | oracle | engine / oracle | chain − engine | chain slices |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        e, c, o = r["runs"]["box"], r["anchors"]["chain"], r["anchors"]["oracle"]
        click = f"{r['runs']['point']['dice']:.3f}" if "point" in r["runs"] else "–"
        lines.append(f"| {r['case']} | {r['structure']} | {r['voxels']} | {e['dice']:.3f} ({e['surface_dice_2mm']:.3f}) | {click} | "
                     f"{c['dice']:.3f} ({c['surface_dice_2mm']:.3f}) | {o['dice']:.3f} ({o['surface_dice_2mm']:.3f}) | "
                     f"{_fmt(r['engine_vs_oracle'])} | {r['chain_minus_engine']:+.3f} | {_fmt(c['extent_pred'])} |")
    a = report["summary"]["anchors"]
    clicks = [r["runs"]["point"]["dice"] for r in rows if "point" in r["runs"]]
    mean_click = f"{sum(clicks) / len(clicks):.3f}" if clicks else "–"
    lines.append(f"| **mean** | {a['structures']} structures | | **{a['mean_dice_engine']:.3f}** ({a['mean_surface_dice_2mm_engine']:.3f}) | {mean_click} | "
                 f"{a['mean_dice_chain']:.3f} ({a['mean_surface_dice_2mm_chain']:.3f}) | {a['mean_dice_oracle']:.3f} ({a['mean_surface_dice_2mm_oracle']:.3f}) | "
                 f"{_fmt(a['mean_engine_vs_oracle'])} | | |")
    lines += ["", f"Mean engine / mean oracle: {_fmt(a['mean_engine_over_mean_oracle'])}; structures with engine < 0.9 × oracle: "
              f"{a['engine_below_0.9_oracle']} of {a['structures']}; with the chain better by more than 0.02: {a['chain_better_by_more_than_0.02']}."]
    return lines


def interactive_lines(report: dict) -> list:
    """The CVPR 2025 protocol: Dice after the box and each refinement click, and the areas under the curves."""
    rows = [r for r in report["results"] if "interactive" in r]
    if not rows:
        return []
    n = len(rows[0]["interactive"]["curve"])
    lines = ["", "Interactive protocol (CVPR 2025): one box, then refinement clicks at the centre of the largest error region of the "
             "worst slice; 3D Dice after each interaction; AUC over the clicks (trapezoids, unit spacing).", "",
             "| case | structure | box | " + " | ".join(f"click {i}" for i in range(1, n)) + " | Dice AUC | surface Dice AUC |",
             "|---|---|" + "---|" * (n + 2)]
    for r in rows:
        it = r["interactive"]
        lines.append(f"| {r['case']} | {r['structure']} | " + " | ".join(f"{c['dice']:.3f}" for c in it["curve"])
                     + f" | {it['dice_auc']:.3f} | {it['surface_dice_auc']:.3f} |")
    s = report["summary"]["interactive"]
    lines.append(f"| **mean** | {s['structures']} structures | " + " | ".join(f"{v:.3f}" for v in s["mean_dice_curve"])
                 + f" | {s['mean_dice_auc']:.3f} | {s['mean_surface_dice_auc']:.3f} |")
    return lines


def write_markdown(report: dict, path: Path) -> Path:
    atomic_write_text(path, markdown(report))
    return Path(path)


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "structure"


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend; matplotlib is optional (the `eval` extra)."""
    try:
        import matplotlib
    except ImportError as exc:
        raise InputError("the eval figures need matplotlib: pip install 'slidesam[eval]' (or matplotlib), or add --no-figures") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure(case, result: dict, fig_data: dict, path: Path) -> Path:
    """Prompt slice with the prompt, propagated contours on a few slices, and the per-slice Dice curve."""
    plt = pyplot()

    truth, pred, k0 = fig_data["truth"], fig_data["box_pred"], fig_data["k0"]
    ks = np.nonzero(truth.reshape(truth.shape[0], -1).any(axis=1) | pred.reshape(pred.shape[0], -1).any(axis=1))[0]
    others = [int(k) for k in np.unique(np.linspace(ks.min(), ks.max(), 5).round().astype(int)) if k != k0][:4] if ks.size else []
    panels = [k0] + others
    fig, axes = plt.subplots(2, max(len(panels), 2), figsize=(3.2 * max(len(panels), 2), 6.4))
    lo, hi = np.percentile(case.volume, (1, 99))
    for ax, k in zip(axes[0], panels):
        ax.imshow(case.volume[k], cmap="gray", vmin=lo, vmax=hi)
        if truth[k].any():
            ax.contour(truth[k], levels=[0.5], colors="lime", linewidths=1)
        if pred[k].any():
            ax.contour(pred[k], levels=[0.5], colors="red", linewidths=1)
        if k == k0:
            x0, y0, x1, y1 = fig_data["box"]
            ax.add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="yellow", linewidth=1))
            if "click" in fig_data:
                ax.plot(*fig_data["click"], "c+", markersize=10)
        ax.set_title(f"slice {k}" + (" (prompt)" if k == k0 else ""), fontsize=9)
        ax.axis("off")
    for ax in axes[0][len(panels):]:
        ax.axis("off")
    gs = axes[1][0].get_gridspec()
    for ax in axes[1]:
        ax.remove()
    curve = fig.add_subplot(gs[1, :])
    sd = result["slice_dice"]
    curve.plot(list(sd), list(sd.values()), "o-", color="red", label="box prompt, propagated")
    curve.axvline(k0, color="yellow", linestyle="--", label="prompt slice")
    curve.set_ylim(-0.02, 1.02)
    curve.set_xlabel("slice (k)")
    curve.set_ylabel("Dice")
    run = result["runs"]["box"]
    curve.set_title(f"{result['case']} — {result['structure']}: 3D Dice {run['dice']:.3f}, surface Dice {run['surface_dice_2mm']:.3f}  (green truth, red prediction)", fontsize=9)
    curve.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=80))
    finally:
        plt.close(fig)
