"""Simulated annotation of labelled volumes with a model, through the real `Session`.

For each structure (slice axis k):
  * "box": the tight box of the structure on its largest slice, propagated both ways;
  * "jitter-N": the same box with each side shifted (seeded Gaussian, 5 % of the box side, capped at 10 %);
  * "point": one include click on the deepest interior pixel of the largest slice (where an
    annotator clicks "in the middle"): the decoder's own point prompt for a point-trained model, the
    click's box search (`SlideSAMLib.clicks`) for a box-only one;
then 3D Dice, surface Dice at 2 mm, HD95, predicted vs true slice extent, encoder passes, seconds.

Anchors (`anchors.py`, same predictor and embeddings): the naive box-from-previous-mask "chain" from the same
prompt, and the "oracle" (a reference box on every slice); each structure reports engine / oracle and
chain − engine, the summary their means.

Interactive protocol (`protocol.py`, CVPR 2025): the box, then five refinement clicks through `Session.refine`;
Dice and surface Dice after each, their areas under the curve.

Labelling efficiency: start from the "box" result; while 3D Dice < 0.90 the worst slice gets a
fresh tight box and propagation restarts from it away from the first prompt (the new result
replaces that side), or, where the worst slice should be empty, that slice and everything beyond
it are erased (one prompt).  Compared with a box on every slice (each slice predicted alone).
Every structure gets its own Session, so encoder passes are those of a cold start.
"""
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from ..checkpoint import SlideSAMModel
from ..errors import InputError
from ..structures import resolve_structures
from ..training.dataset import read_label_names, same_grid
from ..training.prompts import deepest_point, jitter_box, tight_box
from . import anchors, metrics, protocol

TARGET_DICE = 0.90
SURFACE_TOLERANCE_MM = 2.0
JITTER_FRACTION = 0.05
MIN_AREA = 10


@dataclass
class Case:
    name: str
    image: object  # SimpleITK image
    volume: np.ndarray  # (z, y, x)
    labels: np.ndarray  # (z, y, x) int
    spacing: tuple  # (x, y, z)
    structures: Dict[int, str] = field(default_factory=dict)  # label value -> name
    files: dict = field(default_factory=dict)


def load_case(image_path, label_path, names_path=None, structures: Optional[Sequence[str]] = None, name: Optional[str] = None) -> Case:
    from ..imageio import array_of, read_image

    image, label = read_image(image_path), read_image(label_path)
    diff = same_grid(image, label)
    if diff:
        raise InputError(f"label {label_path} is not on the grid of image {image_path} ({diff}): resample the label onto the image grid first")
    labels = np.round(array_of(label)).astype(np.int32)
    names = read_label_names(names_path) if names_path else {}
    present = [int(v) for v in np.unique(labels) if v > 0]
    if not present:
        raise InputError(f"label {label_path} has no labelled voxel: give a label map with the structures to evaluate")
    # Names unknown to this case's map are skipped here; the CLI checks them against all cases.
    chosen = {v: names.get(v, f"label {v}") for v in resolve_structures(structures, names, present)}
    if not chosen:
        raise InputError(f"none of the asked structures is in {label_path}: check --structures or leave that case out")
    path = Path(str(image_path))
    return Case(
        name=name or f"{path.parent.name}/{path.name}", image=image, volume=array_of(image), labels=labels,
        spacing=tuple(image.GetSpacing()), structures=chosen,
        files={"image": str(image_path), "label": str(label_path), "names": str(names_path) if names_path else None},
    )


def _box3(box2d, k):
    x0, y0, x1, y1 = box2d
    return ((x0, y0, k), (x1, y1, k))


def jittered(box2d, rng: np.random.Generator, shape) -> tuple:
    """A "jitter-N" box: each side shifted (std 5 % of the box side, capped at 10 %), not grown."""
    return jitter_box(box2d, shape, rng, fraction=JITTER_FRACTION, cap=2 * JITTER_FRACTION, margin=0.0)


