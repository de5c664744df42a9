"""SlideSAMLib: the three-slice Slide-SAM engine (no Slicer, no Qt).

    from SlideSAMLib import load_model, Session, read_image, array_of, write_result
    model = load_model()                       # embedded LiteMedSAM default, offline
    image = read_image("ct.nii.gz")
    session = Session(model, array_of(image), spacing=image.GetSpacing())
    result = session.segment(box=((40, 30, 60), (90, 80, 60)))   # (i, j, k) voxel corners
    write_result(result.volume_mask(), image, "liver.seg.nrrd", segment_name="liver")

Names are imported lazily so that light sub-modules (the server client, errors)
can be used without torch installed.
"""
import importlib

from ._version import __version__
from .errors import Cancelled, CheckpointError, InputError, SlideSAMError

_LAZY = {
    "SlideSAMModel": "checkpoint",
    "describe_checkpoint": "checkpoint",
    "load_model": "checkpoint",
    "pick_device": "checkpoint",
    "EmbeddingCache": "cache",
    "array_of": "imageio",
    "describe_image": "imageio",
    "read_image": "imageio",
    "write_result": "imageio",
    "PropagationResult": "propagation",
    "SliceInfo": "propagation",
    "StopRule": "propagation",
    "Session": "session",
}

__all__ = ["__version__", "Cancelled", "CheckpointError", "InputError", "SlideSAMError", *_LAZY]


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'SlideSAMLib' has no attribute '{name}'")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
