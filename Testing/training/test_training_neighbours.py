"""Neighbour-head training (`slidesam train --decoder neighbours`) on a real MR volume.

The prompted (centre) slice's output is unchanged by training, exactly; the neighbour-slice loss
falls; the crop shortcut of the training steps computes what the decoder computes; the adapter
holds only the two trained branches, declares its capability and loads with the network cut off.
"""
import socket

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from SlideSAMLib import load_model
from SlideSAMLib.cli import main
from SlideSAMLib.training.dataset import load_pair, select_structures
from SlideSAMLib.training.embeddings import EmbeddingStore
from SlideSAMLib.training.neighbours import (CENTRE_BRANCH, NEIGHBOUR_BRANCHES, NeighbourConfig, NeighbourTrainer, anchor_term, crop_cells,
                                             neighbour_terms, save_neighbour_adapter)


def _neighbour_terms(trainer, logits, target):
    """The training loss and its Dice term on slices k-1 / k+1 (the trainer's own weighting), and their hard Dice."""
    terms = neighbour_terms(logits[:, [0, 2]], target[:, [0, 2]], trainer.cfg.focal_alpha)
    pred, t = logits[:, [0, 2]] > 0, target[:, [0, 2]] > 0.5
    hard = 2 * (pred & t).sum() / (pred.sum() + t.sum())
    return {"loss": float((trainer.cfg.focal_weight * terms["focal"] + terms["dice"]).mean()), "dice_loss": float(terms["dice"].mean()), "hard_dice": float(hard)}


def _train(data_dir, out, anchor_weight=0.0):
    """A fresh model (training changes it in place), 40 steps on the kidneys of the MR abdomen, and a fixed batch."""
    d = data_dir / "mr_abdomen"
    volume = load_pair(d / "example_mr_sm.nii.gz", d / "example_seg_mr.nii.gz", d / "labels_total_mr.json")
    select_structures([volume], ["kidney_right", "kidney_left"])
    model = load_model(device="cpu")
    base = {n: p.detach().clone() for n, p in model.net.named_parameters()}
    cfg = NeighbourConfig(out=str(out), steps=40, batch_size=4, lr=1e-3, warmup=2, pool=24, val_windows=8, progress=False,
                          anchor_weight=anchor_weight)
    trainer = NeighbourTrainer(model, [volume], cfg, store=EmbeddingStore(model))
    trainer.sampler.embed()
    batch = trainer.batch(np.random.default_rng(7), 6)
    with torch.no_grad():
        before = trainer.forward(batch[0], batch[2]).clone()
    trainer.build_pool()
    for _ in range(cfg.steps):
        trainer.train_step(np.random.default_rng([0, trainer.step]))
    with torch.no_grad():
        after = trainer.forward(batch[0], batch[2])
    return trainer, base, batch, before, after, out


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    return _train(data_dir, tmp_path_factory.mktemp("neighbours"))


def test_centre_slice_output_is_unchanged_exactly(trained):
    trainer, base, _, before, after, _ = trained
    assert torch.equal(after[:, 1], before[:, 1])
    for name, p in trainer.net.named_parameters():
        if not name.startswith(NEIGHBOUR_BRANCHES):
            assert torch.equal(p, base[name]), name
    changed = [n for n, p in trainer.net.named_parameters() if not torch.equal(p, base[n])]
    assert changed and all(n.startswith(NEIGHBOUR_BRANCHES) for n in changed)


def test_neighbour_slice_loss_falls(trained):
    trainer, _, batch, before, after, _ = trained
    assert _neighbour_terms(trainer, after, batch[1])["loss"] < 0.9 * _neighbour_terms(trainer, before, batch[1])["loss"]


def test_neighbour_masks_get_better_not_only_more_cautious(trained):
    """Session 5's recipe (20 x focal with alpha 0.2) lowered its loss through the focal term while the neighbour
    Dice did not improve (its masks shrank on the MR spine: benchmarks/TRAINING.md): the Dice term and the hard
    Dice of slices k-1 / k+1 must improve too."""
    trainer, _, batch, before, after, _ = trained
    b, a = _neighbour_terms(trainer, before, batch[1]), _neighbour_terms(trainer, after, batch[1])
    assert a["dice_loss"] < b["dice_loss"] - 0.02
    assert a["hard_dice"] > b["hard_dice"] + 0.02