def scores(pred: np.ndarray, truth: np.ndarray, spacing) -> dict:
    hd = metrics.hd95(pred, truth, spacing)
    return {
        "dice": round(metrics.dice(pred, truth), 4),
        "surface_dice_2mm": round(metrics.surface_dice(pred, truth, spacing, SURFACE_TOLERANCE_MM), 4),
        "hd95_mm": None if hd is None else round(hd, 2),
        "extent_pred": metrics.extent(pred),
        "extent_true": metrics.extent(truth),
    }


def _run(session, truth, spacing, **prompt) -> dict:
    t0 = time.perf_counter()
    passes0 = session.encoder_passes  # the session's count includes the prompt window's own pass
    res = session.segment(axis=2, **prompt)
    pred = res.volume_mask().astype(bool)
    out = scores(pred, truth, spacing)
    out.update(encoder_passes=session.encoder_passes - passes0, seconds=round(time.perf_counter() - t0, 2), stopped=res.stopped)
    return out, pred


def efficiency(session, truth: np.ndarray, start_pred: np.ndarray, k0: int, target: float = TARGET_DICE,
               oracle_pred: Optional[np.ndarray] = None) -> dict:
    """Prompts needed to reach `target` Dice with the correction loop, vs a box on every slice (`oracle_pred`, if computed)."""
    pred = start_pred.copy()
    prompts, dice_now = 1, metrics.dice(pred, truth)
    n_true = int(truth.reshape(truth.shape[0], -1).any(axis=1).sum())
    history = [round(dice_now, 4)]
    while dice_now < target and prompts < max(n_true, 1):
        per_slice = metrics.slice_dice(pred, truth)
        s = min(per_slice, key=lambda k: (per_slice[k], abs(k - k0)))
        side = 1 if s > k0 else -1 if s < k0 else 0
        beyond = slice(s, None) if side > 0 else slice(0, s + 1) if side < 0 else slice(None)
        if not truth[s].any():  # over-extent: erase from the worst slice outwards
            pred[beyond] = False
        else:
            direction = {1: "up", -1: "down", 0: "both"}[side]
            res = session.segment(box=_box3(tight_box(truth[s]), s), axis=2, direction=direction)
            new = res.volume_mask().astype(bool)
            pred[beyond] = new[beyond]
        prompts += 1
        dice_now = metrics.dice(pred, truth)
        history.append(round(dice_now, 4))
    # The alternative: a box on every slice of the structure, each slice predicted on its own (the oracle anchor).
    per_slice_pred = oracle_pred if oracle_pred is not None else anchors.oracle(session.predictor(2), truth)
    return {
        "target_dice": target,
        "prompts": prompts,
        "reached": dice_now >= target,
        "final_dice": round(dice_now, 4),
        "dice_history": history,
        "box_every_slice_prompts": n_true,
        "box_every_slice_dice": round(metrics.dice(per_slice_pred, truth), 4),
    }


def anchor_runs(session, truth: np.ndarray, spacing, k0: int, box2d) -> tuple:
    """({"chain": scores, "oracle": scores}, the oracle's mask): `anchors` on the session's own axis-k predictor."""
    predictor = session.predictor(2)
    out = {}
    for name in ("chain", "oracle"):
        t0, passes0 = time.perf_counter(), predictor.encoder_passes
        if name == "chain":
            pred, ends = anchors.chain(predictor, k0, box2d)
        else:
            pred = anchors.oracle(predictor, truth)
        out[name] = scores(pred, truth, spacing)
        out[name].update(encoder_passes=predictor.encoder_passes - passes0, seconds=round(time.perf_counter() - t0, 2))
        if name == "chain":
            out[name]["last_slice"] = ends
    return out, pred


