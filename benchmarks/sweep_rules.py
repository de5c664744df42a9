"""Sweep of the propagation's hand rules on every training folder (issue 12 §2; benchmarks/RESULTS_rules.md).

For each training volume ONE `Session` is built (its embeddings encoded once, then reused: the encoder passes
are printed per volume and per variant); for each structure the chain and the oracle anchors
(`SlideSAMLib/evaluation/anchors.py`) are computed once, then the engine's one box (eval's box: the tight
reference box on the largest slice, slice axis k) is propagated once per rule variant: decoder-only work.
Per variant and structure: 3D Dice and, per direction, the reason the chain stopped and its last slice against
the reference's extent (negative: stopped early, positive: ran past the end).

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/sweep_rules.py -o OUT.json [--variants a,b,c+d] [--cases x,y]
        [--anchors-from EVAL.json ...] [--embeddings DIR] [--features]

A variant "a+b" applies both. Training folders only: the evaluation-only ones are not listed and cannot be.
--anchors-from: take a structure's chain / oracle Dice from an earlier `slidesam eval` (or sweep) JSON of the same
image, label file and label with the same model, instead of decoding them again (they are deterministic: session 6
reproduced session 5's to 4 decimals, RESULTS_anchors.md). --embeddings: keep each volume's embeddings on disk
there, so a second sweep encodes nothing.
"""
import argparse
import contextlib
import functools
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "benchmarks"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from SlideSAMLib import propagation, session as session_module  # noqa: E402
from SlideSAMLib.evaluation import anchors, evaluate, metrics  # noqa: E402
from SlideSAMLib.training.prompts import tight_box  # noqa: E402

D = ROOT / ".." / "shared" / "data"
# The training cases of benchmarks/eval_anchors.sh ("training"), every structure of each; cheapest volumes first
# (a stopped sweep keeps what it finished).
CASES = {
    "mr_breast_lesion": (D / "mr_breast_lesion/image.nrrd", D / "mr_breast_lesion/label.nrrd", None),
    "mr_abdomen": (D / "mr_abdomen/example_mr_sm.nii.gz", D / "mr_abdomen/example_seg_mr.nii.gz", D / "mr_abdomen/labels_total_mr.json"),
    "spine_ct_vert": (D / "ct_mr_spine/sub-ct_label-22_ct.nii.gz", D / "ct_mr_spine/sub-ct_seg-vert_label-22_msk.nii.gz", None),
    "spine_ct_subreg": (D / "ct_mr_spine/sub-ct_label-22_ct.nii.gz", D / "ct_mr_spine/sub-ct_seg-subreg_label-22_msk.nii.gz", None),
    "spine_mr_vert": (D / "ct_mr_spine/sub-mri_label-6_T2w.nii.gz", D / "ct_mr_spine/sub-mri_seg-vert_label-6_msk.nii.gz", None),
    "spine_mr_subreg": (D / "ct_mr_spine/sub-mri_label-6_T2w.nii.gz", D / "ct_mr_spine/sub-mri_seg-subreg_label-6_msk.nii.gz", None),
    "ct_abdomen": (D / "ct_abdomen/example_ct.nii.gz", D / "ct_abdomen/example_seg_fast_force_split.nii.gz", D / "ct_abdomen/labels_total.json"),
    "ct_chest_nodule": (D / "ct_chest_nodule/image.nrrd", D / "ct_chest_nodule/label.nrrd", None),
    "ct_liver_lits": (D / "ct_liver_lits/image.nii.gz", D / "ct_liver_lits/label.nii.gz", None),
}
# example_ct's organs of the CI floors and RESULTS.md §1c go first (eval_anchors.sh's training_main list).
FIRST = {"ct_abdomen": ["spleen", "kidney_right", "kidney_left", "liver", "gallbladder", "stomach", "pancreas", "aorta",
                        "inferior_vena_cava", "urinary_bladder", "vertebrae_L3", "duodenum", "iliopsoas_left", "femur_left",
                        "autochthon_left", "portal_vein_and_splenic_vein",
                        # then session 8's chain-win structures (RESULTS_rules.md "Session 8: where the chain wins")
                        "vertebrae_L5", "sacrum", "small_bowel", "femur_right", "gluteus_medius_left"]}
