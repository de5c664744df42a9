"""What travels between `slidesam serve` and its client: a volume with its geometry, and masks.

numpy + the standard library only (no torch), so a thin client can import it.

Volume upload (one binary body, no pickle anywhere):
    b"SLIDESAM-VOL1\\n" | uint32 big-endian header length | JSON header | zlib(raw C-order voxels)
    header: {"dtype": "<i2", "shape": [k, j, i], "spacing": [3], "origin": [3], "direction": [9], "modality": "auto"}
    "spacing" (voxel size in mm along i, j, k) is required: the stop rule and the outline measure in mm, and a
    guessed 1 mm would silently change where a run stops. "origin" and "direction" default to 0 and identity
    (they place the result in the world but change no voxel of it).
Masks (inside a JSON result line): the written slices stacked in increasing order,
    np.packbits over the flattened stack, zlib-compressed, base64 text.
"""
import base64
import json
import struct
import zlib
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

VOLUME_MAGIC = b"SLIDESAM-VOL1\n"
MAX_HEADER_BYTES = 64 * 1024
# Voxel types the engine handles: integers and floats of 1-8 bytes.  Objects, strings, complex are refused.
_VOXEL_KINDS = "uif"
MODALITIES = ("auto", "ct", "mr")

# HTTP headers used by both sides.
CLIENT_VERSION_HEADER = "X-SlideSAM-Client-Version"
API_KEY_HEADER = "X-API-Key"


def voxel_dtype(text) -> Optional[np.dtype]:
    """The numpy dtype named by `text` when it is an accepted voxel type, else None."""
    if not isinstance(text, str) or len(text) > 8:
        return None
    try:
        dtype = np.dtype(text)
    except TypeError:
        return None
    return dtype if dtype.kind in _VOXEL_KINDS and 1 <= dtype.itemsize <= 8 else None


class WireError(ValueError):
    """A body that does not follow the format above; the message says what is wrong."""


class TooLarge(WireError):
    """A body or the array it unpacks to is over the server's limit."""


def _geometry(spacing, origin, direction) -> Dict[str, list]:
    try:
        spacing = [float(v) for v in spacing]
        origin = [float(v) for v in (origin if origin is not None else (0.0, 0.0, 0.0))]
        direction = [float(v) for v in np.asarray(direction if direction is not None else np.eye(3)).ravel()]
    except (TypeError, ValueError):
        raise WireError("geometry needs 3 spacings, 3 origin values and 9 direction values, all numbers") from None
    if len(spacing) != 3 or len(origin) != 3 or len(direction) != 9:
        raise WireError("geometry needs 3 spacings, 3 origin values and 9 direction values")
    if not all(np.isfinite(spacing + origin + direction)) or min(spacing) <= 0:
        raise WireError(f"geometry is not usable (spacing {spacing}): spacings must be positive and all values finite")
    return {"spacing": spacing, "origin": origin, "direction": direction}


def encode_volume(volume_zyx: np.ndarray, spacing=None, origin=None, direction=None, modality: str = "auto", level: int = 1) -> bytes:
    """One upload body for a numpy (k, j, i) volume and its ITK geometry (spacing/origin in (i, j, k) order)."""
    array = np.ascontiguousarray(volume_zyx)
    if array.ndim != 3:
        raise WireError(f"the volume is {array.ndim}D (shape {array.shape}): upload a 3D (k, j, i) array")
    if voxel_dtype(array.dtype.str) is None:
        raise WireError(f"voxel type {array.dtype} cannot be uploaded: convert the volume to an integer or float type")
    if modality not in MODALITIES:
        raise WireError(f"modality '{modality}' is not one of {', '.join(MODALITIES)}")
    if spacing is None:
        raise WireError("no voxel spacing: pass spacing=(i, j, k) in mm (e.g. the image's GetSpacing()); SlideSAM measures its stop rule in mm and assumes none")
    header = {"dtype": array.dtype.str, "shape": list(array.shape), "modality": modality, **_geometry(spacing, origin, direction)}
    head = json.dumps(header).encode()
    return VOLUME_MAGIC + struct.pack(">I", len(head)) + head + zlib.compress(array.tobytes(), level)