def evaluate_structure(model: SlideSAMModel, case: Case, value: int, jitter: int = 2, with_efficiency: bool = True,
                       seed: int = 0, session=None, with_anchors: bool = True, with_interactive: bool = True) -> dict:
    """`session`: the case's engine Session, shared by its structures so the volume is encoded once."""
    from ..session import Session

    truth = case.labels == value
    areas = truth.reshape(truth.shape[0], -1).sum(axis=1)
    k0 = int(np.argmax(areas))
    box2d = tight_box(truth[k0])
    session = session if session is not None else Session(model, case.volume, spacing=case.spacing)
    passes_before = session.encoder_passes
    out = {"case": case.name, "structure": case.structures[value], "label": value, "prompt_slice": k0,
           "voxels": int(truth.sum()), "runs": {}}
    figure = {"truth": truth, "k0": k0, "box": box2d}
    out["runs"]["box"], figure["box_pred"] = _run(session, truth, case.spacing, box=_box3(box2d, k0))
    out["slice_dice"] = {int(k): round(v, 4) for k, v in metrics.slice_dice(figure["box_pred"], truth).items()}
    rng = np.random.default_rng([seed, value])
    for j in range(jitter):
        out["runs"][f"jitter-{j + 1}"], _ = _run(session, truth, case.spacing, box=_box3(jittered(box2d, rng, truth.shape[1:]), k0))
    click = deepest_point(truth[k0])
    figure["click"] = click
    run, figure["point_pred"] = _run(session, truth, case.spacing, points=[((click[0], click[1], k0), True)])
    run["click_prompt"] = "decoder" if model.supports_points else "box search"
    out["runs"]["point"] = run
    out["point_vs_box"] = click_vs_box(out)
    oracle_pred = None
    if with_anchors:
        out["anchors"], oracle_pred = anchor_runs(session, truth, case.spacing, k0, box2d)
        engine, orc = out["runs"]["box"]["dice"], out["anchors"]["oracle"]["dice"]
        out["engine_vs_oracle"] = round(engine / orc, 3) if orc > 0 else None
        out["chain_minus_engine"] = round(out["anchors"]["chain"]["dice"] - engine, 4)
    if with_efficiency:
        out["efficiency"] = efficiency(session, truth, figure["box_pred"], k0, oracle_pred=oracle_pred)
    if with_interactive:
        out["interactive"] = protocol.interactive(session, truth, case.spacing, k0, figure["box_pred"])
    out["encoder_passes_total"] = session.encoder_passes - passes_before  # new passes for this structure
    return out, figure


def evaluate(model: SlideSAMModel, cases: Sequence[Case], jitter: int = 2, with_efficiency: bool = True,
             seed: int = 0, progress: Optional[Callable[[str], None]] = None, figures: Optional[Callable] = None,
             with_anchors: bool = True, with_interactive: bool = True, partial: Optional[Callable[[dict], None]] = None) -> dict:
    """`partial(report)`: called after each structure with the report so far ("complete": false), so that a run
    stopped early keeps what it finished."""
    t0 = time.perf_counter()
    results = []
    from ..session import Session

    for case in cases:
        session = Session(model, case.volume, spacing=case.spacing)  # one per case: its structures reuse the embeddings
        for value in case.structures:
            truth = case.labels == value
            if truth.reshape(truth.shape[0], -1).sum(axis=1).max() < MIN_AREA:
                continue
            if progress:
                progress(f"{case.name}: {case.structures[value]}")
            res, fig = evaluate_structure(model, case, value, jitter, with_efficiency, seed, session=session, with_anchors=with_anchors,
                                          with_interactive=with_interactive)
            results.append(res)
            if figures:
                figures(case, res, fig)
            if partial:
                partial(_report(model, cases, results, t0, complete=False))
    return _report(model, cases, results, t0, complete=True)


def _report(model: SlideSAMModel, cases: Sequence[Case], results: List[dict], t0: float, complete: bool) -> dict:
    return {"model": model.source, "model_kind": model.kind, "supports_points": model.supports_points,
            "cases": [{"name": c.name, **c.files, "spacing": list(c.spacing), "size_xyz": list(c.image.GetSize())} for c in cases],
            "results": results, "summary": summarise(results), "seconds": round(time.perf_counter() - t0, 1), "complete": complete}