# The variants run when --variants is not given: every StopRule rule relaxed and off (cheap: they share the
# default's decodes up to where it stopped), and the constraints that change every box (a full chain each).
DEFAULT_VARIANTS = ("default,overlap0.3,overlap-off,growth3,growth-off,iou0.3,iou-off,inliers-off,tail-off,"
                    "band-off,band-rule-off,step4,islet-off,overlap0.6,overlap0.7,growth1.3,iou0.6,iou0.7,inliers0.5,"
                    "vanish0.02,vanish0.05,tail0.1,overlap-off+growth-off")
OFF = float("inf")
# One rule at a time. "rule": StopRule fields; "const": propagation module constants; "band_off": constrain keeps
# every intensity (the intensity stop rule still sees the band).
VARIANTS = {
    "default": {},
    "overlap0.3": {"rule": {"min_overlap": 0.3}},
    "overlap-off": {"rule": {"min_overlap": 0.0}},
    "growth2": {"rule": {"max_growth": 2.0}},
    "growth3": {"rule": {"max_growth": 3.0}},
    "growth-off": {"rule": {"max_growth": OFF}},
    "iou0.3": {"rule": {"min_iou": 0.3}},
    "iou0.5": {"rule": {"min_iou": 0.5}},  # the default until session 7
    "iou-off": {"rule": {"min_iou": 0.0}},
    "inliers0.15": {"rule": {"min_intensity_inliers": 0.15}},
    "inliers-off": {"rule": {"min_intensity_inliers": 0.0}},
    "tail30": {"rule": {"max_tail_mm": 30.0}},
    "tail-off": {"rule": {"max_tail_mm": OFF}},
    "vanish0.01": {"rule": {"min_area_fraction": 0.01}},
    "vanish0.002": {"rule": {"min_area_fraction": 0.002}},
    "band2-98": {"const": {"BAND_PERCENTILES": (2.0, 98.0)}},
    "band1-99": {"const": {"BAND_PERCENTILES": (1.0, 99.0)}},
    "bandpad0.2": {"const": {"BAND_PAD": 0.2}},
    "band-off": {"band_off": True},
    "band-rule-off": {"band_off": True, "rule": {"min_intensity_inliers": 0.0}},
    "step3": {"const": {"STEP_MODEL_PX": 3.0}},
    "step4": {"const": {"STEP_MODEL_PX": 4.0}},
    "step-off": {"const": {"STEP_MODEL_PX": 1e6}},
    "islet0.1": {"const": {"MIN_COMPONENT_FRACTION": 0.1}},
    "islet-off": {"const": {"MIN_COMPONENT_FRACTION": 0.0}},
    "islet0.5": {"const": {"MIN_COMPONENT_FRACTION": 0.5}},
    # stricter: chains that run past the structure's end (most of the training chains, RESULTS_rules.md)
    "overlap0.6": {"rule": {"min_overlap": 0.6}},
    "overlap0.7": {"rule": {"min_overlap": 0.7}},
    "growth1.3": {"rule": {"max_growth": 1.3}},
    "iou0.6": {"rule": {"min_iou": 0.6}},
    "iou0.7": {"rule": {"min_iou": 0.7}},
    "inliers0.5": {"rule": {"min_intensity_inliers": 0.5}},
    "vanish0.02": {"rule": {"min_area_fraction": 0.02}},
    "vanish0.05": {"rule": {"min_area_fraction": 0.05}},
    "tail0.1": {"rule": {"tail_fraction": 0.1}},
    # session 8: the drift rule (StopRule.max_drift_iqr, DRIFT_MIN_PROMPT_PIXELS)
    "drift-off": {"rule": {"max_drift_iqr": OFF}},
    "drift1.0": {"rule": {"max_drift_iqr": 1.0}},
    "drift2": {"rule": {"max_drift_iqr": 2.0}},
    "drift3": {"rule": {"max_drift_iqr": 3.0}},
    "driftfloor0": {"const": {"DRIFT_MIN_PROMPT_PIXELS": 0}},
    "driftfloor50": {"const": {"DRIFT_MIN_PROMPT_PIXELS": 50}},
    "margin3": {"const": {"BOX_MARGIN_MODEL_PX": 3.0}},
    "margin4": {"const": {"BOX_MARGIN_MODEL_PX": 4.0}},
    "margin7": {"const": {"BOX_MARGIN_MODEL_PX": 7.0}},
    # session 11: growth and overlap rules not applied to masks under a floor (propagation.SMALL_MASK_MODEL_PX2)
    "small-off": {"const": {"SMALL_MASK_MODEL_PX2": 0.0}},  # the default (on in ef7a7cd..fad1d72 only)
    "small50": {"const": {"SMALL_MASK_MODEL_PX2": 50.0}},  # chosen on training, failed the evaluation-only gate
    "small100": {"const": {"SMALL_MASK_MODEL_PX2": 100.0}},
    "small200": {"const": {"SMALL_MASK_MODEL_PX2": 200.0}},
    # session 12: the floor only where the prompt decode covers less than a share of its box (SPECK_BOX_SHARE);
    # combine with a floor, e.g. small50+speck0.2
    "speck0.1": {"const": {"SPECK_BOX_SHARE": 0.1}},
    "speck0.2": {"const": {"SPECK_BOX_SHARE": 0.2}},
    "speck0.3": {"const": {"SPECK_BOX_SHARE": 0.3}},  # with small50: chosen on training, failed the gate (session 12)
    # session 8, where the chain wins: the merge of the windows' logits. centre-only: each slice's mask is
    # (almost) its own window's centre output, as in the chain (the side outputs still prompt the next window:
    # with SIDE_WEIGHT 0 the next window would get no prompt); side-equal: the three windows weigh the same.
    "centre-only": {"const": {"SIDE_WEIGHT": 1e-3}},
    "side-equal": {"const": {"SIDE_WEIGHT": 2.0}},
    # the chain's prompt: the next window's box from the previous slice's accepted (constrained) centre mask, not
    # from the merged side outputs of slice c (the overlap rule then compares with that mask too). Sweep-only.
    "prompt-prev": {"prompt_prev": True},
    # session 15: a neighbour mask whose surrounding ring lies mostly in the organ's band is grown within the band
    # before the next box is taken from it (propagation.EDGE_RING_SHARE; off by default)
    "edge0.9": {"const": {"EDGE_RING_SHARE": 0.9}},
    "edge0.8": {"const": {"EDGE_RING_SHARE": 0.8}},
    "edge0.7": {"const": {"EDGE_RING_SHARE": 0.7}},
    "edge0.6": {"const": {"EDGE_RING_SHARE": 0.6}},
    "edge0.5": {"const": {"EDGE_RING_SHARE": 0.5}},
    "edge0.3": {"const": {"EDGE_RING_SHARE": 0.3}},
    "edge0": {"const": {"EDGE_RING_SHARE": 0.0}},  # grow wherever the ring is in the band
    "closed0.3": {"const": {"EDGE_CLOSED_SHARE": 0.3}},
    "closed0.5": {"const": {"EDGE_CLOSED_SHARE": 0.5}},
    "closed0.2": {"const": {"EDGE_CLOSED_SHARE": 0.2}},
    "closed0.1": {"const": {"EDGE_CLOSED_SHARE": 0.1}},
    "egrow5": {"const": {"EDGE_GROW_MODEL_PX": 5.0}},
    "egrow20": {"const": {"EDGE_GROW_MODEL_PX": 20.0}},
}
CONSTS = ("BAND_PERCENTILES", "BAND_PAD", "MIN_COMPONENT_FRACTION", "BOX_MARGIN_MODEL_PX", "STEP_MODEL_PX", "DRIFT_MIN_PROMPT_PIXELS",
          "SIDE_WEIGHT", "SMALL_MASK_MODEL_PX2", "SPECK_BOX_SHARE", "EDGE_RING_SHARE", "EDGE_GROW_MODEL_PX", "EDGE_CLOSED_SHARE")


