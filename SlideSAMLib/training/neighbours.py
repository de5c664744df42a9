"""Training the neighbour heads: the two outer upscaling branches learn slices k-1 and k+1.

The Slide-SAM init recipe leaves the three upscaling branches as copies, so an untuned model
predicts the same mask for k-1, k and k+1.  Here everything is frozen except
`output_upscaling` (slice k-1) and `output_upscaling3` (slice k+1): the image encoder (its
embeddings come from an `EmbeddingStore`, computed once), the prompt encoder, the two-way
transformer, the hypernetworks, the IoU head and the centre branch `output_upscaling2`.  The
prompted slice therefore keeps the untuned model's box skill exactly.

Prompts: boxes only (the default is box-prompted), the centre slice's tight box jittered and
grown by 0-6 model pixels (the propagation prompts with the neighbour mask's box grown by 5).
Loss: per example, soft Dice (sigmoid probabilities) + focal_weight x focal on the two outer slices; an empty
neighbour target (past a structure's end) asks for an empty mask.  The default is Dice-dominant (focal weight 1,
alpha 0.5): Slide-SAM's 20 x focal with alpha 0.2 (foreground pixels weighted 0.2, background 0.8) taught the
outer branches to shrink — session 5's adapter made the MR spine's neighbour masks 0.42x their true area (median)
and its propagation there fell 0.395 -> 0.137 (benchmarks/TRAINING.md, session 6).

Anchor (`anchor_weight` W, 0 = off): W x the per-pixel Bernoulli KL divergence from the frozen centre branch's
probabilities to each outer branch's, on the same cached crop and hypernetwork vector. The centre branch *is* the
untuned copy the outer ones start from, so the term and its gradient are exactly 0 at init; it keeps the heads near
what the untuned model predicts where the labels do not pull them (session 6's heads drifted where the held-out MR
spine did not follow). Session 10 ran W = 2 once (benchmarks/TRAINING.md).
"""
import csv
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from ..errors import InputError
from .dataset import MIN_AREA, _slices_with, labels_to_model
from .embeddings import EmbeddingStore
from .losses import FOCAL_ALPHA, dice_per_slice, focal_per_slice
from .prompts import jittered_box
from .trainer import lr_at  # warm-up then cosine, read from cfg.lr / warmup / steps

NEIGHBOUR_BRANCHES = ("mask_decoder.output_upscaling.", "mask_decoder.output_upscaling3.")  # slices k-1, k+1
CENTRE_BRANCH = "mask_decoder.output_upscaling2."
BOX_GROWTH_MODEL_PX = 6.0
LOSS_FILE = "loss.csv"
CROP_MARGIN = 8  # cells of the 64x64 embedding grid (32 model pixels at 256) around the prompt box: a neighbour
# slice's outline moves a few pixels from the centre's (the propagation allows 2 model px per slice)


def crop_cells(box, grid: int, img_size: int, margin: int = CROP_MARGIN):
    """(y0, y1, x0, x1) on the embedding grid covering the box (x0, y0, x1, y1, model-input pixels of an
    img_size input) grown by `margin` cells."""
    scale = grid / img_size
    x0, y0, x1, y1 = (float(v) * scale for v in box)
    return (max(0, int(y0) - margin), min(grid, int(y1) + 1 + margin), max(0, int(x0) - margin), min(grid, int(x1) + 1 + margin))


@dataclass
class NeighbourConfig:
    out: str
    steps: int = 1000
    batch_size: int = 8
    lr: float = 5e-4
    weight_decay: float = 1e-4
    warmup: int = 20
    seed: int = 0
    max_minutes: Optional[float] = None
    val_windows: int = 32
    focal_weight: float = 1.0  # beside the Dice term (see the module docstring)
    focal_alpha: float = 0.5  # weight of foreground pixels in the focal term (background: 1 - alpha)
    anchor_weight: float = 0.0  # W of the anchor term (see the module docstring); 0: Dice + focal only
    val_every: int = 0  # steps between held-out validations (0: before and after only)
    pool: int = 320  # training examples whose frozen decoder features are computed once (see NeighbourTrainer.build_pool)
    max_windows: Optional[int] = None  # per volume (see NeighbourSampler)
    progress: bool = True
    command: str = ""
    data: List[dict] = field(default_factory=list)
    val_data: List[dict] = field(default_factory=list)


