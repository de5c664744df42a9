"""The training loop: peft LoRA on the image encoder's qkv (and, by default, on the decoder's
attention), trainable decoder heads, everything else frozen.

* AdamW (weight decay 1e-4), linear warm-up then cosine decay; bf16 autocast on CUDA.
* Deterministic: the windows, augmentations and prompts of step s come from
  numpy.random.default_rng([seed, s, rank]), so a resumed run draws what the unbroken run would.
* Resumable: `train_state.pt` in the output folder (trainable tensors, optimizer, step).
* Logged: `loss.csv` (one row per step) and a tqdm bar.
* Multi-GPU: under torchrun (WORLD_SIZE > 1) each process draws its own windows and the
  gradients are averaged with all_reduce; rank 0 writes.  One process is the default.
"""
import csv
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from ..atomic import atomic_write
from ..checkpoint import SlideSAMModel, load_model
from ..errors import InputError
from .dataset import Example, LabelledVolume, WindowSampler
from .losses import hybrid_loss

ENCODER_TARGETS = r".*image_encoder.*\.qkv"
DECODER_ATTENTION_TARGETS = r".*mask_decoder\.transformer\..*\.(q_proj|v_proj)"
HEAD_PREFIXES = (
    "mask_decoder.output_upscaling",  # the three per-slice branches
    "mask_decoder.output_hypernetworks_mlps",
    "mask_decoder.iou_prediction_head",
    "mask_decoder.iou_token",
    "mask_decoder.mask_tokens",
)
POINT_PREFIXES = ("prompt_encoder.point_embeddings", "prompt_encoder.not_a_point_embed")
DECODER_MODES = ("heads", "heads+lora", "full")
STATE_FILE = "train_state.pt"
LOSS_FILE = "loss.csv"
CSV_FIELDS = ["step", "loss", "focal", "dice", "iou_mse", "lr", "seconds"]


@dataclass
class TrainConfig:
    out: str
    base: Optional[str] = None  # None = the embedded LiteMedSAM default
    steps: int = 1000
    batch_size: int = 8
    lr: float = 2e-4
    weight_decay: float = 1e-4
    warmup: int = 50
    rank: int = 8
    alpha: int = 16
    decoder: str = "heads+lora"  # heads | heads+lora | full
    point_fraction: float = 0.5  # share of windows prompted by clicks only (0 = boxes only)
    seed: int = 0
    device: Optional[str] = None
    amp: bool = True
    augment: bool = True
    save_every: int = 200
    max_minutes: Optional[float] = None
    resume: bool = False
    progress: bool = True
    workers: int = 0  # data-loader processes drawing the windows (0 = in the training process)
    command: str = ""
    data: List[dict] = field(default_factory=list)


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def _as_is(batch):
    return batch


def _one_thread(_worker_id):
    torch.set_num_threads(1)  # many workers, one core each


class StepBatches(torch.utils.data.Dataset):
    """Item s = the batch of step s; deterministic whatever the number of loader workers."""

    def __init__(self, trainer: "Trainer", first: int):
        self.sampler, self.cfg, self.rank, self.first = trainer.sampler, trainer.cfg, trainer.rank, first

    def __len__(self) -> int:
        return max(0, self.cfg.steps - self.first)

    def __getitem__(self, i: int) -> List[Example]:
        rng = np.random.default_rng([self.cfg.seed, self.first + i, self.rank])
        return [self.sampler.example(rng, self.cfg.point_fraction, self.cfg.augment) for _ in range(self.cfg.batch_size)]