def variant(name: str) -> dict:
    """The settings of `name`; "a+b" merges a and b (b wins where both set one)."""
    out = {"rule": {}, "const": {}, "band_off": False, "prompt_prev": False}
    for part in name.split("+"):
        if part not in VARIANTS:
            raise SystemExit(f"unknown variant {part!r}: one of {', '.join(VARIANTS)}")
        v = VARIANTS[part]
        out["rule"].update(v.get("rule", {}))
        out["const"].update(v.get("const", {}))
        out["band_off"] |= v.get("band_off", False)
        out["prompt_prev"] |= v.get("prompt_prev", False)
    return out


@contextlib.contextmanager
def applied(settings: dict, session):
    """The session propagates with `settings`; everything is put back afterwards."""
    saved = {n: getattr(propagation, n) for n in CONSTS}
    saved_rule, saved_band = session.stop_rule, propagation.IntensityModel.band
    saved_window = propagation.Propagator._window
    try:
        for n, v in settings["const"].items():
            setattr(propagation, n, v)
        session.stop_rule = propagation.StopRule(**settings["rule"])
        # Propagator's margin / step defaults are bound when the class is defined: pass them (Session builds it).
        session_module.Propagator = functools.partial(
            propagation.Propagator, box_margin_model_px=propagation.BOX_MARGIN_MODEL_PX, step_model_px=propagation.STEP_MODEL_PX,
            small_mask_model_px2=propagation.SMALL_MASK_MODEL_PX2, speck_box_share=propagation.SPECK_BOX_SHARE)
        if settings["band_off"]:
            propagation.IntensityModel.band = lambda self, image: np.ones(np.shape(image), bool)
        if settings["prompt_prev"]:
            def window_from_previous(self, c, chain, lo, hi):
                merged = self.merged
                self.merged = lambda s: chain.previous_mask if s == c else merged(s)
                try:
                    return saved_window(self, c, chain, lo, hi)
                finally:
                    del self.merged  # back to the class's own
            propagation.Propagator._window = window_from_previous
        yield
    finally:
        for n, v in saved.items():
            setattr(propagation, n, v)
        session.stop_rule = saved_rule
        session_module.Propagator = propagation.Propagator
        propagation.IntensityModel.band = saved_band
        propagation.Propagator._window = saved_window


