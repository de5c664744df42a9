"""LoRA in the two forms this project meets.

* The official Slide-SAM checkpoints carry hand-written LoRA on each block's fused qkv:
  q and v get B(A x) added, scale 1, no bias, possibly nested (a fine-tuned rank-1 LoRA
  inside the original).  `merge_official_qkv_lora` folds it into plain qkv weights, which
  is exactly the same function and costs nothing at inference.
* The project's own training uses peft LoRA on the encoder's qkv linears (configured in training/trainer.py).
"""
import re
from typing import Dict

import torch

_LORA_A_Q = re.compile(r"^(?P<base>.*\.attn\.qkv)\.linear_a_q\.weight$")


def _merged(sd: Dict[str, torch.Tensor], prefix: str, used: set):
    """(weight, bias) of the qkv linear at `prefix`, with every nested LoRA level folded in."""
    a_q = f"{prefix}.linear_a_q.weight"
    if a_q not in sd:
        used.update({f"{prefix}.weight", f"{prefix}.bias"})
        return sd[f"{prefix}.weight"].clone(), sd[f"{prefix}.bias"].clone()
    weight, bias = _merged(sd, f"{prefix}.qkv", used)
    dim = weight.shape[1]
    names = {p: f"{prefix}.linear_{p}.weight" for p in ("a_q", "b_q", "a_v", "b_v")}
    used.update(names.values())
    weight[:dim] += sd[names["b_q"]].float() @ sd[names["a_q"]].float()
    weight[2 * dim :] += sd[names["b_v"]].float() @ sd[names["a_v"]].float()
    return weight, bias


def merge_official_qkv_lora(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """A state dict whose LoRA-wrapped qkv layers are replaced by merged plain `qkv` layers."""
    # The regex needs ".attn.qkv" right before ".linear_a_q", so nested inner levels are not bases.
    bases = sorted({m.group("base") for k in sd if (m := _LORA_A_Q.match(k))})
    out, used = {}, set()
    for base in bases:
        out[f"{base}.weight"], out[f"{base}.bias"] = _merged(sd, base, used)
    for key, value in sd.items():
        if key not in used and not any(key.startswith(b + ".") for b in bases):
            out[key] = value
    return out


def lora_rank(sd: Dict[str, torch.Tensor]) -> int:
    """Rank of the outermost official LoRA (rows of linear_a_q), 0 when there is none."""
    for key, value in sd.items():
        m = _LORA_A_Q.match(key)
        if m:
            return int(value.shape[0])
    return 0