def test_crop_shortcut_equals_the_decoder(trained):
    trainer, _, batch, _, after, _ = trained
    emb, _, boxes = batch
    src, hyper = trainer.frozen_features(emb, boxes)
    with torch.no_grad():
        full = trainer.outer_logits(src, hyper)
        assert torch.allclose(full, after[:, [0, 2]], atol=1e-4)
        y0, y1, x0, x1 = crop_cells(boxes[0], src.shape[-1], trainer.net.spec.img_size)
        assert (y1 - y0) < src.shape[-2] or (x1 - x0) < src.shape[-1]  # a real crop
        crop = trainer.outer_logits(src[:1, :, y0:y1, x0:x1], hyper[:1])
        f = full.shape[-1] // src.shape[-1]
        assert torch.allclose(crop, full[:1, :, y0 * f : y1 * f, x0 * f : x1 * f], atol=1e-4)


def test_adapter_holds_the_two_branches_and_loads_offline(trained, monkeypatch):
    trainer, _, _, _, after, out = trained
    folder = save_neighbour_adapter(trainer, {"note": "test"}, {})
    heads = load_file(str(folder / "heads.safetensors"))
    assert heads and all(k.startswith(NEIGHBOUR_BRANCHES) for k in heads)
    assert sum(v.numel() for v in heads.values()) < 200_000  # two upscaling branches, nothing else

    def refuse(*args, **kwargs):
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    loaded = load_model(str(folder), device="cpu")
    assert loaded.trained_neighbours and not loaded.supports_points
    own = dict(loaded.net.named_parameters())
    for k, v in heads.items():
        assert torch.equal(own[k], v)
    trained_centre = {n: p for n, p in trainer.net.named_parameters() if n.startswith(CENTRE_BRANCH)}
    assert all(torch.equal(own[n], p) for n, p in trained_centre.items())
    assert not load_model(device="cpu").trained_neighbours  # the untuned default declares nothing


