"""The prompt-encoder -> mask-decoder glue is `SlideSAMNet.decode`, used by the predictor, the trainer and the
neighbour-head trainer: the trainer's logits equal the predictor's decode of the same windows and prompts."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from SlideSAMLib.training.dataset import WindowSampler, load_pair, select_structures
from SlideSAMLib.training.neighbours import NeighbourTrainer
from SlideSAMLib.training.trainer import Trainer


@pytest.fixture(scope="module")
def examples(data_dir, model):
    d = data_dir / "mr_abdomen"
    volume = load_pair(d / "example_mr_sm.nii.gz", d / "example_seg_mr.nii.gz", d / "labels_total_mr.json")
    select_structures([volume], ["liver", "spleen"])
    sampler = WindowSampler([volume], model.net.spec)
    rng = np.random.default_rng(5)
    out = [sampler.example(rng, point_fraction=0.5, augment=False) for _ in range(4)]
    assert {e.prompt.kind for e in out} >= {"box", "points"}  # both prompt kinds, in two decoder batches
    with torch.no_grad():
        embeddings = [model.net.image_encoder(e.image[None]) for e in out]  # one window at a time, as the predictor
    return out, embeddings


@pytest.fixture
def decode_calls(model, monkeypatch):
    calls = []
    real = type(model.net).decode

    def counted(self, *args, **kwargs):
        calls.append(kwargs.get("boxes") is not None)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(type(model.net), "decode", counted)
    return calls


def _predictor_decode(net, e, emb):
    """What WindowPredictor.predict runs for one prompt (model-input pixels) on one window's embedding."""
    boxes = torch.tensor([e.prompt.box], dtype=torch.float32) if e.prompt.box is not None else None
    points = None
    if e.prompt.points:
        points = (torch.tensor([[p[:2] for p in e.prompt.points]], dtype=torch.float32), torch.tensor([[p[2] for p in e.prompt.points]]))
    return net.decode(emb, boxes=boxes, points=points, multimask=net.spec.multimask)


def test_trainer_logits_equal_the_predictor_decode(model, examples, decode_calls):
    net = model.net
    examples, embeddings = examples
    trainer = SimpleNamespace(net=net, device=model.device, spec=net.spec)
    with torch.no_grad():
        logits, iou = Trainer.forward(trainer, examples)
        groups = len(decode_calls)
        for i, e in enumerate(examples):
            low, score = _predictor_decode(net, e, embeddings[i])
            # The trainer encodes all windows in one batch and decodes each prompt kind in one batch, the predictor
            # one at a time: the same float32 operations, summed in another order, so allow 1e-4 (logits are O(10)).
            torch.testing.assert_close(logits[i], low[0], atol=1e-4, rtol=0)
            torch.testing.assert_close(iou[i], score[0], atol=1e-5, rtol=0)
    assert groups == len({(e.prompt.box is not None, len(e.prompt.points)) for e in examples})  # the trainer went through decode


def test_neighbour_trainer_uses_decode(model, examples, decode_calls):
    net = model.net
    examples, embeddings = examples
    boxed = [e for e in examples if e.prompt.box is not None]
    with torch.no_grad():
        emb = torch.cat([x for x, e in zip(embeddings, examples) if e.prompt.box is not None])
        boxes = torch.tensor([e.prompt.box for e in boxed], dtype=torch.float32)
        chosen = NeighbourTrainer.forward(SimpleNamespace(net=net, model=model), emb, boxes)
        src, hyper = NeighbourTrainer.frozen_features(SimpleNamespace(net=net), emb, boxes)
        low, iou = net.decode(emb, boxes=boxes)
    assert decode_calls == [True, True, True]
    best = iou.argmax(dim=1) if net.spec.multimask else torch.zeros(len(boxed), dtype=torch.long)
    torch.testing.assert_close(chosen, low.reshape(len(boxed), -1, 3, *low.shape[-2:])[torch.arange(len(boxed)), best], atol=0, rtol=0)
    assert src.shape[0] == hyper.shape[0] == len(boxed)