def memoised(predictor):
    """Decode each (window, prompt) once per structure: variants that agree so far ask for the same boxes."""
    raw, memo = predictor.predict, {}

    def predict(k, box=None, points=()):
        key = (int(k), None if box is None else tuple(float(v) for v in box), tuple(tuple(p) for p in points))
        if key not in memo:
            memo[key] = raw(k, box=box, points=points)
        return memo[key]

    predictor.predict = predict
    return memo


def stops(res, pred: np.ndarray, truth: np.ndarray) -> dict:
    """Per direction: why the chain stopped and how far its last slice is from the reference's end (slices;
    negative = stopped early, positive = ran past it)."""
    te, pe = metrics.extent(truth), metrics.extent(pred)
    if pe is None:
        return {d: {"reason": res.stopped.get(d), "delta": None} for d in ("up", "down")}
    return {"up": {"reason": res.stopped.get("up"), "delta": pe[1] - te[1]},
            "down": {"reason": res.stopped.get("down"), "delta": te[0] - pe[0]}}


def known_anchors(paths) -> dict:
    """{(folder/image file, label file, label value): (chain Dice, oracle Dice)} from earlier eval / sweep JSON files.
    The image's folder is part of the key: ct_chest_nodule and mr_breast_lesion both hold image.nrrd / label.nrrd
    (before session 8 the nodule took the breast lesion's anchors)."""
    out = {}
    for path in paths:
        data = json.loads(Path(path).read_text())
        if "rows" in data:  # a sweep
            for r in data["rows"]:
                if r["case"] in CASES:
                    out[(f"{CASES[r['case']][0].parent.name}/{r['image']}", r["label_file"], r["label"])] = (r["chain"], r["oracle"])
            continue
        files = {c["name"]: (f"{Path(c['image']).parent.name}/{Path(c['image']).name}", Path(c["label"]).name) for c in data["cases"]}
        for r in data["results"]:
            if "anchors" in r:
                out[(*files[r["case"]], r["label"])] = (r["anchors"]["chain"]["dice"], r["anchors"]["oracle"]["dice"])
    return out


def embeddings_file(folder, image, predictor) -> Path:
    """One file per image (its vertebra and sub-region label files share it) and model."""
    import hashlib

    key = hashlib.sha1(f"{predictor.model.source} {predictor.model.encoder_backend}".encode()).hexdigest()[:12]
    return Path(folder) / f"{Path(image).parent.name}_{Path(image).name}_{key}.pt"