def test_cli_refuses_2d_labels_for_neighbours(capsys, tmp_path, data_dir):
    d = data_dir / "mr_breast_lesion"
    out = tmp_path / "adapter"
    code = main(["train", "--decoder", "neighbours", "--pair2d", str(d / "image.nrrd"), str(d / "label.nrrd"), "-o", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--pair2d" in err
    assert not out.exists()
    code = main(["train", "--val-pair", str(d / "image.nrrd"), str(d / "label.nrrd"), "--pair", str(d / "image.nrrd"), str(d / "label.nrrd"), "-o", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--decoder neighbours" in err
    assert not out.exists()


def test_a_vanishing_neighbour_ends_the_chain_only_for_trained_neighbours(model, data_dir):
    """Propagation: a model that declares trained neighbour heads stops where its neighbour prediction falls below
    the stop rule's 'vanished' area, without encoding the next window; the untuned default goes on (as before)."""
    from SlideSAMLib import array_of, read_image
    from SlideSAMLib.predictor import WindowPredictor
    from SlideSAMLib.propagation import Chain, IntensityModel, Propagator

    d = data_dir / "mr_abdomen"
    image = read_image(d / "example_mr_sm.nii.gz")
    labels = array_of(read_image(d / "example_seg_mr.nii.gz"))
    kidney = labels == 2  # kidney_right (labels_total_mr.json)
    areas = kidney.reshape(len(kidney), -1).sum(axis=1)
    c = int(np.argmax(areas))
    p = WindowPredictor(model, array_of(image), 2)
    prop = Propagator(p, spacing_mm=tuple(image.GetSpacing())[::-1])
    prop.intensity = IntensityModel(p.stack[c - 1], kidney[c - 1])
    prop.max_area = int(areas.max())
    ys, xs = np.nonzero(kidney[c] & kidney[c - 1])
    tiny = torch.full(kidney[c].shape, -1.0)
    tiny[ys[len(ys) // 2], xs[len(xs) // 2]] = 1.0  # one pixel: below 0.5 % of the largest area, not empty
    assert prop.rule.vanished(1, prop.max_area) and not prop.rule.vanished(int(areas[c]), prop.max_area)
    saved = model.trained_neighbours
    try:
        for trained in (True, False):
            model.trained_neighbours = trained
            prop._sum, prop._weight, prop._sealed = {c: tiny.clone()}, {c: 1.0}, {}
            passes = p.encoder_passes
            pred, _, info = prop._window(c, Chain(1, kidney[c - 1], int(areas[c - 1])), 0, p.n_slices - 1)
            if trained:
                assert pred is None and info is None and p.encoder_passes == passes
            else:
                assert pred is not None and info is not None and p.encoder_passes > passes
    finally:
        model.trained_neighbours = saved


def test_neighbour_terms_are_per_example_dice_on_probabilities():
    """The neighbour loss: one value per example (not pooled over the batch), Dice on sigmoid probabilities, an empty
    target asking for an empty mask; the default weighting is Dice-dominant (session 6: 20 x focal with alpha 0.2
    taught the heads to shrink, benchmarks/TRAINING.md)."""
    target = torch.zeros(3, 2, 16, 16)
    target[:2, :, 4:12, 4:12] = 1.0  # examples 0 and 1 hold a square; example 2 is past the structure's end
    logits = (target * 2 - 1) * 20  # confident and right, except example 1 predicts nothing
    logits[1] = -20.0
    terms = neighbour_terms(logits, target, alpha=0.5)
    assert terms["dice"].shape == (3,) and terms["focal"].shape == (3,)
    assert terms["dice"][0] < 0.01 and terms["dice"][2] < 0.01  # right, and right to be empty
    assert terms["dice"][1] > 0.95  # a missed structure costs the whole Dice term, whatever its size
    cfg = NeighbourConfig(out="unused")
    assert cfg.focal_weight == 1.0 and cfg.focal_alpha == 0.5


def test_anchor_term_is_zero_at_the_untuned_copy_and_grows_away_from_it():
    """The anchor (KL from the frozen centre branch's probabilities): 0 with a 0 gradient where the outer heads still
    predict what the centre branch predicts (their init), positive once they differ."""
    teacher = torch.randn(2, 8, 8) * 3
    logits = teacher[:, None].repeat(1, 2, 1, 1).requires_grad_(True)
    a = anchor_term(logits, teacher)
    assert a.shape == (2,) and float(a.detach().abs().max()) < 1e-6
    a.sum().backward()
    assert float(logits.grad.abs().max()) < 1e-6
    assert (anchor_term(logits.detach() + 2.0, teacher) > 0.01).all()


def test_anchor_weight_zero_is_the_old_loss(trained):
    """--anchor-weight 0 (the default) leaves the loss Dice + focal_weight x focal, exactly."""
    trainer = trained[0]
    rng_seed = [99, 0]
    picks = np.random.default_rng(rng_seed).choice(len(trainer.pool), trainer.cfg.batch_size, replace=False)
    with torch.no_grad():
        terms = [neighbour_terms(trainer.outer_logits(src[None].float(), hyper[None]), target[None], trainer.cfg.focal_alpha)
                 for src, hyper, target in (trainer.pool[int(i)] for i in picks)]
        expected = float(torch.cat([trainer.cfg.focal_weight * t["focal"] + t["dice"] for t in terms]).mean())
    row = trainer.train_step(np.random.default_rng(rng_seed))
    assert row["anchor"] == 0.0 and row["loss"] == pytest.approx(expected, rel=1e-6, abs=1e-7)


def test_a_large_anchor_weight_keeps_the_heads_near_the_untuned_copy(trained, data_dir, tmp_path):
    """The same 40 steps on the same pool with W = 50: the outer heads' logits on a fixed batch move far less than
    without the anchor, and the centre slice's output is still unchanged exactly."""
    _, _, _, before, after, _ = trained
    anchored = _train(data_dir, tmp_path / "anchored", anchor_weight=50.0)
    a_before, a_after = anchored[3], anchored[4]
    assert torch.equal(a_before, before)  # the same fresh model and batch
    assert torch.equal(a_after[:, 1], a_before[:, 1])
    free = float((after[:, [0, 2]] - before[:, [0, 2]]).abs().mean())
    held = float((a_after[:, [0, 2]] - a_before[:, [0, 2]]).abs().mean())
    assert free > 0.1 and held < 0.5 * free
