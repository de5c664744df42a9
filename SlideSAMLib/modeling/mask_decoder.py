"""Three-slice mask decoder: SAM's decoder with one upscaling branch per slice.

The transformer, the tokens and the four hypernetwork MLPs are SAM's and are
shared by the three slices; only the upscaling branch differs per slice, so
mask(token t, slice s) = hyper_t . upscaled_s.  Outputs are ordered
channel = token * 3 + slice, exactly as the official Slide-SAM decoder.
"""
import copy
from typing import Tuple

import torch
from torch import nn
from segment_anything.modeling.mask_decoder import MaskDecoder

SLICES = 3


class ThreeSliceMaskDecoder(MaskDecoder):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        # Names match the official checkpoint: output_upscaling, output_upscaling2, output_upscaling3.
        self.output_upscaling2 = copy.deepcopy(self.output_upscaling)
        self.output_upscaling3 = copy.deepcopy(self.output_upscaling)

    @classmethod
    def from_2d(cls, decoder: MaskDecoder) -> "ThreeSliceMaskDecoder":
        """The Slide-SAM init recipe: copy a 2D decoder, branches 2 and 3 start as copies of branch 1."""
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        for name, value in vars(decoder).items():
            if name not in ("_modules", "_parameters", "_buffers"):
                setattr(new, name, value)
        for name, module in decoder.named_children():
            new.add_module(name, copy.deepcopy(module))
        new.output_upscaling2 = copy.deepcopy(decoder.output_upscaling)
        new.output_upscaling3 = copy.deepcopy(decoder.output_upscaling)
        return new

    def upscaling_branches(self):
        return (self.output_upscaling, self.output_upscaling2, self.output_upscaling3)

    def _branches_identical(self) -> bool:
        """True when the three branches hold equal weights; never while gradients are recorded (training)."""
        if torch.is_grad_enabled():
            return False
        first = list(self.output_upscaling.parameters())
        return all(
            all(torch.equal(a, b) for a, b in zip(first, branch.parameters()))
            for branch in (self.output_upscaling2, self.output_upscaling3)
        )

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        masks, iou_pred = self.predict_masks(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings
        )
        tokens = slice(1, None) if multimask_output else slice(0, 1)
        masks = masks[:, tokens]
        iou_pred = iou_pred[:, tokens]
        b, t, s, h, w = masks.shape
        return masks.reshape(b, t * s, h, w), iou_pred

    def predict_masks(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Masks [B, tokens, 3, h, w] and IoU [B, tokens].

        One image per prompt when the batch sizes match (a batch of windows);
        one image broadcast to all prompts when the image batch is 1 (SAM's convention).
        """
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        batch = sparse_prompt_embeddings.size(0)
        output_tokens = output_tokens.unsqueeze(0).expand(batch, -1, -1)
        tokens = torch.cat((output_tokens, sparse_prompt_embeddings), dim=1)

        if image_embeddings.shape[0] == batch:
            src = image_embeddings
        else:
            src = torch.repeat_interleave(image_embeddings, batch, dim=0)
        src = src + dense_prompt_embeddings
        pos_src = torch.repeat_interleave(image_pe, batch, dim=0)
        b, c, h, w = src.shape

        hs, src = self.transformer(src, pos_src, tokens)
        iou_token_out = hs[:, 0, :]
        mask_tokens_out = hs[:, 1 : (1 + self.num_mask_tokens), :]
        src = src.transpose(1, 2).reshape(b, c, h, w)

        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )  # [b, tokens, c']

        def slice_masks(branch):
            up = branch(src)
            bu, cu, hu, wu = up.shape
            return (hyper_in @ up.reshape(bu, cu, hu * wu)).reshape(bu, -1, hu, wu)

        if self._branches_identical():
            # Models made by the Slide-SAM init recipe (the embedded default) start with three equal branches:
            # one upscaling serves all three slices (the same numbers, a third of the upscaling's cost).
            per_slice = [slice_masks(self.output_upscaling)] * SLICES
        else:
            per_slice = [slice_masks(branch) for branch in self.upscaling_branches()]
        masks = torch.stack(per_slice, dim=2)
        iou_pred = self.iou_prediction_head(iou_token_out)
        return masks, iou_pred
