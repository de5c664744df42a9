"""The folder written by `slidesam train`, and loading it on top of its base model.

Folder layout (every file written atomically; the manifest last, so a folder with a
manifest is complete):
  slidesam_adapter.json      manifest: base ("embedded" or a checkpoint path), architecture,
                             LoRA rank / alpha / target modules, trained modules, point_trained,
                             training data, command and figures
  adapter_config.json        peft's LoRA config (for peft tools; loading uses the manifest)
  adapter_model.safetensors  peft LoRA weights (image encoder qkv, and the decoder attention if trained)
  heads.safetensors          the trained decoder / prompt-encoder tensors, named as in the base network

Loading merges the LoRA into the weights (peft merge_and_unload): inference costs nothing extra.
"""
import json
from pathlib import Path
from typing import Dict, Iterable, Optional

import torch

from .atomic import atomic_write, atomic_write_text
from .errors import CheckpointError

ADAPTER_MANIFEST = "slidesam_adapter.json"

FORMAT = "slidesam-adapter"
FORMAT_VERSION = 1
LORA_WEIGHTS = "adapter_model.safetensors"
LORA_CONFIG = "adapter_config.json"
HEADS = "heads.safetensors"


def _jsonable(value):
    if isinstance(value, (set, frozenset, tuple)):
        return sorted(value) if isinstance(value, (set, frozenset)) else list(value)
    if hasattr(value, "value"):  # enums
        return value.value
    return value


def save_adapter(peft_model, base_net, trained_names: Iterable[str], folder, manifest: Dict) -> Path:
    """Write the adapter of a peft-wrapped three-slice net.

    peft_model: the `get_peft_model` wrapper; base_net: the wrapped SlideSAMNet (its non-LoRA
    parameter names are the base network's); trained_names: the non-LoRA parameters that trained.
    """
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lora = {k: v.detach().float().cpu().contiguous() for k, v in get_peft_model_state_dict(peft_model).items()}
    params = dict(base_net.named_parameters())
    heads = {name: params[name].detach().float().cpu().contiguous() for name in sorted(trained_names)}
    config = peft_model.peft_config["default"].to_dict()
    atomic_write(folder / LORA_WEIGHTS, lambda p: save_file(lora, str(p), metadata={"format": "pt"}))
    atomic_write(folder / HEADS, lambda p: save_file(heads, str(p), metadata={"format": "pt"}))
    atomic_write_text(folder / LORA_CONFIG, json.dumps({k: _jsonable(v) for k, v in config.items()}, indent=2, default=str))
    full = {"format": FORMAT, "format_version": FORMAT_VERSION, **manifest}
    atomic_write_text(folder / ADAPTER_MANIFEST, json.dumps(full, indent=2, default=str))
    return folder


def read_manifest(folder: Path) -> Dict:
    path = Path(folder) / ADAPTER_MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"adapter manifest {path} cannot be read ({type(exc).__name__}): train the adapter again") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a SlideSAM adapter manifest (format {manifest.get('format') if isinstance(manifest, dict) else None!r}): give a folder written by 'slidesam train'")
    if int(manifest.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(f"adapter {folder} has format version {manifest['format_version']}, this SlideSAM reads up to {FORMAT_VERSION}: update SlideSAM")
    for key in ("base", "arch", "lora"):
        if key not in manifest:
            raise CheckpointError(f"adapter manifest {path} lacks '{key}': train the adapter again")
    return manifest


def is_adapter_folder(path) -> bool:
    return (Path(path) / ADAPTER_MANIFEST).is_file()


def base_checkpoint(folder: Path, manifest: Dict) -> Optional[str]:
    """The checkpoint the adapter was trained on (None: the embedded default), as `load_model` takes it."""
    base = str(manifest["base"])
    if base == "embedded":
        return None
    p = Path(base)
    if not p.is_absolute() and (folder / p).exists():
        p = folder / p
    if (p / ADAPTER_MANIFEST).is_file() if p.is_dir() else False:
        raise CheckpointError(f"adapter {folder} names another adapter folder as its base ({base}): the base must be a model file or 'embedded'")
    if not p.exists():
        raise CheckpointError(f"adapter {folder} needs its base checkpoint {base}, which is not there: put it there or train again")
    return str(p)


def apply_adapter(folder: Path, manifest: Dict, net: torch.nn.Module) -> torch.nn.Module:
    """`net` (the base network, loaded from `base_checkpoint`) with the adapter's LoRA merged in and its trained
    heads loaded; frozen. Whether it learned point prompts is the manifest's `point_trained`."""
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if net.spec.name != manifest["arch"]:
        raise CheckpointError(f"adapter {folder} was trained on {manifest['arch']} but its base is {net.spec.name}: give the base it was trained on")
    lora = manifest["lora"]
    try:
        lora_sd = load_file(str(folder / LORA_WEIGHTS))
        heads = load_file(str(folder / HEADS))
    except (OSError, SafetensorError) as exc:
        raise CheckpointError(f"adapter {folder} has a missing or corrupt weight file ({exc}): train the adapter again") from None
    if int(lora.get("rank", 0)) > 0 and lora_sd:
        config = LoraConfig(r=int(lora["rank"]), lora_alpha=float(lora["alpha"]), target_modules=lora["targets"], lora_dropout=0.0, bias="none")
        wrapped = get_peft_model(net, config)
        result = set_peft_model_state_dict(wrapped, lora_sd)
        missing_lora = [k for k in result.missing_keys if "lora_" in k]
        if result.unexpected_keys or missing_lora:
            raise CheckpointError(
                f"adapter {folder} LoRA weights do not fit the base ({len(result.unexpected_keys)} unexpected, {len(missing_lora)} missing): train the adapter again"
            )
        net = wrapped.merge_and_unload()
    own = dict(net.named_parameters())
    unknown = [k for k in heads if k not in own or own[k].shape != heads[k].shape]
    if unknown:
        raise CheckpointError(f"adapter {folder} holds {len(unknown)} head tensors that do not fit the base (e.g. {unknown[0]}): train the adapter again")
    with torch.no_grad():
        for name, value in heads.items():
            own[name].copy_(value)
    for p in net.parameters():
        p.requires_grad_(False)
    return net
