"""`slidesam train`: fine-tune a three-slice model on labelled volumes; writes an adapter folder."""
import shlex
from pathlib import Path

from ..errors import InputError


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="fine-tune a model on labelled volumes (LoRA adapter)",
        description=(
            "LoRA fine-tuning of a three-slice SAM with the hybrid 3D/2D loss. Writes an adapter folder that "
            "--checkpoint accepts everywhere. Multi-GPU: torchrun --nproc_per_node N -m SlideSAMLib.cli train ..."
        ),
    )
    p.add_argument("--pair", nargs="+", action="append", default=[], metavar="FILE",
                   help="IMAGE LABEL [NAMES.json]: a volume and its 3D label map on the same grid (repeatable)")
    p.add_argument("--pair2d", nargs="+", action="append", default=[], metavar="FILE",
                   help="IMAGE LABEL [NAMES.json]: a label volume whose labelled slices are single-slice 2D annotations (repeatable)")
    p.add_argument("--structures", help="comma-separated structure names or label numbers to train on (default: every label)")
    p.add_argument("--base", default=None, help="base checkpoint (SAM / Slide-SAM / LiteMedSAM .pth; default: the embedded model)")
    p.add_argument("-o", "--out", required=True, help="output adapter folder (also holds loss.csv and train_state.pt)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--rank", type=int, default=8, help="LoRA rank")
    p.add_argument("--alpha", type=int, default=16, help="LoRA alpha")
    p.add_argument("--decoder", choices=["heads", "heads+lora", "full", "neighbours"], default="heads+lora",
                   help="decoder parts that train: heads (upscaling branches, hypernetworks, IoU head, tokens), "
                        "heads+lora (also LoRA on the decoder attention; default), full (whole decoder and prompt encoder), "
                        "neighbours (only the k-1 / k+1 upscaling branches, encoder frozen with cached embeddings, boxes only: "
                        "the prompted slice keeps the base model's masks exactly)")
    p.add_argument("--val-pair", nargs="+", action="append", default=[], metavar="FILE",
                   help="neighbours: IMAGE LABEL [NAMES.json] held out of training, only to report the neighbour loss on (repeatable)")
    p.add_argument("--max-windows", type=int, default=None, help="neighbours: at most this many centre slices per volume (evenly spaced; each is one encoder pass)")
    p.add_argument("--pool", type=int, default=320, help="neighbours: training examples (window, structure, jittered box) drawn once; steps draw batches from them")
    p.add_argument("--focal-weight", type=float, default=None, help="neighbours: weight of the focal term beside the Dice term (default: see neighbours.py)")
    p.add_argument("--focal-alpha", type=float, default=None, help="neighbours: the focal term's weight of foreground pixels (background: 1 - alpha)")
    p.add_argument("--anchor-weight", type=float, default=None, help="neighbours: weight of the term that keeps the k-1 / k+1 branches "
                   "near the untuned (centre) branch's output, 0 = off (default; see neighbours.py)")
    p.add_argument("--val-every", type=int, default=0, help="neighbours: steps between held-out (--val-pair) validations, recorded in the manifest")
    p.add_argument("--embed-only", action="store_true", help="neighbours: compute the cached embeddings of the training windows, then stop")
    p.add_argument("--point-fraction", type=float, default=0.5, help="share of windows prompted by clicks only (0 = boxes only)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N, mps (default: best available)")
    p.add_argument("--no-amp", action="store_true", help="no bf16 autocast on CUDA")
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--save-every", type=int, default=200, help="steps between resumable checkpoints")
    p.add_argument("--max-minutes", type=float, default=None, help="stop (and save) after this many minutes")
    p.add_argument("--resume", action="store_true", help="continue from OUT/train_state.pt")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _pairs(items, option):
    for item in items:
        if len(item) not in (2, 3):
            raise InputError(f"{option} takes IMAGE LABEL [NAMES.json], got {len(item)} values: {' '.join(item)}")
        yield item[0], item[1], item[2] if len(item) == 3 else None


