"""Real training steps on a real MR volume; the adapter round trip; the CLI with --resume."""
import csv
import json

import numpy as np
import pytest
import torch

from SlideSAMLib import load_model
from SlideSAMLib.adapter import save_adapter
from SlideSAMLib.cli import main
from SlideSAMLib.training.dataset import load_pair, select_structures
from SlideSAMLib.training.trainer import TrainConfig, Trainer


@pytest.fixture(scope="module")
def mr_pair(data_dir):
    d = data_dir / "mr_abdomen"
    return d / "example_mr_sm.nii.gz", d / "example_seg_mr.nii.gz", d / "labels_total_mr.json"


@pytest.fixture(scope="module")
def trained(mr_pair, tmp_path_factory):
    """A trainer after three steps on one fixed batch (liver and spleen windows), and that batch."""
    volume = load_pair(*mr_pair)
    select_structures([volume], ["liver", "spleen"])
    out = tmp_path_factory.mktemp("adapter")
    cfg = TrainConfig(out=str(out), steps=3, batch_size=2, lr=1e-3, warmup=1, device="cpu", progress=False, point_fraction=0.5, seed=3)
    trainer = Trainer([volume], cfg, model=load_model(device="cpu"))
    batch = trainer.batch(0)
    before = trainer.evaluate(batch)
    for _ in range(3):
        trainer.train_step(batch)
    return trainer, batch, before, out


def test_training_steps_reduce_the_loss(trained):
    trainer, batch, before, _ = trained
    assert trainer.step == 3
    assert trainer.evaluate(batch) < 0.95 * before


def _decode(net, example):
    """Low-res logits for one example's box prompt, through the net's own parts."""
    with torch.no_grad():
        emb = net.image_encoder(example.image[None])
        box = torch.tensor([example.prompt.box or [60.0, 60.0, 160.0, 160.0]])
        sparse, dense = net.prompt_encoder(points=None, boxes=box, masks=None)
        low, _ = net.mask_decoder(image_embeddings=emb, image_pe=net.prompt_encoder.get_dense_pe(), sparse_prompt_embeddings=sparse,
                                  dense_prompt_embeddings=dense, multimask_output=False)
    return low


def test_adapter_saves_and_reloads_to_identical_outputs(trained):
    trainer, batch, _, out = trained
    save_adapter(trainer.peft, trainer.net, trainer.head_names, out, trainer.manifest(0.0, 1.0))
    manifest = json.loads((out / "slidesam_adapter.json").read_text())
    assert manifest["base"] == "embedded" and manifest["lora"]["rank"] == 8 and manifest["point_trained"] is True
    loaded = load_model(out, device="cpu")
    assert loaded.kind == "adapter" and loaded.supports_points
    assert not any("lora" in n for n, _ in loaded.net.named_parameters())  # merged for inference
    base = load_model(device="cpu")
    for example in batch:
        mine, again, untuned = _decode(trainer.net, example), _decode(loaded.net, example), _decode(base.net, example)
        change = (mine - untuned).abs().max().item()
        assert change > 1e-3  # training moved the outputs, so the comparison below means something
        assert (mine - again).abs().max().item() < 1e-3 * max(1.0, change)


def test_cli_trains_and_resumes(mr_pair, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--pair", *map(str, mr_pair), "--structures", "spleen", "--batch-size", "1", "--device", "cpu", "--quiet", "-o", str(out)]
    assert main(args + ["--steps", "1"]) == 0
    assert "wrote adapter" in capsys.readouterr().out
    assert main(args + ["--steps", "2"]) == 2  # an existing run is not overwritten silently
    assert "--resume" in capsys.readouterr().err
    assert main(args + ["--steps", "2", "--resume"]) == 0
    rows = list(csv.DictReader(open(out / "loss.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2] and all(np.isfinite(float(r["loss"])) for r in rows)
    manifest = json.loads((out / "slidesam_adapter.json").read_text())
    assert manifest["training"]["steps"] == 2 and "spleen" in manifest["training"]["command"]
    assert load_model(out, device="cpu").kind == "adapter"
