"""The hybrid loss of Slide-SAM (arXiv 2311.10121): 20 x focal (alpha 0.2, gamma 2) + Dice over the three slices, IoU-head MSE.

Per window the network predicts three slices.  A per-slice indicator says which of them
are supervised: [1, 1, 1] for a 3D label, one-hot on its own slice for a 2D annotation.
The indicator multiplies logits and targets (nothing of an unsupervised slice reaches the
loss or its gradient), and each term is averaged over the supervised slices only, so the
loss value does not depend on what the network says about unsupervised slices.
"""
from typing import Dict

import torch
import torch.nn.functional as F

FOCAL_WEIGHT = 20.0
FOCAL_ALPHA = 0.2
FOCAL_GAMMA = 2.0
DICE_SMOOTH = 1.0


def focal_per_slice(logits: torch.Tensor, target: torch.Tensor, alpha=FOCAL_ALPHA, gamma=FOCAL_GAMMA) -> torch.Tensor:
    """Sigmoid focal loss (torchvision's) averaged over pixels: [B, S, H, W] -> [B, S]."""
    from torchvision.ops import sigmoid_focal_loss

    return sigmoid_focal_loss(logits, target, alpha=alpha, gamma=gamma, reduction="none").mean(dim=(-2, -1))


def dice_per_slice(logits: torch.Tensor, target: torch.Tensor, smooth=DICE_SMOOTH) -> torch.Tensor:
    """Soft Dice loss per slice: [B, S, H, W] -> [B, S]; an empty target asks for an empty prediction."""
    p = torch.sigmoid(logits)
    inter = (p * target).sum(dim=(-2, -1))
    return 1 - (2 * inter + smooth) / (p.sum(dim=(-2, -1)) + target.sum(dim=(-2, -1)) + smooth)


def hard_iou(logits: torch.Tensor, target: torch.Tensor, indicator: torch.Tensor) -> torch.Tensor:
    """IoU of (logits > 0) with the target over the supervised slices together: [B]."""
    with torch.no_grad():
        w = indicator[..., None, None]
        pred = (logits > 0).float() * w
        tgt = target * w
        inter = (pred * tgt).sum(dim=(-3, -2, -1))
        union = ((pred + tgt) > 0).float().sum(dim=(-3, -2, -1))
        return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def mask_loss(logits: torch.Tensor, target: torch.Tensor, indicator: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Per-sample focal and Dice terms ([B] each) for logits/target [B, 3, H, W] and indicator [B, 3]."""
    w = indicator.to(logits.dtype)[..., None, None]
    logits = logits.float() * w
    target = target.float() * w
    n = indicator.float().sum(dim=1).clamp(min=1)
    focal = (focal_per_slice(logits, target) * indicator).sum(dim=1) / n
    dice = (dice_per_slice(logits, target) * indicator).sum(dim=1) / n
    return {"focal": focal, "dice": dice}


def hybrid_loss(
    logits: torch.Tensor, iou_pred: torch.Tensor, target: torch.Tensor, indicator: torch.Tensor
) -> Dict[str, torch.Tensor]:
    """Total loss for a batch.

    logits [B, T*3, H, W] (channel = token*3 + slice), iou_pred [B, T], target [B, 3, H, W],
    indicator [B, 3].  With several candidate tokens only the best one per sample is trained
    on the masks (as the authors do); the IoU head regresses every candidate's real IoU.
    """
    b, c, h, w = logits.shape
    tokens = c // 3
    per_token = logits.reshape(b, tokens, 3, h, w)
    terms = [mask_loss(per_token[:, t], target, indicator) for t in range(tokens)]
    mask_terms = torch.stack([FOCAL_WEIGHT * d["focal"] + d["dice"] for d in terms], dim=1)  # [B, T]
    best = mask_terms.detach().argmin(dim=1)
    pick = torch.arange(b, device=logits.device)
    real_iou = torch.stack([hard_iou(per_token[:, t].float(), target.float(), indicator.float()) for t in range(tokens)], dim=1)
    iou_mse = F.mse_loss(iou_pred.float(), real_iou, reduction="none").mean(dim=1)
    focal = torch.stack([d["focal"] for d in terms], dim=1)[pick, best]
    dice = torch.stack([d["dice"] for d in terms], dim=1)[pick, best]
    total = (mask_terms[pick, best] + iou_mse).mean()
    return {"loss": total, "focal": focal.mean().detach(), "dice": dice.mean().detach(), "iou_mse": iou_mse.mean().detach()}