def load_volumes(args, options=(("--pair", False), ("--pair2d", True))):
    """Every pair read and checked, and the structures resolved, before the model is even loaded."""
    from ..structures import parse_structures
    from .dataset import load_pair, select_structures

    if not any(getattr(args, o[2:].replace("-", "_")) for o, _ in options):
        raise InputError(f"no training data: give {options[0][0]} IMAGE LABEL [NAMES.json] (repeatable)")
    volumes, data = [], []
    for option, sparse in options:
        for image, label, names in _pairs(getattr(args, option[2:].replace("-", "_")), option):
            volumes.append(load_pair(image, label, names, sparse=sparse))
            data.append({"image": str(image), "label": str(label), "names": names, "kind": "2d" if sparse else "3d"})
    wanted = parse_structures(args.structures)
    select_structures(volumes, wanted)
    return volumes, data


def command_line(args) -> str:
    """The invocation, rebuilt from the parsed options (recorded in the adapter's manifest)."""
    parts = ["slidesam", "train"]
    for option in ("pair", "pair2d", "val_pair"):
        for item in getattr(args, option):
            parts += [f"--{option.replace('_', '-')}", *item]
    defaults = {"structures": None, "base": None, "device": None, "max_minutes": None, "max_windows": None, "focal_weight": None, "focal_alpha": None, "anchor_weight": None}
    for name in ("structures", "base", "max_windows", "pool", "focal_weight", "focal_alpha", "anchor_weight", "val_every", "steps", "batch_size", "lr", "rank", "alpha", "decoder", "point_fraction", "seed", "device", "max_minutes", "save_every"):
        value = getattr(args, name)
        if args.decoder == "neighbours" and name in ("rank", "alpha", "point_fraction", "save_every"):
            continue  # not used by the neighbour heads (no LoRA, boxes only, one save at the end)
        if args.decoder != "neighbours" and name in ("max_windows", "pool", "focal_weight", "focal_alpha", "anchor_weight", "val_every"):
            continue
        if value is not None or name not in defaults:
            parts += [f"--{name.replace('_', '-')}", str(value)]
    for flag in ("no_amp", "no_augment", "resume", "embed_only"):
        if getattr(args, flag):
            parts.append(f"--{flag.replace('_', '-')}")
    parts += ["-o", str(args.out)]
    return " ".join(shlex.quote(p) for p in parts)


def run(args) -> int:
    if args.decoder == "neighbours":
        from .neighbours_cli import run_neighbours

        return run_neighbours(args)
    if args.val_pair or args.embed_only:
        raise InputError("--val-pair and --embed-only go with --decoder neighbours")
    from .trainer import TrainConfig, Trainer

    if not 0.0 <= args.point_fraction <= 1.0:
        raise InputError(f"--point-fraction {args.point_fraction}: give a value between 0 and 1")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file: give a folder")
    if out.is_dir() and (out / "train_state.pt").exists() and not args.resume:
        raise InputError(f"{out} already holds a training run: add --resume to continue it, or give a new --out")
    volumes, data = load_volumes(args)
    cfg = TrainConfig(
        out=str(out), base=args.base, steps=args.steps, batch_size=args.batch_size, lr=args.lr, rank=args.rank, alpha=args.alpha,
        decoder=args.decoder, point_fraction=args.point_fraction, seed=args.seed, device=args.device, amp=not args.no_amp,
        augment=not args.no_augment, save_every=args.save_every, max_minutes=args.max_minutes, resume=args.resume,
        progress=not args.quiet, command=command_line(args), data=data,
    )
    trainer = Trainer(volumes, cfg)
    folder = trainer.run()
    print(f"wrote adapter {folder} after {trainer.step} steps ({len(trainer.sampler.items)} structures, {len(trainer.sampler)} windows); "
          f"use it with --checkpoint {folder}")
    return 0
