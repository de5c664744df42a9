"""Lazy propagation (the engine) vs encode-every-window-first (the authors' approach), CPU, embedded model.

Workflow per case, identical for both methods, each (case, method) in its own subprocess so that peak
memory is that workflow's alone (the parent holds the reference labels, derives the prompts and scores the masks):
  1. prompt: tight box of the liver on its largest slice -> propagate both ways;
  2. restart: the reference liver label of a slice half-way towards the liver's lower end is the
     "correction"; propagate from it downwards;
  3. second prompt: tight box of the spleen on its largest slice, same session (not with --quick).
"encode_all" is the authors' approach (Slide-SAM's code): first encode every window of the volume with the
PyTorch fp32 encoder in batches of 4 on a fresh Session, then run the same workflow from the cache.
"lazy" is the engine as shipped (its default encoder: ONNX Runtime on CPU). "encode_all_same_encoder"
encodes everything first with the engine's own encoder, which isolates what laziness alone buys.
Cases: example_ct (122x101x112) and the same CT resampled to 512x512x300 over the same physical
extent (labels by nearest neighbour, so the box is the label's box on the new grid).

    PYTHONPATH=. .venv/bin/python benchmarks/bench_propagation.py            # both cases
    PYTHONPATH=. .venv/bin/python benchmarks/bench_propagation.py --quick    # liver only, example_ct only
    PYTHONPATH=. .venv/bin/python benchmarks/bench_propagation.py --skip-large
    PYTHONPATH=. .venv/bin/python benchmarks/bench_propagation.py --cpu-paths  # encoder variants

The last two lines are `speedup_vs_encode_all: X` (example_ct liver, end to end: encode-all +
propagation over lazy propagation) and `restart_seconds_per_slice: Y` (lazy, example_ct); with
`--cases large` alone they are the 512x512x300 figures.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import LIVER, SPLEEN, ROOT, dice, label_extent, largest_slice, load_avg, load_case, peak_rss_mb, tight_box  # noqa: E402

METHODS = ("lazy", "encode_all", "encode_all_same_encoder")
BASELINE_ENCODER = {"lazy": None, "encode_all": "torch", "encode_all_same_encoder": None}  # None: the engine's default
BASELINE_BATCH = 4


def workflow_prompts(labels: np.ndarray, spacing, quick: bool) -> dict:
    """The prompts of the workflow, from the reference labels (computed by the parent, so that the
    measured process holds only what an annotator's would: the model, the volume and its masks)."""
    k = largest_slice(labels, LIVER)
    lo = label_extent(labels, LIVER)[0]
    prompts = {"liver": {"slice": k, "box": tight_box(labels, LIVER, k)}, "restart_slice": (k + lo) // 2, "spacing": list(spacing)}
    if not quick:
        k = largest_slice(labels, SPLEEN)
        prompts["spleen"] = {"slice": k, "box": tight_box(labels, SPLEEN, k)}
    return prompts


def run_scenario(case: str, method: str, mask_out: Path, arrays: Path) -> dict:
    """One workflow in this process; returns its figures (seconds, passes, MB)."""
    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    from SlideSAMLib import Session, load_model

    out = {"case": case, "method": method, "threads": torch.get_num_threads(), "load_start": load_avg()}
    t = time.perf_counter()
    model = load_model(device="cpu", encoder=BASELINE_ENCODER[method])
    out["encoder"] = model.encoder_backend
    out["model_load_s"] = time.perf_counter() - t
    out["rss_after_model_mb"] = peak_rss_mb()
    volume = np.load(arrays / f"{case}-volume.npy")
    prompts = json.loads((arrays / f"{case}-prompts.json").read_text())
    correction = np.load(arrays / f"{case}-correction.npy")  # the "annotator's" corrected slice
    out["rss_after_data_mb"] = peak_rss_mb()
    out["shape_kji"] = list(volume.shape)
    t = time.perf_counter()
    session = Session(model, volume, spacing=prompts["spacing"])
    out["session_s"] = time.perf_counter() - t

    out["encode_all_s"] = 0.0
    out["encode_all_passes"] = 0
    if method != "lazy":
        pred = session.predictor(2)
        pred.batch_size = BASELINE_BATCH
        t = time.perf_counter()
        pred.encode(range(pred.n_slices))
        out["encode_all_s"] = time.perf_counter() - t
        out["encode_all_passes"] = pred.encoder_passes

    def timed_segment(name: str) -> np.ndarray:
        first = []
        t0 = time.perf_counter()
        res = session.segment(box=prompts[name]["box"], progress=lambda f, m: first or first.append(time.perf_counter()))
        total = time.perf_counter() - t0
        out[name] = {
            "prompt_slice": prompts[name]["slice"],
            "first_mask_s": first[0] - t0 if first else total,
            "seconds": total,
            "passes": res.encoder_passes,
            "slices": len(res.slices),
            "windows_decoded": len(res.info),
            "extent": [res.slices[0], res.slices[-1]],
            "stopped": res.stopped,
        }
        return res.volume_mask()

    masks = {"liver": timed_segment("liver")}

    # Restart: the reference label of a slice half-way between the prompt and the liver's lower end.
    k_fix = prompts["restart_slice"]
    largest = int(masks["liver"].sum(axis=(1, 2)).max())  # as the Slicer module passes the segment's largest slice
    t0 = time.perf_counter()
    res = session.restart(correction, k_fix, axis=2, direction="down", largest_area=largest)
    total = time.perf_counter() - t0
    out["restart"] = {
        "slice": k_fix, "seconds": total, "passes": res.encoder_passes, "slices": len(res.slices),
        "windows_decoded": len(res.info), "per_slice_s": total / max(1, len(res.slices)),
    }
    restarted = masks["liver"].copy()
    restarted[: k_fix + 1] = 0
    restarted |= res.volume_mask()
    masks["restart"] = restarted
    del res

    if "spleen" in prompts:
        masks["spleen"] = timed_segment("spleen")
        out["spleen"]["per_slice_s"] = out["spleen"]["seconds"] / max(1, out["spleen"]["slices"])

    out["total_passes"] = session.encoder_passes
    out["cache_mb"] = session.cache.nbytes / 2**20
    out["cache_items"] = len(session.cache)
    out["peak_rss_mb"] = peak_rss_mb()
    out["load_end"] = load_avg()
    np.savez_compressed(mask_out, **masks)
    return out


def score_against_reference(result: dict, labels: np.ndarray) -> None:
    """Dice and reference extents, added to a scenario's figures (in the parent, which holds the labels)."""
    masks = np.load(result["masks"])
    for name, label in (("liver", LIVER), ("restart", LIVER), ("spleen", SPLEEN)):
        if name in masks.files:
            result[name]["dice_vs_reference"] = dice(masks[name], labels == label)
            result[name]["ref_extent"] = list(label_extent(labels, label))


def spawn(case: str, method: str, workdir: Path) -> dict:
    result = workdir / f"{case}-{method}.json"
    masks = workdir / f"{case}-{method}.npz"
    cmd = [sys.executable, __file__, "--scenario", case, method, "--out", str(result), "--masks", str(masks), "--arrays", str(workdir)]
    print(f"  running {case} / {method} (load {load_avg()}) ...", flush=True)
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    if proc.returncode != 0:
        raise SystemExit(f"scenario {case}/{method} failed (exit {proc.returncode})")
    data = json.loads(result.read_text())
    data["wall_s"] = time.perf_counter() - t
    data["masks"] = str(masks)
    print(f"    done in {data['wall_s']:.0f} s", flush=True)
    return data


def end_to_end(r: dict) -> float:
    return r["encode_all_s"] + r["liver"]["seconds"]


def table(results: dict, quick: bool) -> str:
    rows = [
        ("volume (k, j, i)", lambda r: "x".join(map(str, r["shape_kji"]))),
        ("encoder", lambda r: r["encoder"]),
        ("load avg at start / end (1/5/15 min)", lambda r: f"{r['load_start']} / {r['load_end']}"),
        ("upfront encoding s (passes)", lambda r: f"{r['encode_all_s']:.1f} ({r['encode_all_passes']})"),
        ("liver: prompt -> first mask s", lambda r: f"{r['liver']['first_mask_s']:.2f}"),
        ("liver: load -> first mask s", lambda r: f"{r['encode_all_s'] + r['liver']['first_mask_s']:.2f}"),
        ("liver: propagation s (new passes)", lambda r: f"{r['liver']['seconds']:.1f} ({r['liver']['passes']})"),
        ("liver: end to end s", lambda r: f"{end_to_end(r):.1f}"),
        ("liver: slices written / reference extent", lambda r: f"{r['liver']['slices']} / {r['liver']['ref_extent'][1] - r['liver']['ref_extent'][0] + 1}"),
        ("liver: Dice vs reference", lambda r: f"{r['liver']['dice_vs_reference']:.3f}"),
        ("restart: s (new passes)", lambda r: f"{r['restart']['seconds']:.2f} ({r['restart']['passes']})"),
        ("restart: s per slice (slices)", lambda r: f"{r['restart']['per_slice_s']:.3f} ({r['restart']['slices']})"),
    ]
    if not quick:
        rows += [
            ("spleen 2nd prompt: prompt -> first mask s", lambda r: f"{r['spleen']['first_mask_s']:.2f}"),
            ("spleen 2nd prompt: s (new passes)", lambda r: f"{r['spleen']['seconds']:.1f} ({r['spleen']['passes']})"),
            ("spleen 2nd prompt: s per slice (slices)", lambda r: f"{r['spleen']['per_slice_s']:.3f} ({r['spleen']['slices']})"),
            ("spleen: Dice vs reference", lambda r: f"{r['spleen']['dice_vs_reference']:.3f}"),
        ]
    rows += [
        ("encoder passes in all", lambda r: str(r["total_passes"])),
        ("embedding cache MB (windows)", lambda r: f"{r['cache_mb']:.0f} ({r['cache_items']})"),
        ("peak RSS MB (after model load / + volume)", lambda r: f"{r['peak_rss_mb']:.0f} ({r['rss_after_model_mb']:.0f} / {r['rss_after_data_mb']:.0f})"),
    ]
    keys = list(results)
    head = "| figure | " + " | ".join(f"{c} {m}" for c, m in keys) + " |"
    lines = [head, "|---|" + "---:|" * len(keys)]
    for name, fn in rows:
        lines.append(f"| {name} | " + " | ".join(fn(results[k]) for k in keys) + " |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="liver only (plus its restart), example_ct only")
    ap.add_argument("--skip-large", action="store_true", help="leave out the 512x512x300 case")
    ap.add_argument("--cases", nargs="+", choices=["example", "large"], default=["example", "large"],
                    help="cases to run (the last two lines use the first one)")
    ap.add_argument("--json", help="also write all figures to this JSON file")
    ap.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                    help="lazy first; the last lines compare it with encode_all (default: all three)")
    ap.add_argument("--cpu-paths", action="store_true", help="instead: LiteMedSAM encoder variants on CPU (ms/window, mask Dice)")
    ap.add_argument("--threads", type=int, help="with --cpu-paths: reference torch threads (default: cores)")
    ap.add_argument("--reps", type=int, default=3, help="with --cpu-paths: timed (reference, variant) pairs per variant")
    ap.add_argument("--skip", nargs="*", default=[], help="with --cpu-paths: variant groups to leave out (compile, onnx)")
    ap.add_argument("--scenario", nargs=2, metavar=("CASE", "METHOD"), help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--masks", help=argparse.SUPPRESS)
    ap.add_argument("--arrays", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if not args.scenario and (args.methods[0] != "lazy" or "encode_all" not in args.methods):
        ap.error("--methods must start with lazy and include encode_all (the baseline of the last lines)")

    if args.scenario:
        case, method = args.scenario
        Path(args.out).write_text(json.dumps(run_scenario(case, method, Path(args.masks), Path(args.arrays))))
        return 0

    if args.cpu_paths:
        return explore_cpu_paths(skip=set(args.skip), json_path=args.json, threads=args.threads, reps=args.reps)

    import torch

    cases = [c for c in args.cases if c == "example" or not (args.quick or args.skip_large)]
    print(f"bench_propagation: CPU, {os.cpu_count()} cores, torch {torch.__version__}, threads = cores; cases {cases}", flush=True)
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-prop-") as tmp:
        for case in cases:
            volume, labels, spacing = load_case(case)
            prompts = workflow_prompts(labels, spacing, args.quick)
            np.save(Path(tmp) / f"{case}-volume.npy", volume)
            np.save(Path(tmp) / f"{case}-correction.npy", labels[prompts["restart_slice"]] == LIVER)
            (Path(tmp) / f"{case}-prompts.json").write_text(json.dumps(prompts))
            del volume
            for method in args.methods:
                results[(case, method)] = spawn(case, method, Path(tmp))
                score_against_reference(results[(case, method)], labels)
            del labels
            lazy = np.load(results[(case, "lazy")]["masks"])
            for method in args.methods[1:]:
                other = np.load(results[(case, method)]["masks"])
                agree = {name: dice(lazy[name], other[name]) for name in lazy.files}
                results[(case, "lazy")][f"dice_lazy_vs_{method}"] = agree
                print(f"  {case}: Dice of lazy vs {method} masks: " + ", ".join(f"{k} {v:.4f}" for k, v in agree.items()), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({f"{c}/{m}": r for (c, m), r in results.items()}, indent=1))

    print()
    print(table(results, args.quick))
    print()
    for case in cases:
        lazy = results[(case, "lazy")]
        for method in args.methods[1:]:
            full = results[(case, method)]
            print(f"{case}: end-to-end liver speedup vs {method} {end_to_end(full) / end_to_end(lazy):.2f}x; "
                  f"encoder passes {lazy['total_passes']} vs {full['total_passes']}")
    lazy, full = results[(cases[0], "lazy")], results[(cases[0], "encode_all")]
    print(f"speedup_vs_encode_all: {end_to_end(full) / end_to_end(lazy):.2f}")
    print(f"restart_seconds_per_slice: {lazy['restart']['per_slice_s']:.3f}")
    return 0


# -- CPU path exploration (LiteMedSAM encoder) ---------------------------------------------------
def explore_cpu_paths(skip=frozenset(), json_path=None, threads=None, reps=3) -> int:
    """ms/window of encoder variants on real windows of example_ct, and the masks they lead to.

    Masks go through the engine's own path (fp16 embedding cache, fp32 decoder, box on the slice),
    compared by Dice with the fp32 / default-threads / batch-1 reference, on the liver's largest
    slice and on a slice near its lower end (a small, harder section).
    """
    import copy
    import statistics

    import torch

    from SlideSAMLib import load_model
    from SlideSAMLib.predictor import WindowPredictor
    from SlideSAMLib.preprocess import window_to_input

    cores = os.cpu_count() or 1
    base_threads = threads or cores
    torch.set_num_threads(base_threads)
    model = load_model(device="cpu")
    volume, labels, _ = load_case("example")
    k_big = largest_slice(labels, LIVER)
    k_edge = label_extent(labels, LIVER)[0] + 3
    pred = WindowPredictor(model, volume, axis=2, modality="ct")
    ks = [k_big, k_edge, k_big - 1, k_big - 2]  # batch of up to 4 real windows; masks checked on the first two
    x4 = torch.stack([window_to_input(pred.window(k), pred.geometry, model.spec.preprocessing) for k in ks])
    encoder = model.net.image_encoder

    def masks_from(embeddings) -> list:
        out = []
        for k, emb in zip(ks[:2], embeddings[:2]):
            pred.cache.put((pred.cache_key, k), emb.float())
            (i0, j0, _), (i1, j1, _) = tight_box(labels, LIVER, k)
            out.append((pred.predict(k, box=(i0, j0, i1, j1)).logits > 0).numpy())
        return out

    def plain(x):
        with torch.inference_mode():
            return encoder(x)

    def timed(fn, x, threads):
        torch.set_num_threads(threads)
        try:
            t = time.perf_counter()
            emb = fn(x)
            return emb, (time.perf_counter() - t) * 1000 / x.shape[0]
        finally:
            torch.set_num_threads(base_threads)

    with torch.inference_mode():
        ref_emb = torch.cat([encoder(x4[i : i + 1]) for i in range(2)])
    ref_masks = masks_from(ref_emb)
    rows = []

    def measure(name, fn, batch=1, threads=None, note=""):
        """Paired timing: each variant pass right after a reference pass, so load swings hit both alike."""
        threads = threads or base_threads
        try:
            x = x4[:batch] if batch <= 4 else x4[:1].repeat(batch, 1, 1, 1)
            t_load = load_avg()
            fn(x)  # warm-up (and, for torch.compile, the compilation)
            ref_ms, var_ms = [], []
            for _ in range(reps):
                ref_ms.append(timed(plain, x4[:1], base_threads)[1])
                emb, ms = timed(fn, x, threads)
                var_ms.append(ms)
            if emb.shape[0] < 2:
                emb = torch.cat([emb, fn(x4[1:2])])
            masks = masks_from(emb[:2].float())
            row = {
                "variant": name, "batch": batch, "threads": threads, "ms_median": statistics.median(var_ms),
                "ref_ms_median": statistics.median(ref_ms),
                "speedup_paired": statistics.median(r / v for r, v in zip(ref_ms, var_ms)),
                "emb_rel_error": float((emb[:2].float() - ref_emb).norm() / ref_emb.norm()),
                "dice_centre_big": dice(masks[0][1], ref_masks[0][1]), "dice_centre_edge": dice(masks[1][1], ref_masks[1][1]),
                "dice_3slices_min": min(dice(m[s], r[s]) for m, r in zip(masks, ref_masks) for s in range(3)),
                "load": f"{t_load} -> {load_avg()}", "note": note,
            }
        except Exception as exc:  # a variant that cannot run here is a finding, not a crash
            row = {"variant": name, "batch": batch, "threads": threads, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}", "load": load_avg()}
        rows.append(row)
        print("  " + json.dumps(row), flush=True)

    print(f"cpu-paths: LiteMedSAM encoder, {cores} cores, reference fp32 batch 1 {base_threads} thread(s), torch {torch.__version__}; "
          f"windows {ks}", flush=True)
    measure("fp32", plain, note="reference vs itself")
    measure("fp32", plain, threads=1 if base_threads > 1 else cores)
    measure("fp32", plain, batch=4)

    cl_encoder = copy.deepcopy(encoder).to(memory_format=torch.channels_last)

    def channels_last(x):
        with torch.inference_mode():
            return cl_encoder(x.contiguous(memory_format=torch.channels_last))

    measure("channels_last", channels_last)

    def bf16(x):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return encoder(x).float()

    for b in (1, 4):
        measure("bf16 autocast", bf16, batch=b)

    bf16_encoder = copy.deepcopy(encoder).to(torch.bfloat16)

    def bf16_weights(x):
        with torch.inference_mode():
            return bf16_encoder(x.to(torch.bfloat16)).float()

    measure("bf16 weights", bf16_weights)

    if "onnx" not in skip:
        measure_onnx(encoder, x4, measure, base_threads)

    if "compile" not in skip:
        compiled = torch.compile(copy.deepcopy(encoder))

        def compiled_fp32(x):
            with torch.inference_mode():
                return compiled(x)

        t = time.perf_counter()
        measure("torch.compile", compiled_fp32, note="compilation in the warm-up, not timed")
        rows[-1]["compile_and_total_s"] = time.perf_counter() - t
        compiled_bf16 = torch.compile(copy.deepcopy(encoder))

        def compiled_bf16_fn(x):
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
                return compiled_bf16(x).float()

        t = time.perf_counter()
        measure("torch.compile + bf16", compiled_bf16_fn)
        rows[-1]["compile_and_total_s"] = time.perf_counter() - t

    if json_path:
        Path(json_path).write_text(json.dumps(rows, indent=1))
    print()
    print("| variant | batch | threads | ms/window (paired ref ms) | speed-up, paired | emb rel err | Dice centre big / edge | min Dice 3 slices | load |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['variant']} | {r['batch']} | {r['threads']} | {r['error']} | | | | | {r['load']} |")
            continue
        print(f"| {r['variant']} | {r['batch']} | {r['threads']} | {r['ms_median']:.0f} ({r['ref_ms_median']:.0f}) | {r['speedup_paired']:.2f} | "
              f"{r['emb_rel_error']:.1e} | {r['dice_centre_big']:.4f} / {r['dice_centre_edge']:.4f} | {r['dice_3slices_min']:.4f} | {r['load']} |")
    return 0


def measure_onnx(encoder, x4, measure, threads) -> None:
    """Export the encoder (TorchScript exporter, dynamic batch) and run it in ONNX Runtime."""
    import torch

    try:
        import onnxruntime as ort
    except ImportError:
        print("  onnxruntime not installed: ONNX variant skipped", flush=True)
        return
    with tempfile.TemporaryDirectory(prefix="bench-onnx-") as tmp:
        path = Path(tmp) / "encoder.onnx"
        t = time.perf_counter()
        try:
            torch.onnx.export(encoder, (x4[:1],), str(path), input_names=["x"], output_names=["emb"],
                              dynamic_axes={"x": {0: "b"}, "emb": {0: "b"}}, opset_version=17, dynamo=False)
        except Exception as exc:  # the exporter's failure is the finding
            print(f"  ONNX export failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}", flush=True)
            return
        print(f"  ONNX export {time.perf_counter() - t:.1f} s", flush=True)
        for threads in (threads,):
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

            def run_ort(x, sess=sess):
                return torch.from_numpy(sess.run(None, {"x": x.numpy()})[0])

            measure("onnxruntime", run_ort, threads=threads)


if __name__ == "__main__":
    sys.exit(main())