def decode_volume(body: bytes, max_array_bytes: int) -> Tuple[np.ndarray, dict]:
    """(volume, header) from an upload body; never allocates more than `max_array_bytes` for the voxels."""
    if not body.startswith(VOLUME_MAGIC):
        raise WireError("the body is not a SlideSAM volume (bad magic bytes): upload with SlideSAMLib.client or wire.encode_volume")
    pos = len(VOLUME_MAGIC)
    if len(body) < pos + 4:
        raise WireError("the volume body is truncated before its header")
    (n,) = struct.unpack(">I", body[pos : pos + 4])
    if n > MAX_HEADER_BYTES or len(body) < pos + 4 + n:
        raise WireError(f"the volume header is {n} bytes, larger than the body or {MAX_HEADER_BYTES}: the body is corrupt")
    try:
        header = json.loads(body[pos + 4 : pos + 4 + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WireError(f"the volume header is not JSON ({exc.__class__.__name__}): the body is corrupt") from exc
    if not isinstance(header, dict):
        raise WireError("the volume header is not a JSON object")
    dtype_str, shape = header.get("dtype"), header.get("shape")
    dtype = voxel_dtype(dtype_str)
    if dtype is None:
        raise WireError(f"voxel type {dtype_str!r} is not accepted: send an integer or float volume")
    if not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(s, int) and s >= 1 for s in shape)):
        raise WireError(f"shape {shape!r} is not three positive integers (k, j, i)")
    modality = header.get("modality", "auto")
    if modality not in MODALITIES:
        raise WireError(f"modality {modality!r} is not one of {', '.join(MODALITIES)}")
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if expected > max_array_bytes:
        raise TooLarge(f"the volume is {expected / 1e6:.1f} MB uncompressed, over the server's limit of {max_array_bytes / 1e6:.1f} MB: crop it or raise --max-upload-mb")
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(body[pos + 4 + n :], expected)  # bounded: a zip bomb stops at `expected` bytes
    except zlib.error as exc:
        raise WireError(f"the voxel data is not zlib-compressed ({exc}): the body is corrupt") from exc
    if len(raw) != expected or inflater.unconsumed_tail or not inflater.eof:
        raise WireError(f"the voxel data unpacks to {len(raw)} bytes{' or more' if inflater.unconsumed_tail else ''}, the header says {expected}: the body is truncated or corrupt")
    volume = np.frombuffer(raw, dtype=dtype).reshape(shape)
    if dtype.kind == "f" and not np.all(np.isfinite(volume)):
        raise WireError("the volume holds NaN or infinite voxels: replace them before uploading")
    if header.get("spacing") is None:
        raise WireError('the volume header has no "spacing" (voxel size in mm along i, j, k): send the image\'s voxel spacing (SlideSAMLib.client upload(volume, spacing, ...) or wire.encode_volume(volume, spacing))')
    geometry = _geometry(header.get("spacing"), header.get("origin"), header.get("direction"))
    return volume.astype(dtype.newbyteorder("="), copy=False), {"modality": modality, **geometry}


def encode_masks(slice_masks: Dict[int, np.ndarray]) -> Tuple[list, str]:
    """(slices, text) for a {index: bool 2D} dict: slices in increasing order, masks packed as described above."""
    slices = sorted(int(s) for s in slice_masks)
    if not slices:
        return [], ""
    stack = np.stack([np.asarray(slice_masks[s], dtype=bool) for s in slices])
    return slices, base64.b64encode(zlib.compress(np.packbits(stack.ravel()).tobytes(), 6)).decode("ascii")


