"""The three-slice network: encoder, prompt encoder and decoder, with segment-anything's call signatures."""
from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class NetSpec:
    """What the pre-processing needs to know about a network."""

    name: str  # registry name: "vit_b", "vit_l", "vit_h", "litemedsam"
    img_size: int  # square encoder input
    preprocessing: str  # "slidesam" (the authors' recipe) or "litemedsam"
    multimask: bool  # choose among 3 candidates (official) or take the single mask (LiteMedSAM)


class SlideSAMNet(nn.Module):
    """Holds the three parts; the predictor does pre- and post-processing."""

    def __init__(self, image_encoder: nn.Module, prompt_encoder: nn.Module, mask_decoder: nn.Module, spec: NetSpec):
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.spec = spec

    def decode(self, embeddings, boxes=None, points=None, multimask: bool = None):
        """Low-res logits [B, 3 or 9, 256, 256] and predicted IoUs of prompts on image embeddings [B, 256, 64, 64]:
        `boxes` [B, 4] and/or `points` (coords [B, N, 2], labels [B, N]), in model-input pixels; segment-anything's
        prompt encoder -> mask decoder glue, written once for the predictor and the trainer."""
        sparse, dense = self.prompt_encoder(points=points, boxes=boxes, masks=None)
        return self.mask_decoder(
            image_embeddings=embeddings,
            image_pe=self.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=self.spec.multimask if multimask is None else multimask,
        )
