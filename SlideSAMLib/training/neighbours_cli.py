"""`slidesam train --decoder neighbours`: cache the training windows' embeddings, then train the k-1 / k+1 branches."""
import sys
import time
from pathlib import Path

from ..errors import InputError


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_neighbours(args) -> int:
    from ..checkpoint import ADAPTER_MANIFEST, load_model
    from .cli import command_line, load_volumes
    from .embeddings import EmbeddingStore
    from .neighbours import NeighbourConfig, NeighbourTrainer, save_neighbour_adapter

    if args.pair2d:
        raise InputError("--pair2d with --decoder neighbours: a 2D annotation says nothing about the neighbour slices; give 3D labels with --pair")
    if args.resume:
        raise InputError("--resume is not supported with --decoder neighbours (a run is minutes long once the embeddings are cached): start again")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file: give a folder")
    if (out / ADAPTER_MANIFEST).exists() and not args.embed_only:
        raise InputError(f"{out} already holds an adapter: give a new --out")
    volumes, data = load_volumes(args, (("--pair", False),))
    val_volumes, val_data = load_volumes(args, (("--val-pair", False),)) if args.val_pair else ([], [])
    model = load_model(args.base, device=args.device)  # the engine's encoder backend (ONNX Runtime on CPU when installed)
    loss = {k: v for k in ("focal_weight", "focal_alpha", "anchor_weight") if (v := getattr(args, k)) is not None}
    cfg = NeighbourConfig(**loss, val_every=args.val_every, out=str(out), steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                          max_minutes=args.max_minutes, max_windows=args.max_windows, pool=args.pool, progress=not args.quiet, command=command_line(args), data=data, val_data=val_data)
    trainer = NeighbourTrainer(model, volumes, cfg, val_volumes, EmbeddingStore(model))
    wall0, cpu0 = time.perf_counter(), time.process_time()
    n = trainer.sampler.embed(_log) + (trainer.val_sampler.embed(_log) if trainer.val_sampler else 0)
    seconds = {"embedding_wall": round(time.perf_counter() - wall0, 1), "embedding_cpu": round(time.process_time() - cpu0, 1), "embedded_now": n,
               "encoder": model.encoder_backend}
    _log(f"embeddings: {n} windows encoded now, {trainer.sampler.n_windows()} training windows in {trainer.store.root} ({seconds})")
    if args.embed_only:
        return 0
    figures = trainer.run(_log)
    seconds["training_wall"], seconds["training_cpu"] = figures.pop("train_seconds"), figures.pop("train_cpu_seconds")
    folder = save_neighbour_adapter(trainer, figures, seconds)
    print(f"wrote adapter {folder} after {trainer.step} steps ({len(trainer.sampler.items)} structures, {trainer.sampler.n_windows()} windows); "
          f"use it with --checkpoint {folder}")
    return 0