class Trainer:
    def __init__(self, volumes: Sequence[LabelledVolume], cfg: TrainConfig, model: Optional[SlideSAMModel] = None):
        from peft import LoraConfig, get_peft_model

        if cfg.decoder not in DECODER_MODES:
            raise InputError(f"--decoder {cfg.decoder}: use one of {', '.join(DECODER_MODES)}")
        if cfg.steps < 1 or cfg.batch_size < 1:
            raise InputError("--steps and --batch-size must be at least 1")
        self.cfg = cfg
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        device = cfg.device
        if self.world > 1:
            import torch.distributed as dist

            local = int(os.environ.get("LOCAL_RANK", "0"))
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
            if torch.cuda.is_available():
                torch.cuda.set_device(local)
                device = f"cuda:{local}"
        torch.manual_seed(cfg.seed)
        self.model = model if model is not None else load_model(cfg.base, device=device, encoder="torch")  # training changes the encoder
        if self.model.kind == "adapter":
            raise InputError("the base model is itself an adapter folder: train from its base checkpoint (or 'embedded')")
        self.device = self.model.device
        self.net = self.model.net
        self.spec = self.net.spec
        self.sampler = WindowSampler(volumes, self.spec)
        targets = ENCODER_TARGETS if cfg.decoder != "heads+lora" else f"({ENCODER_TARGETS}|{DECODER_ATTENTION_TARGETS})"
        self.lora_targets = targets
        self.peft = get_peft_model(self.net, LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, target_modules=targets, lora_dropout=0.0, bias="none"))
        prefixes = ("mask_decoder", "prompt_encoder") if cfg.decoder == "full" else HEAD_PREFIXES + (POINT_PREFIXES if cfg.point_fraction > 0 else ())
        self.head_names = []
        for name, p in self.net.named_parameters():
            if "lora_" in name:
                continue
            train = name.startswith(prefixes)
            p.requires_grad_(train)
            if train:
                self.head_names.append(name)
        self.params = [p for p in self.net.parameters() if p.requires_grad]
        # BatchNorm in the TinyViT encoder keeps its statistics: the whole net stays in eval mode.
        self.net.to(self.device).eval()
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.step = 0
        self.history: List[dict] = []  # loss rows of the steps run in this process, for loss.csv
        self.out = Path(cfg.out)

    # -- one batch ---------------------------------------------------------------
    def batch(self, step: int) -> List[Example]:
        return StepBatches(self, step)[0]

    def batches(self):
        """The batches of the remaining steps, drawn by `workers` processes ahead of the GPU."""
        data = StepBatches(self, self.step)
        if self.cfg.workers <= 0:
            return (data[i] for i in range(len(data)))
        return iter(torch.utils.data.DataLoader(data, batch_size=None, shuffle=False, num_workers=self.cfg.workers,
                                                collate_fn=_as_is, worker_init_fn=_one_thread, prefetch_factor=4, persistent_workers=False))

    def forward(self, examples: Sequence[Example]):
        """Low-res logits [B, T*3, 256, 256] and IoU [B, T] in the examples' order."""
        net, dev = self.net, self.device
        images = torch.stack([e.image for e in examples]).to(dev)
        emb = net.image_encoder(images)
        groups: Dict[tuple, List[int]] = {}
        for i, e in enumerate(examples):
            groups.setdefault((e.prompt.box is not None, len(e.prompt.points)), []).append(i)
        logits: List[Optional[torch.Tensor]] = [None] * len(examples)
        ious: List[Optional[torch.Tensor]] = [None] * len(examples)
        for (has_box, n_points), idx in groups.items():
            boxes = torch.tensor([examples[i].prompt.box for i in idx], dtype=torch.float32, device=dev) if has_box else None
            points = None
            if n_points:
                coords = torch.tensor([[p[:2] for p in examples[i].prompt.points] for i in idx], dtype=torch.float32, device=dev)
                labels = torch.tensor([[p[2] for p in examples[i].prompt.points] for i in idx], dtype=torch.int64, device=dev)
                points = (coords, labels)
            low, iou = net.decode(emb[idx], boxes=boxes, points=points, multimask=self.spec.multimask)
            for j, i in enumerate(idx):
                logits[i], ious[i] = low[j], iou[j]
        return torch.stack(logits), torch.stack(ious)

    def losses(self, examples: Sequence[Example]) -> Dict[str, torch.Tensor]:
        use_amp = self.cfg.amp and self.device.type == "cuda"
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=use_amp):
            logits, iou = self.forward(examples)
        target = torch.stack([e.target for e in examples]).to(self.device)
        indicator = torch.stack([e.indicator for e in examples]).to(self.device)
        return hybrid_loss(logits.float(), iou.float(), target, indicator)

    def train_step(self, examples: Sequence[Example]) -> Dict[str, float]:
        for g in self.optimizer.param_groups:
            g["lr"] = lr_at(self.step, self.cfg)
        terms = self.losses(examples)
        self.optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        if self.world > 1:
            self._average_gradients()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.step += 1
        row = {k: float(v.detach()) for k, v in terms.items()} | {"lr": self.optimizer.param_groups[0]["lr"]}
        self.history.append({"step": self.step, **{k: f"{row[k]:.6g}" for k in ("loss", "focal", "dice", "iou_mse", "lr")}})
        return row

    @torch.no_grad()
    def evaluate(self, examples: Sequence[Example]) -> float:
        return float(self.losses(examples)["loss"])

    # -- persistence ---------------------------------------------------------------
    def save_state(self) -> None:
        if self.rank:
            return
        trainable = {n: p.detach().cpu() for n, p in self.net.named_parameters() if p.requires_grad}
        state = {"step": self.step, "trainable": trainable, "optimizer": self.optimizer.state_dict(), "config": asdict(self.cfg)}
        atomic_write(self.out / STATE_FILE, lambda tmp: torch.save(state, tmp))

    def load_state(self) -> None:
        path = self.out / STATE_FILE
        if not path.is_file():
            raise InputError(f"--resume: no {STATE_FILE} in {self.out}: start without --resume")
        state = torch.load(path, map_location="cpu", weights_only=False)
        own = dict(self.net.named_parameters())
        if set(state["trainable"]) != {n for n, p in own.items() if p.requires_grad}:
            raise InputError(f"--resume: {path} was written with other options (LoRA rank / decoder mode): use the same options or a new --out")
        with torch.no_grad():
            for n, v in state["trainable"].items():
                own[n].copy_(v)
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])

    def manifest(self, final_loss: Optional[float], seconds: float) -> dict:
        from .. import __version__

        base = "embedded" if self.cfg.base in (None, "", "embedded") else str(Path(self.cfg.base).resolve())
        return {
            "base": base,
            "base_source": self.model.source,
            "arch": self.spec.name,
            "lora": {"rank": self.cfg.rank, "alpha": self.cfg.alpha, "targets": self.lora_targets},
            "trained_modules": sorted({".".join(n.split(".")[:2]) for n in self.head_names}),
            "decoder_mode": self.cfg.decoder,
            "point_trained": self.cfg.point_fraction > 0,
            "point_fraction": self.cfg.point_fraction,
            "training": {
                "command": self.cfg.command,
                "data": self.cfg.data,
                "windows": len(self.sampler),
                "structures": len(self.sampler.items),
                "steps": self.step,
                "batch_size": self.cfg.batch_size * self.world,
                "processes": self.world,
                "lr": self.cfg.lr,
                "seed": self.cfg.seed,
                "device": str(self.device),
                "final_loss": final_loss,
                "seconds": round(seconds, 1),
            },
            "slidesam_version": __version__,
        }

    def _average_gradients(self) -> None:
        """One all_reduce over every trainable parameter. A parameter unused by this rank's prompts (e.g. the
        point embeddings in a box-only batch) contributes zeros: every rank must join the same collective."""
        import torch.distributed as dist

        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for p in self.params:
            p.grad = flat[offset : offset + p.numel()].view_as(p).clone()
            offset += p.numel()

    def _check_ranks_agree(self) -> None:
        """Every process must end with the same weights (averaged gradients, same seed): checked before saving."""
        import torch.distributed as dist

        total = torch.stack([p.detach().double().sum() for p in self.params]).sum().reshape(1).to(self.device)
        seen = [torch.zeros_like(total) for _ in range(self.world)]
        dist.all_gather(seen, total)
        if any(not torch.equal(s, seen[0]) for s in seen):
            raise RuntimeError(f"the {self.world} training processes ended with different weights ({[float(s) for s in seen]}): report this as a bug")

    # -- the loop ------------------------------------------------------------------
    def run(self) -> Path:
        from tqdm import tqdm

        from ..adapter import save_adapter

        self.out.mkdir(parents=True, exist_ok=True)
        if self.cfg.resume:
            self.load_state()
        log_path = self.out / LOSS_FILE
        rows = []
        if self.cfg.resume and log_path.exists():
            with open(log_path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= self.step]
        rows += [r | {"seconds": ""} for r in self.history]  # steps run before run() was called
        if self.rank == 0:
            with open(log_path, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
                w.writeheader()
                w.writerows(rows)
        t0 = time.perf_counter()
        bar = tqdm(total=self.cfg.steps, initial=self.step, desc="training", disable=not self.cfg.progress or self.rank != 0, file=sys.stderr)
        recent: List[float] = []
        for examples in self.batches():
            if self.step >= self.cfg.steps:
                break
            terms = self.train_step(examples)
            recent = (recent + [terms["loss"]])[-50:]
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(recent):.4f}")
            if self.rank == 0:
                with open(log_path, "a", newline="") as f:
                    csv.DictWriter(f, fieldnames=CSV_FIELDS).writerow(self.history[-1] | {"seconds": f"{time.perf_counter() - t0:.2f}"})
            if self.step % self.cfg.save_every == 0:
                self.save_state()
            if self.cfg.max_minutes is not None and time.perf_counter() - t0 > 60 * self.cfg.max_minutes:
                print(f"time limit of {self.cfg.max_minutes} min reached at step {self.step}", file=sys.stderr)
                break
        bar.close()
        if self.world > 1:
            self._check_ranks_agree()
        self.save_state()
        if self.rank == 0:
            final = float(np.mean(recent)) if recent else None
            save_adapter(self.peft, self.net, self.head_names, self.out, self.manifest(final, time.perf_counter() - t0))
        if self.world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()
        return self.out