def decode_masks(slices: Sequence[int], text: str, plane_shape: Sequence[int]) -> Dict[int, np.ndarray]:
    if not slices:
        return {}
    rows, cols = (int(v) for v in plane_shape)
    bits = np.frombuffer(zlib.decompress(base64.b64decode(text)), dtype=np.uint8)
    stack = np.unpackbits(bits, count=len(slices) * rows * cols).astype(bool).reshape(len(slices), rows, cols)
    return {int(s): stack[n] for n, s in enumerate(slices)}


def encode_mask2d(mask: np.ndarray) -> dict:
    """A 2D bool mask (e.g. a corrected slice for a restart) as JSON: shape + packed bits."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise WireError(f"the corrected mask is {mask.ndim}D: give one 2D slice")
    return {"shape": list(mask.shape), "bits": base64.b64encode(zlib.compress(np.packbits(mask.ravel()).tobytes(), 6)).decode("ascii")}


def decode_mask2d(obj: dict, max_pixels: int) -> np.ndarray:
    shape = obj.get("shape") if isinstance(obj, dict) else None
    if not (isinstance(shape, (list, tuple)) and len(shape) == 2 and all(isinstance(s, int) and s >= 1 for s in shape)):
        raise WireError("the corrected mask needs 'shape': [rows, cols] and 'bits'")
    n = shape[0] * shape[1]
    if n > max_pixels:
        raise TooLarge(f"the corrected mask has {n} pixels, more than any slice of the volume ({max_pixels})")
    try:
        packed = zlib.decompressobj().decompress(base64.b64decode(obj.get("bits", ""), validate=True), (n + 7) // 8)
    except (zlib.error, ValueError, TypeError) as exc:
        raise WireError(f"the corrected mask's bits are not base64 zlib data ({exc.__class__.__name__})") from exc
    if len(packed) != (n + 7) // 8:
        raise WireError(f"the corrected mask holds {len(packed) * 8} bits, its shape needs {n}")
    return np.unpackbits(np.frombuffer(packed, dtype=np.uint8), count=n).astype(bool).reshape(shape)


def version_major(version: str) -> Optional[int]:
    try:
        return int(str(version).strip().split(".")[0])
    except ValueError:
        return None


def volume_mask_from(slice_masks: Dict[int, np.ndarray], stack_shape: Iterable[int], axis: int) -> np.ndarray:
    """uint8 (k, j, i) volume from per-slice masks along IJK `axis` — the engine's PropagationResult.volume_mask()."""
    stack = np.zeros(tuple(stack_shape), dtype=np.uint8)
    for s, m in slice_masks.items():
        stack[s] = m
    return np.ascontiguousarray(np.moveaxis(stack, 0, 2 - axis))


# How a prompt reached the model (PropagationResult.prompt): the key, and the words shown to the user.
PROMPT_KINDS = {
    "box": "box",
    "points": "clicks as point prompts",
    "box+points": "box and clicks as point prompts",
    "click-search": "box-only model: the click was turned into a box by search",
    "box+click-edits": "box-only model: the clicks edited the box's mask",
    "restart": "corrected slice",
    "refine": "refinement clicks on a propagated slice",
}


class MaskResultMixin:
    """What local (PropagationResult) and remote (RemoteResult) results share: needs slice_masks,
    stack_shape, axis, stopped, cancelled, encoder_passes and seconds."""

    @property
    def slices(self) -> List[int]:
        return sorted(self.slice_masks)

    def volume_mask(self) -> np.ndarray:
        """uint8 (k, j, i) volume: the written slices set, everything else 0."""
        return volume_mask_from(self.slice_masks, self.stack_shape, self.axis)

    def summary(self) -> dict:
        """Slices written, where and why each side stopped, encoder passes, seconds."""
        slices = self.slices
        return {
            "axis": "ijk"[self.axis],
            "slices": [slices[0], slices[-1]] if slices else [],
            "slices_written": len(slices),
            "stopped": self.stopped,
            "cancelled": self.cancelled,
            "encoder_passes": self.encoder_passes,
            "seconds": round(self.seconds, 2),
            "prompt": self.prompt,
        }
