"""The three-slice Slide-SAM network, one small file per component."""
from .builders import BUILDERS, build_net
from .mask_decoder import ThreeSliceMaskDecoder
from .net import NetSpec, SlideSAMNet
from .prompt_encoder import make_three_slice

__all__ = ["BUILDERS", "build_net", "NetSpec", "SlideSAMNet", "ThreeSliceMaskDecoder", "make_three_slice"]