def anchor_term(logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Per-example mean over pixels of KL(Bernoulli(sigmoid(teacher)) || Bernoulli(sigmoid(logits))) [B]: logits
    [B, S, H, W], teacher [B, H, W] or [B, S, H, W]; 0 where the two agree, gradient 0 there too."""
    if teacher_logits.dim() == logits.dim() - 1:
        teacher_logits = teacher_logits[:, None].expand_as(logits)
    t = torch.sigmoid(teacher_logits.float())
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), t, reduction="none")
    entropy = torch.nn.functional.binary_cross_entropy_with_logits(teacher_logits.float(), t, reduction="none")
    return (bce - entropy).flatten(1).mean(dim=1)


def neighbour_terms(logits: torch.Tensor, target: torch.Tensor, alpha: float) -> Dict[str, torch.Tensor]:
    """Per-example focal and soft-Dice terms [B] of the two outer slices: logits / target [B, 2, H, W] (k-1, k+1),
    Dice per slice on sigmoid probabilities, each term the mean of the two slices."""
    target = target.float()
    return {"focal": focal_per_slice(logits.float(), target, alpha=alpha).mean(dim=1), "dice": dice_per_slice(logits.float(), target).mean(dim=1)}


def _branch_logits(branch, src: torch.Tensor, hyper: torch.Tensor) -> torch.Tensor:
    """One upscaling branch's mask logits [B, H, W]: the hypernetwork vector [B, C] . the upscaled features."""
    return torch.einsum("bc,bchw->bhw", hyper, branch(src))


class NeighbourSampler:
    """(volume, structure, centre slice) drawn uniformly over structures, then over the slices showing it."""

    def __init__(self, volumes: Sequence, store: EmbeddingStore, max_windows: Optional[int] = None, min_area: int = MIN_AREA):
        """max_windows: per volume, at most this many centre slices, evenly spaced over those showing a structure
        (each costs one encoder pass; neighbouring windows are nearly the same image)."""
        self.volumes, self.store = list(volumes), store
        self.items = []
        for i, v in enumerate(self.volumes):
            per_structure = {s: ks for s in v.structures if (ks := _slices_with(v.labels, s, min_area))}
            keep = sorted({k for ks in per_structure.values() for k in ks})
            if max_windows and len(keep) > max_windows:
                keep = [keep[j] for j in sorted({int(round(x)) for x in np.linspace(0, len(keep) - 1, max_windows)})]
            self.items += [(i, s, kept) for s, ks in per_structure.items() if (kept := [k for k in ks if k in set(keep)])]
        if not self.items:
            raise InputError("no training window: no structure covers a slice (at least 10 voxels)")

    def windows(self) -> Dict[int, List[int]]:
        """Volume index -> the centre slices any of its structures is trained on (what must be embedded)."""
        out: Dict[int, set] = {}
        for i, _, ks in self.items:
            out.setdefault(i, set()).update(ks)
        return {i: sorted(ks) for i, ks in out.items()}

    def embed(self, log=None) -> int:
        return sum(self.store.ensure(self.volumes[i], ks, log) for i, ks in self.windows().items())

    def n_windows(self) -> int:
        return sum(len(ks) for ks in self.windows().values())

    def example(self, rng: np.random.Generator):
        """(embedding [256, 64, 64], low-res target [3, 256, 256], box (x0, y0, x1, y1) model frame)."""
        i, s, ks = self.items[int(rng.integers(len(self.items)))]
        k = ks[int(rng.integers(len(ks)))]
        v = self.volumes[i]
        p = self.store.predictor(v)
        idx = np.clip([k - 1, k, k + 1], 0, v.labels.shape[0] - 1)
        full, low = labels_to_model(v.labels[idx] == s, p.geometry)
        centre = full[1].numpy() > 0.5
        if not centre.any():  # a structure of >= 10 voxels that resizing made vanish: its box from the slice pixels
            ys, xs = np.nonzero(v.labels[k] == s)
            centre = np.zeros_like(centre)
            xy = np.round(p.geometry.to_model(np.stack([xs, ys], 1))).astype(int).clip(0, centre.shape[0] - 1)
            centre[xy[:, 1], xy[:, 0]] = True
        box = jittered_box(centre, rng, margin=BOX_GROWTH_MODEL_PX)
        return self.store.load(v, k), low, box


class NeighbourTrainer:
    def __init__(self, model, volumes: Sequence, cfg: NeighbourConfig, val_volumes: Sequence = (), store: Optional[EmbeddingStore] = None):
        if cfg.steps < 1 or cfg.batch_size < 1:
            raise InputError("--steps and --batch-size must be at least 1")
        if not cfg.anchor_weight >= 0:
            raise InputError(f"--anchor-weight {cfg.anchor_weight}: give 0 (off) or a positive weight")
        if model.kind == "adapter":
            raise InputError("the base model is itself an adapter folder: train from its base checkpoint (or 'embedded')")
        self.model, self.cfg = model, cfg
        self.net = model.net
        self.store = store or EmbeddingStore(model)
        self.sampler = NeighbourSampler(volumes, self.store, cfg.max_windows)
        self.val_sampler = NeighbourSampler(val_volumes, self.store, cfg.max_windows) if val_volumes else None
        self.head_names = []
        for name, p in self.net.named_parameters():
            train = name.startswith(NEIGHBOUR_BRANCHES)
            p.requires_grad_(train)
            if train:
                self.head_names.append(name)
        self.params = [p for p in self.net.parameters() if p.requires_grad]
        self.net.eval()  # nothing trained here has dropout or batch statistics
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.step = 0

    def batch(self, rng: np.random.Generator, n: int, sampler: Optional[NeighbourSampler] = None):
        ex = [(sampler or self.sampler).example(rng) for _ in range(n)]
        return torch.stack([e[0] for e in ex]), torch.stack([e[1] for e in ex]), torch.tensor([e[2] for e in ex], dtype=torch.float32)

    def forward(self, emb: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Low-res logits [B, 3, 256, 256] (k-1, k, k+1) of the candidate the engine would choose."""
        net = self.net
        dev = self.model.device
        low, iou = net.decode(emb.to(dev), boxes=boxes.to(dev))
        tokens = low.shape[1] // 3
        best = iou.argmax(dim=1) if tokens > 1 else torch.zeros(low.shape[0], dtype=torch.long, device=low.device)
        return low.reshape(low.shape[0], tokens, 3, *low.shape[-2:])[torch.arange(low.shape[0]), best]

    def losses(self, emb, target, boxes) -> Dict[str, torch.Tensor]:
        logits = self.forward(emb, boxes)
        terms = neighbour_terms(logits[:, [0, 2]], target.to(logits.device)[:, [0, 2]], self.cfg.focal_alpha)
        with torch.no_grad():
            pred = logits > 0
            t = target.to(logits.device) > 0.5
            inter = (pred & t).sum(dim=(-2, -1)).float()
            sums = (pred.sum(dim=(-2, -1)) + t.sum(dim=(-2, -1))).float()
            dice = torch.where(sums > 0, 2 * inter / sums.clamp(min=1), torch.ones_like(sums))  # [B, 3]
        return {"loss": (self.cfg.focal_weight * terms["focal"] + terms["dice"]).mean(), "focal": terms["focal"].mean().detach(),
                "dice_loss": terms["dice"].mean().detach(), "neighbour_dice": dice[:, [0, 2]].mean().detach(), "centre_dice": dice[:, 1].mean().detach()}

    @torch.no_grad()
    def validate(self, sampler: Optional[NeighbourSampler] = None, seed: int = 12345) -> Dict[str, float]:
        """Mean terms over a fixed set of windows (the same ones at every call)."""
        rng = np.random.default_rng(seed)
        rows = []
        for start in range(0, self.cfg.val_windows, self.cfg.batch_size):
            n = min(self.cfg.batch_size, self.cfg.val_windows - start)
            rows.append({k: float(v) for k, v in self.losses(*self.batch(rng, n, sampler)).items()})
        return {k: round(float(np.mean([r[k] for r in rows])), 4) for k in rows[0]}

    @torch.no_grad()
    def frozen_features(self, emb: torch.Tensor, boxes: torch.Tensor):
        """What the trained branches see, from the net's own forward: the transformer's image output `src`
        [B, 256, 64, 64] (the input of the upscaling branches) and the chosen token's hypernetwork output [B, 32]."""
        dec = self.net.mask_decoder
        seen: Dict[object, torch.Tensor] = {}

        def keep(key, value) -> None:  # a forward hook that returns None leaves the module's output as it is
            seen.setdefault(key, value)

        hooks = [dec.output_upscaling.register_forward_hook(lambda m, i, o: keep("src", i[0]))]
        hooks += [mlp.register_forward_hook(lambda m, i, o, t=t: keep(t, o)) for t, mlp in enumerate(dec.output_hypernetworks_mlps)]
        try:
            _, iou = self.net.decode(emb, boxes=boxes)
        finally:
            for h in hooks:
                h.remove()
        hyper = torch.stack([seen[t] for t in range(len(dec.output_hypernetworks_mlps))], dim=1)  # [B, 4, 32]
        token = 1 + iou.argmax(dim=1) if self.net.spec.multimask else torch.zeros(len(iou), dtype=torch.long)
        return seen["src"], hyper[torch.arange(len(iou)), token]

    def outer_logits(self, src: torch.Tensor, hyper: torch.Tensor) -> torch.Tensor:
        """Low-res logits [B, 2, 256, 256] of slices k-1 and k+1: the decoder's mask = hypernetwork . upscaled branch
        (ThreeSliceMaskDecoder.predict_masks), for the two trained branches only."""
        dec = self.net.mask_decoder
        return torch.stack([_branch_logits(branch, src, hyper) for branch in (dec.output_upscaling, dec.output_upscaling3)], dim=1)

    @torch.no_grad()
    def centre_logits(self, src: torch.Tensor, hyper: torch.Tensor) -> torch.Tensor:
        """Low-res logits [B, 256, 256] of the frozen centre branch: the untuned copy the outer branches start from."""
        return _branch_logits(self.net.mask_decoder.output_upscaling2, src, hyper)

    def build_pool(self, log=None) -> None:
        """Draw `pool` training examples once and keep, for each, its frozen features cropped to the prompt box
        grown by CROP_MARGIN cells of the 64x64 grid (float16), the hypernetwork vector and the neighbour targets.
        Exact, not an approximation of the branches: an upscaling branch is two 2x2 stride-2 transposed convolutions,
        a channel LayerNorm and GELUs, so each output pixel depends on its own embedding cell only. The steps then
        run the two trained branches on these crops. Deterministic (seed)."""
        rng = np.random.default_rng([self.cfg.seed, 10**6])
        self.pool = []
        for start in range(0, self.cfg.pool, self.cfg.batch_size):
            emb, target, boxes = self.batch(rng, min(self.cfg.batch_size, self.cfg.pool - start))
            src, hyper = self.frozen_features(emb, boxes)
            for j in range(len(emb)):
                y0, y1, x0, x1 = crop_cells(boxes[j], src.shape[-1], self.net.spec.img_size)
                f = target.shape[-1] // src.shape[-1]
                self.pool.append((src[j, :, y0:y1, x0:x1].half(), hyper[j], target[j, [0, 2], y0 * f : y1 * f, x0 * f : x1 * f] > 0.5))
            if log and (start // self.cfg.batch_size) % 10 == 0:
                log(f"frozen features {start + len(emb)}/{self.cfg.pool}")

    def train_step(self, rng: np.random.Generator) -> Dict[str, float]:
        for g in self.optimizer.param_groups:
            g["lr"] = lr_at(self.step, self.cfg)
        picks = rng.choice(len(self.pool), min(self.cfg.batch_size, len(self.pool)), replace=False)
        focal, dice, anchor = [], [], []
        for i in picks:  # crops differ in size: one example at a time
            src, hyper, target = self.pool[int(i)]
            src = src[None].float()
            logits = self.outer_logits(src, hyper[None])
            terms = neighbour_terms(logits, target[None], self.cfg.focal_alpha)
            focal.append(terms["focal"])
            dice.append(terms["dice"])
            if self.cfg.anchor_weight:
                anchor.append(anchor_term(logits, self.centre_logits(src, hyper[None])))
        focal, dice = torch.cat(focal), torch.cat(dice)
        anchor = torch.cat(anchor) if anchor else torch.zeros_like(dice)
        loss = (self.cfg.focal_weight * focal + dice).mean() + self.cfg.anchor_weight * anchor.mean()  # + exactly 0 when off
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.step += 1
        return {"loss": float(loss.detach()), "focal": float(focal.detach().mean()), "dice_loss": float(dice.detach().mean()),
                "anchor": float(anchor.detach().mean()), "lr": self.optimizer.param_groups[0]["lr"]}

    def run(self, log=print) -> Dict[str, object]:
        """Train; returns the figures (validation before / after, seconds). Writes loss.csv as it goes."""
        from tqdm import tqdm

        out = Path(self.cfg.out)
        out.mkdir(parents=True, exist_ok=True)
        figures: Dict[str, object] = {"train_before": self.validate()}
        if self.val_sampler:
            figures["val_before"] = self.validate(self.val_sampler)
        log(f"before training: {figures}")
        t0, cpu0 = time.perf_counter(), time.process_time()
        self.build_pool(log)
        figures["pool_seconds"] = round(time.perf_counter() - t0, 1)
        fields = ["step", "loss", "focal", "dice_loss", "anchor", "lr", "seconds"]
        with open(out / LOSS_FILE, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            bar = tqdm(total=self.cfg.steps, desc="neighbour heads", disable=not self.cfg.progress)
            recent: List[float] = []
            while self.step < self.cfg.steps:
                row = self.train_step(np.random.default_rng([self.cfg.seed, self.step]))
                recent = (recent + [row["loss"]])[-50:]
                w.writerow({"step": self.step, **{k: f"{row[k]:.5g}" for k in fields[1:-1]}, "seconds": f"{time.perf_counter() - t0:.1f}"})
                f.flush()
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(recent):.4f}")
                if self.val_sampler and self.cfg.val_every and self.step % self.cfg.val_every == 0 and self.step < self.cfg.steps:
                    figures.setdefault("val_curve", {})[self.step] = v = self.validate(self.val_sampler)
                    log(f"step {self.step}: held out {v}")
                if self.cfg.max_minutes is not None and time.perf_counter() - t0 > 60 * self.cfg.max_minutes:
                    log(f"time limit of {self.cfg.max_minutes} min reached at step {self.step}")
                    break
            bar.close()
        figures["train_seconds"] = round(time.perf_counter() - t0, 1)
        figures["train_cpu_seconds"] = round(time.process_time() - cpu0, 1)
        figures["steps"] = self.step
        figures["train_after"] = self.validate()
        if self.val_sampler:
            figures["val_after"] = self.validate(self.val_sampler)
        log(f"after training: {figures}")
        return figures


def save_neighbour_adapter(trainer: NeighbourTrainer, figures: Dict[str, object], seconds: Dict[str, float]) -> Path:
    """An adapter folder holding only the two trained branches (heads.safetensors, ~0.6 MB) and its manifest.
    The LoRA file is written empty (rank 0): the encoder is the base model's, so its ONNX export is reused."""
    import json

    from safetensors.torch import save_file

    from .. import __version__
    from ..adapter import FORMAT, FORMAT_VERSION, HEADS, LORA_WEIGHTS
    from ..atomic import atomic_write as _atomic_write
    from ..checkpoint import ADAPTER_MANIFEST

    cfg, folder = trainer.cfg, Path(trainer.cfg.out)
    params = dict(trainer.net.named_parameters())
    heads = {n: params[n].detach().float().cpu().contiguous() for n in sorted(trainer.head_names)}
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "base": "embedded" if trainer.model.kind == "embedded" else trainer.model.source,
        "base_source": trainer.model.source, "arch": trainer.net.spec.name, "lora": {"rank": 0, "alpha": 0, "targets": ""},
        "trained_modules": sorted({n.split(".")[0] + "." + n.split(".")[1] for n in trainer.head_names}),
        "decoder_mode": "neighbours", "point_trained": False, "trained_neighbours": True,
        "training": {"command": cfg.command, "data": cfg.data, "validation_data": cfg.val_data, "structures": len(trainer.sampler.items),
                     "windows": trainer.sampler.n_windows(), "steps": trainer.step, "batch_size": cfg.batch_size, "lr": cfg.lr,
                     "focal_weight": cfg.focal_weight, "focal_alpha": cfg.focal_alpha, "anchor_weight": cfg.anchor_weight,
                     "seed": cfg.seed, "device": str(trainer.model.device), "seconds": seconds, "figures": figures},
        "slidesam_version": __version__,
    }
    folder.mkdir(parents=True, exist_ok=True)
    _atomic_write(folder / LORA_WEIGHTS, lambda p: save_file({}, p, metadata={"format": "pt"}))
    _atomic_write(folder / HEADS, lambda p: save_file(heads, p, metadata={"format": "pt"}))
    _atomic_write(folder / ADAPTER_MANIFEST, lambda p: Path(p).write_text(json.dumps(manifest, indent=2, default=str)))
    return folder