def click_vs_box(result: dict) -> Optional[float]:
    """One click's 3D Dice over one box's; None without a click run, or when the box found nothing (undefined)."""
    runs = result["runs"]
    if "point" not in runs or runs["box"]["dice"] <= 0:
        return None
    return round(runs["point"]["dice"] / runs["box"]["dice"], 3)


def summarise(results: List[dict]) -> dict:
    out = {}
    for run in sorted({r for res in results for r in res["runs"]}):
        vals = [res["runs"][run] for res in results if run in res["runs"]]
        out[run] = {
            "structures": len(vals),
            "mean_dice": round(float(np.mean([v["dice"] for v in vals])), 4),
            "mean_surface_dice_2mm": round(float(np.mean([v["surface_dice_2mm"] for v in vals])), 4),
            "median_hd95_mm": (round(float(np.median([v["hd95_mm"] for v in vals if v["hd95_mm"] is not None])), 2)
                               if any(v["hd95_mm"] is not None for v in vals) else None),
        }
    eff = [r["efficiency"] for r in results if "efficiency" in r]
    if eff:
        out["efficiency"] = {"prompts": int(sum(e["prompts"] for e in eff)), "box_every_slice_prompts": int(sum(e["box_every_slice_prompts"] for e in eff)),
                             "reached": int(sum(e["reached"] for e in eff)), "structures": len(eff)}
    with_anchors = [r for r in results if "anchors" in r]
    if with_anchors:
        out["anchors"] = summarise_anchors(with_anchors)
    inter = [r["interactive"] for r in results if "interactive" in r]
    if inter:
        out["interactive"] = {
            "structures": len(inter),
            "mean_dice_curve": [round(float(np.mean([i["curve"][n]["dice"] for i in inter])), 4) for n in range(len(inter[0]["curve"]))],
            "mean_surface_dice_curve": [round(float(np.mean([i["curve"][n]["surface_dice_2mm"] for i in inter])), 4) for n in range(len(inter[0]["curve"]))],
            "mean_dice_auc": round(float(np.mean([i["dice_auc"] for i in inter])), 4),
            "mean_surface_dice_auc": round(float(np.mean([i["surface_dice_auc"] for i in inter])), 4),
        }
    ratios = [v for v in map(click_vs_box, results) if v is not None]
    if ratios:
        out["point_vs_box_mean"] = round(float(np.mean(ratios)), 3)
    return out


def summarise_anchors(results: List[dict]) -> dict:
    """Means of engine (one box), chain and oracle, the engine / oracle ratios and the issue-12 checks per structure."""
    mean = lambda xs: round(float(np.mean(xs)), 4)
    engine = [r["runs"]["box"]["dice"] for r in results]
    chain = [r["anchors"]["chain"]["dice"] for r in results]
    orc = [r["anchors"]["oracle"]["dice"] for r in results]
    ratios = [r["engine_vs_oracle"] for r in results if r["engine_vs_oracle"] is not None]
    return {
        "structures": len(results),
        "mean_dice_engine": mean(engine), "mean_dice_chain": mean(chain), "mean_dice_oracle": mean(orc),
        "mean_surface_dice_2mm_engine": mean([r["runs"]["box"]["surface_dice_2mm"] for r in results]),
        "mean_surface_dice_2mm_chain": mean([r["anchors"]["chain"]["surface_dice_2mm"] for r in results]),
        "mean_surface_dice_2mm_oracle": mean([r["anchors"]["oracle"]["surface_dice_2mm"] for r in results]),
        "mean_engine_over_mean_oracle": round(float(np.mean(engine) / np.mean(orc)), 3) if np.mean(orc) > 0 else None,
        "mean_engine_vs_oracle": round(float(np.mean(ratios)), 3) if ratios else None,
        "engine_below_0.9_oracle": sum(e < 0.9 * o for e, o in zip(engine, orc)),
        "chain_better_by_more_than_0.02": sum(c > e + 0.02 for e, c in zip(engine, chain)),
    }