def sweep_case(model, group, paths, names, out, save, known, embeddings=None, only=None, no_anchors=False, features=False,
               chain_only=False):
    import torch
    from end_features import Recorder
    from SlideSAMLib.session import Session

    case = evaluate.load_case(*paths, name=group)
    session = Session(model, case.volume, spacing=case.spacing)
    predictor = session.predictor(2)
    store = embeddings_file(embeddings, paths[0], predictor) if embeddings else None
    if store is not None and store.exists():
        for k, e in torch.load(store).items():
            session.cache.put((predictor.cache_key, k), e)
    t0, saved = time.perf_counter(), session.encoder_passes
    first = [v for n in FIRST.get(group, []) for v, label in case.structures.items() if label == n]
    for value in first + [v for v in case.structures if v not in first]:
        label = case.structures[value]
        if only and label not in only:
            continue
        truth = case.labels == value
        areas = truth.reshape(truth.shape[0], -1).sum(axis=1)
        if areas.max() < evaluate.MIN_AREA:
            continue
        k0 = int(np.argmax(areas))
        box2d = tight_box(truth[k0])
        memo = memoised(predictor)
        files = (Path(paths[0]).name, Path(paths[1]).name)
        row = {"case": group, "structure": label, "label": int(value), "image": files[0], "label_file": files[1],
               "voxels": int(truth.sum()), "prompt_slice": k0, "extent_true": metrics.extent(truth), "variants": {}}
        key = (f"{Path(paths[0]).parent.name}/{files[0]}", files[1], int(value))
        if key in known:
            row["chain"], row["oracle"] = known[key]
            row["anchors"] = "earlier run"
        elif no_anchors:
            row["chain"] = row["oracle"] = float("nan")
            row["anchors"] = "not computed (--no-anchors)"
        else:
            chain_pred, _ = anchors.chain(predictor, k0, box2d)
            row["chain"] = round(metrics.dice(chain_pred, truth), 4)
            if chain_only:
                row["oracle"] = float("nan")
                row["anchors"] = "this run (chain only, --chain-only)"
            else:
                row["oracle"] = round(metrics.dice(anchors.oracle(predictor, truth), truth), 4)
                row["anchors"] = "this run"
        for name in names:
            recorder = Recorder((case.spacing[1], case.spacing[0])) if features and name == names[0] else contextlib.nullcontext()
            with applied(variant(name), session), recorder:
                if features and name == names[0]:
                    recorder.begin(k0)
                p0, s0 = session.encoder_passes, time.perf_counter()
                res = session.segment(box=evaluate._box3(box2d, k0), axis=2)
                pred = res.volume_mask().astype(bool)
            if features and name == names[0]:
                row["features"] = recorder.finish(res, truth)
            row["variants"][name] = {"dice": round(metrics.dice(pred, truth), 4), "stops": stops(res, pred, truth),
                                     "passes": session.encoder_passes - p0, "seconds": round(time.perf_counter() - s0, 2)}
        del predictor.predict  # back to the class's own
        row["decodes"] = len(memo)
        memo.clear()
        out.append(row)
        d = row["variants"]
        print(f"{group} {label}: oracle {row['oracle']:.3f} chain {row['chain']:.3f} decodes {row['decodes']} "
              + " ".join(f"{n}={d[n]['dice']:.3f}" for n in names), file=sys.stderr, flush=True)
        save()
        if store is not None and session.encoder_passes > saved:
            saved = session.encoder_passes
            store.parent.mkdir(parents=True, exist_ok=True)
            torch.save({k: session.cache.get((predictor.cache_key, k)) for k in range(predictor.n_slices) if predictor.is_encoded(k)}, store)
    print(f"{group}: {session.encoder_passes} encoder passes for {predictor.n_slices} slices, {time.perf_counter() - t0:.0f} s",
          file=sys.stderr, flush=True)


def table(rows, names) -> str:
    base = names[0]
    lines = ["| variant | mean engine | mean engine / mean oracle | chain > engine + 0.02 | engine < 0.9 × oracle | "
             f"better / worse than {base} by > 0.02 | worst drop vs {base} (structure) | stops early ≥ 2 slices | past end ≥ 2 slices |",
             "|---|---:|---:|---:|---:|---:|---|---:|---:|"]
    orc = np.mean([r["oracle"] for r in rows])
    for n in names:
        e = [r["variants"][n]["dice"] for r in rows]
        b = [r["variants"][base]["dice"] for r in rows]
        diffs = [x - y for x, y in zip(e, b)]
        w = int(np.argmin(diffs))
        st = [s for r in rows for s in r["variants"][n]["stops"].values() if s["delta"] is not None]
        lines.append(
            f"| {n} | {np.mean(e):.4f} | {np.mean(e) / orc:.3f} | {sum(r['chain'] > x + 0.02 for r, x in zip(rows, e))} | "
            f"{sum(x < 0.9 * r['oracle'] for r, x in zip(rows, e))} | {sum(d > 0.02 for d in diffs)} / {sum(d < -0.02 for d in diffs)} | "
            f"{diffs[w]:+.3f} ({rows[w]['case']} {rows[w]['structure']}) | {sum(s['delta'] <= -2 for s in st)} | {sum(s['delta'] >= 2 for s in st)} |")
    lines.append(f"\n{len(rows)} structures; mean chain {np.mean([r['chain'] for r in rows]):.4f}, mean oracle {orc:.4f}.")
    return "\n".join(lines)


