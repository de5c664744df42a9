"""The hybrid loss: a 2D label supervises only its own slice; a 3D label all three."""
import torch

from SlideSAMLib.training.losses import hybrid_loss, mask_loss


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 3, 32, 32, generator=g)
    target = (torch.rand(2, 3, 32, 32, generator=g) > 0.6).float()
    return logits, target


def test_unsupervised_slices_change_neither_loss_nor_gradient():
    logits, target = _batch()
    one_hot = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    iou = torch.full((2, 1), 0.5)
    a = logits.clone().requires_grad_(True)
    loss_a = hybrid_loss(a, iou, target, one_hot)["loss"]
    loss_a.backward()
    # Rewrite every unsupervised slice (logits and targets) with something else entirely.
    b_logits, b_target = logits.clone(), target.clone()
    b_logits[0, 0], b_logits[0, 2], b_logits[1, 1:] = 25.0, -25.0, 7.0
    b_target[0, 0], b_target[0, 2], b_target[1, 1:] = 1.0, 0.0, 1.0
    loss_b = hybrid_loss(b_logits, iou, b_target, one_hot)["loss"]
    assert torch.allclose(loss_a, loss_b, atol=1e-6)
    assert a.grad[0, 0].abs().max() == 0 and a.grad[0, 2].abs().max() == 0 and a.grad[1, 1:].abs().max() == 0
    assert a.grad[0, 1].abs().max() > 0 and a.grad[1, 0].abs().max() > 0
    # The supervised slice does count: changing it changes the loss.
    c_logits = logits.clone()
    c_logits[0, 1] = -25.0
    assert hybrid_loss(c_logits, iou, target, one_hot)["loss"] > loss_a + 1e-3


def test_three_d_labels_supervise_all_slices():
    logits, target = _batch(1)
    full = torch.ones(2, 3)
    base = mask_loss(logits, target, full)
    changed = logits.clone()
    changed[:, 0] = -changed[:, 0]  # only a side slice differs
    other = mask_loss(changed, target, full)
    assert not torch.allclose(base["dice"] + base["focal"], other["dice"] + other["focal"])


def test_perfect_prediction_scores_lower_than_wrong_one():
    _, target = _batch(2)
    good = (target * 2 - 1) * 20
    ind = torch.ones(2, 3)
    iou = torch.ones(2, 1)
    assert hybrid_loss(good, iou, target, ind)["loss"] < 0.05 < hybrid_loss(-good, iou, target, ind)["loss"]


def test_multimask_trains_the_best_candidate_only():
    _, target = _batch(3)
    good = (target * 2 - 1) * 20
    logits = torch.cat([-good, good, -good], dim=1)  # token 1 is right, tokens 0 and 2 wrong
    iou = torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    assert hybrid_loss(logits, iou, target, torch.ones(2, 3))["loss"] < 0.05
