"""Prompt encoder whose mask input has three channels (one mask per slice of the window)."""
import torch
from torch import nn
from segment_anything.modeling.prompt_encoder import PromptEncoder


def make_three_slice(encoder: PromptEncoder) -> PromptEncoder:
    """Widen the first mask-downscaling conv from 1 to 3 input channels in place.

    The Slide-SAM init recipe repeats the 2D weights over the three channels;
    a checkpoint that is already three-slice overwrites them on load.
    """
    conv = encoder.mask_downscaling[0]
    if conv.in_channels == 3:
        return encoder
    wide = nn.Conv2d(3, conv.out_channels, kernel_size=conv.kernel_size, stride=conv.stride)
    with torch.no_grad():
        wide.weight.copy_(conv.weight.repeat(1, 3, 1, 1))
        wide.bias.copy_(conv.bias)
    encoder.mask_downscaling[0] = wide
    return encoder
