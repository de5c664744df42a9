"""SlideSAMLib: the three-slice Slide-SAM engine (no Slicer, no Qt).

    from SlideSAMLib import load_model, Session, read_image, array_of, write_result
    model = load_model()                       # embedded LiteMedSAM default, offline
    image = read_image("ct.nii.gz")
    session = Session(model, array_of(image))
    result = session.segment(box=((40, 30, 60), (90, 80, 60)))   # (i, j, k) voxel corners
    write_result(result.volume_mask(), image, "liver.seg.nrrd", segment_name="liver")
"""
import warnings

with warnings.catch_warnings():
    # timm (used by LiteMedSAM's TinyViT) warns about its own deprecated module paths at import.
    warnings.simplefilter("ignore", FutureWarning)
    from .checkpoint import SlideSAMModel, describe_checkpoint, load_model, pick_device

from ._version import __version__
from .cache import EmbeddingCache
from .errors import Cancelled, CheckpointError, InputError, SlideSAMError
from .imageio import array_of, describe_image, read_image, write_result
from .propagation import PropagationResult, SliceInfo, StopRule
from .session import Session

__all__ = [
    "__version__",
    "Cancelled",
    "CheckpointError",
    "EmbeddingCache",
    "InputError",
    "PropagationResult",
    "Session",
    "SlideSAMError",
    "SlideSAMModel",
    "SliceInfo",
    "StopRule",
    "array_of",
    "describe_checkpoint",
    "describe_image",
    "load_model",
    "pick_device",
    "read_image",
    "write_result",
]