def reasons(rows, names) -> str:
    """How often each reason ended a chain, and how often that end was early / late by 2+ slices."""
    lines = ["| variant | reason: chains (early ≥ 2 / late ≥ 2) |", "|---|---|"]
    for n in names:
        count = {}
        for r in rows:
            for s in r["variants"][n]["stops"].values():
                c = count.setdefault(s["reason"], [0, 0, 0])
                c[0] += 1
                if s["delta"] is not None:
                    c[1] += s["delta"] <= -2
                    c[2] += s["delta"] >= 2
        lines.append(f"| {n} | " + ", ".join(f"{k}: {v[0]} ({v[1]}/{v[2]})" for k, v in sorted(count.items(), key=lambda kv: -kv[1][0])) + " |")
    return "\n".join(lines)


def merged(paths, names) -> list:
    """The rows of several sweeps, each structure's variants merged (by case, image, label file and label); only
    structures that have every one of `names`."""
    by_key = {}
    for path in paths:
        for r in json.loads(Path(path).read_text())["rows"]:
            # the case too: ct_chest_nodule and mr_breast_lesion both hold image.nrrd / label.nrrd, label 1
            key = (r["case"], r["image"], r["label_file"], r["label"])
            if key in by_key:
                by_key[key]["variants"].update(r["variants"])
            else:
                by_key[key] = r
    return [r for r in by_key.values() if all(n in r["variants"] for n in names)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--out", help="JSON file (rewritten after every structure)")
    ap.add_argument("--report", nargs="+", metavar="SWEEP.json", help="no sweep: merge these sweeps' rows (by case, image, label "
                    "file, label) and print the tables for --variants over the structures that have them all")
    ap.add_argument("--variants", default=DEFAULT_VARIANTS, help="comma-separated (of: " + ", ".join(VARIANTS) + "); the first is the table's baseline; 'none': no "
                    "propagation, only the anchors")
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated, of: " + ", ".join(CASES))
    ap.add_argument("--only", help="comma-separated structure names (e.g. 'label 2'): sweep only these")
    ap.add_argument("--anchors-from", nargs="*", default=[], help="earlier eval.json / sweep JSON files with the same structures' anchors")
    ap.add_argument("--no-anchors", action="store_true", help="skip the chain and oracle (their columns read nan)")
    ap.add_argument("--chain-only", action="store_true", help="decode the chain but not the oracle (its column reads nan)")
    ap.add_argument("--features", action="store_true", help="record each window's candidate end signals in the first "
                    "variant's run (benchmarks/end_features.py; row['features'])")
    ap.add_argument("--embeddings", help="folder for each volume's embeddings (read if there, written after the volume)")
    args = ap.parse_args()
    from SlideSAMLib.checkpoint import load_model

    names = [] if args.variants == "none" else args.variants.split(",")  # none: the anchors only (with --chain-only: the chain)
    for n in names:
        variant(n)
    if args.report:
        rows = merged(args.report, names)
        print(table(rows, names) + "\n\n" + reasons(rows, names))
        return 0
    if not args.out:
        raise SystemExit("give -o OUT.json (or --report)")
    cases = args.cases.split(",")
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        raise SystemExit(f"unknown case(s) {unknown}: training cases are {', '.join(CASES)}")
    model = load_model(None, device="cpu")
    rows, t0 = [], time.perf_counter()
    meta = {"command": " ".join(sys.argv), "omp_threads": os.environ.get("OMP_NUM_THREADS"), "start_load": os.getloadavg(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "variants": {n: variant(n) for n in names}}
    path = Path(args.out)

    def save(complete=False):
        meta.update(seconds=round(time.perf_counter() - t0, 1), end_load=os.getloadavg(), complete=complete)
        path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1, default=str))

    for group in cases:
        sweep_case(model, group, CASES[group], names, rows, save, known_anchors(args.anchors_from), args.embeddings,
                   args.only.split(",") if args.only else None, args.no_anchors, args.features, args.chain_only)
    save(complete=True)
    if not names:
        return 0
    print(table(rows, names))
    print()
    print(reasons(rows, names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
