"""The one request / result contract of every front end: CLI, server routes, client, Slicer job.

    request = SegmentRequest.of(box=((40, 30, 60), (90, 80, 60)), direction="up")
    result = session.run(request)          # InProcessSession (engine here) or client.RemoteSession (a server)
    result.volume_mask(); result.info[0].iou; result.stopped

Requests (voxel IJK prompts, as `Session.segment` / `Session.restart` take them):
  SegmentRequest  box, points, axis, direction, slice_range
  RestartRequest  mask (a 2D slice, packed as wire.encode_mask2d), slice_index, axis, direction, slice_range, largest_area
  RefineRequest   mask (the slice's current mask), slice_index, points (include / exclude clicks on it), axis, slice_range, largest_area,
                  current (the result's masks of the range: a local refinement)
  CancelRequest   job
  closing a session has no body: `close()` on the session (DELETE /sessions/{id} on a server)
Result: slices and their masks, per-slice info, stop reasons, prompt kind, cancelled, seconds, encoder passes; a refine's
span (the slices the caller replaces).
While a request runs: progress(fraction, message), cancel() -> bool, and slice_done(index, mask) with each slice's
mask as it is accepted (a front end shows the run as it goes; the Result is what is written).

The request classes are plain dataclasses: the server's FastAPI routes validate JSON bodies straight into
them (`__pydantic_config__` forbids unknown fields; pydantic is not imported here), `to_json()` is the
body the client sends.  Standard library + numpy only (no torch): the Slicer side imports this.
"""
from dataclasses import asdict, dataclass, field
from typing import Callable, Dict, List, Literal, Optional, Tuple, Union

import numpy as np

from .errors import InputError
from .wire import MaskResultMixin, WireError, decode_mask2d, decode_masks, encode_mask2d, encode_masks

Ijk = Tuple[float, float, float]
ProgressFn = Callable[[float, str], None]
CancelFn = Callable[[], bool]
SliceDoneFn = Callable[[int, np.ndarray], None]  # (slice index, bool mask) as propagation accepts each slice (propagation.SliceDoneFn)
MAX_POINTS = 256
_STRICT = {"extra": "forbid"}


def _axis(axis, optional: bool):
    if axis is None and optional:
        return None
    if isinstance(axis, bool) or axis not in (0, 1, 2):
        raise InputError(f"slice axis {axis} is not 0 (i), 1 (j) or 2 (k)")
    return int(axis)


def _range(slice_range) -> Optional[Tuple[int, int]]:
    if slice_range is None:
        return None
    values = tuple(slice_range)
    if len(values) != 2:
        raise InputError(f"slice range {values} is not (first, last)")
    return int(values[0]), int(values[1])


def _where(request) -> None:
    """A restart's or refine's largest_area, axis and slice range, checked and normalised in place."""
    if request.largest_area is not None and request.largest_area < 0:
        raise InputError(f"largest_area {request.largest_area} is not a pixel count (>= 0)")
    request.axis = _axis(request.axis, optional=False)
    request.slice_range = _range(request.slice_range)


def _ijk(p, what: str) -> Ijk:
    values = tuple(float(v) for v in p)
    if len(values) != 3:
        raise InputError(f"{what} {tuple(p)} is not an (i, j, k) voxel coordinate")
    return values


@dataclass
class PointPrompt:
    __pydantic_config__ = _STRICT
    ijk: Ijk
    include: bool = True


@dataclass
class SegmentRequest:
    """A box and/or clicks on one slice, propagated along `axis` (default: the slice the prompt lies on)."""

    __pydantic_config__ = _STRICT
    box: Optional[Tuple[Ijk, Ijk]] = None  # two opposite corners (i, j, k) in voxel coordinates
    points: List[PointPrompt] = field(default_factory=list)
    axis: Optional[int] = None
    direction: Literal["both", "up", "down"] = "both"
    slice_range: Optional[Tuple[int, int]] = None  # inclusive (first, last)

    def __post_init__(self):
        if self.direction not in ("both", "up", "down"):
            raise InputError(f"direction '{self.direction}' is not one of both, up, down")
        if len(self.points) > MAX_POINTS:
            raise InputError(f"{len(self.points)} clicks: at most {MAX_POINTS} per prompt")
        self.axis = _axis(self.axis, optional=True)
        self.slice_range = _range(self.slice_range)

    @classmethod
    def of(cls, box=None, points=(), axis=None, direction="both", slice_range=None) -> "SegmentRequest":
        """From Python values: box = (corner, corner), points = [((i, j, k), include), ...]."""
        if box is not None and len(box) != 2:
            raise InputError("a box needs exactly two corners")
        return cls(
            box=tuple(_ijk(c, "box corner") for c in box) if box is not None else None,
            points=[PointPrompt(_ijk(p, "click"), bool(inc)) for p, inc in points],
            axis=axis, direction=direction, slice_range=slice_range,
        )

    def to_json(self) -> dict:
        return asdict(self)

    def session_kwargs(self) -> dict:
        """Keyword arguments of `Session.segment`."""
        return {"box": self.box, "points": [(p.ijk, p.include) for p in self.points], "axis": self.axis,
                "direction": self.direction, "slice_range": self.slice_range}


@dataclass
class Mask2D:
    __pydantic_config__ = _STRICT
    shape: Tuple[int, int]
    bits: str  # base64 of zlib of numpy packbits of the row-major mask (wire.encode_mask2d)

    @classmethod
    def of(cls, mask: np.ndarray) -> "Mask2D":
        try:
            packed = encode_mask2d(mask)
        except WireError as exc:
            raise InputError(str(exc)) from None
        return cls(shape=tuple(packed["shape"]), bits=packed["bits"])

    def decode(self, max_pixels: int) -> np.ndarray:
        return decode_mask2d({"shape": list(self.shape), "bits": self.bits}, max_pixels)


@dataclass
class RestartRequest:
    """Propagate again from a corrected 2D mask on `slice_index` towards `direction`."""

    __pydantic_config__ = _STRICT
    mask: Mask2D
    slice_index: int
    axis: int = 2
    direction: Literal["up", "down"] = "up"
    slice_range: Optional[Tuple[int, int]] = None
    largest_area: Optional[int] = None  # pixels of the corrected structure's largest slice along `axis`

    def __post_init__(self):
        if self.direction not in ("up", "down"):
            raise InputError(f"restart direction '{self.direction}' must be up or down")
        _where(self)

    @classmethod
    def of(cls, slice_mask, slice_index, axis=2, direction="up", slice_range=None, largest_area=None) -> "RestartRequest":
        return cls(mask=Mask2D.of(slice_mask), slice_index=int(slice_index), axis=axis, direction=direction, slice_range=slice_range,
                   largest_area=None if largest_area is None else int(largest_area))

    def to_json(self) -> dict:
        body = asdict(self)
        if self.largest_area is None:
            del body["largest_area"]  # only when given: a server that predates the field still accepts the request
        return body

    def session_args(self, max_pixels: int) -> Tuple[tuple, dict]:
        """(args, kwargs) of `Session.restart`; the mask is unpacked here, never larger than `max_pixels`."""
        return (self.mask.decode(max_pixels), self.slice_index), {
            "axis": self.axis, "direction": self.direction, "slice_range": self.slice_range, "largest_area": self.largest_area}


@dataclass
class CancelRequest:
    __pydantic_config__ = _STRICT
    job: Optional[str] = None  # default: every running job of the session


@dataclass
class RefineRequest:
    """Correct slice `slice_index` of a propagated result with include / exclude clicks, then propagate from it both ways.

    `mask`: the result's current mask of that slice; the clicks' checks (at least one, on that slice, inside the
    volume) are `Session.refine`'s. `current`: the result's masks of the other slices of `slice_range` (a missing
    slice is empty); given, the refinement is local (each side stops where the new mask agrees with the current one).
    The Result's `span` says which slices the caller replaces with its masks (`session.refine_span`)."""

    __pydantic_config__ = _STRICT
    mask: Mask2D
    slice_index: int
    points: List[PointPrompt]
    axis: int = 2
    slice_range: Optional[Tuple[int, int]] = None
    largest_area: Optional[int] = None  # as RestartRequest's
    current: Optional[Dict[int, Mask2D]] = None  # slice index -> the result's mask there

    def __post_init__(self):
        if len(self.points) > MAX_POINTS:
            raise InputError(f"{len(self.points)} refinement clicks: at most {MAX_POINTS} per request")
        _where(self)
        for s in self.current or {}:
            if isinstance(s, bool) or not isinstance(s, int) or s < 0:
                raise InputError(f"current names slice {s!r}, not a slice index (an integer >= 0): send {{index: mask}} of the result's slices")

    def check_current(self, shape_kji) -> None:
        """Refuse, before any mask is unpacked, a `current` with more slices than the volume has along `axis` or a slice
        outside it (each mask is also capped at the largest slice, `largest_slice_pixels`)."""
        if self.current is None:
            return
        n = int(shape_kji[2 - self.axis])
        if len(self.current) > n:
            raise InputError(f"current holds {len(self.current)} slices, the volume has {n} along {'ijk'[self.axis]}: send at most one mask per slice")
        outside = sorted(s for s in self.current if s >= n)
        if outside:
            raise InputError(f"current names slice {outside[0]}, outside the volume (0..{n - 1} along {'ijk'[self.axis]}): send the masks of its slices only")

    @classmethod
    def of(cls, slice_mask, slice_index, points, axis=2, slice_range=None, largest_area=None, current=None) -> "RefineRequest":
        """From Python values: points = [((i, j, k), include), ...] in voxel IJK; current = {index: 2D mask} or None."""
        return cls(mask=Mask2D.of(slice_mask), slice_index=int(slice_index), points=[PointPrompt(_ijk(p, "click"), bool(inc)) for p, inc in points],
                   axis=axis, slice_range=slice_range, largest_area=None if largest_area is None else int(largest_area),
                   current=None if current is None else {int(s): Mask2D.of(m) for s, m in current.items()})

    def to_json(self) -> dict:
        body = asdict(self)
        if self.current is None:
            del body["current"]
        return body

    def session_args(self, max_pixels: int) -> Tuple[tuple, dict]:
        """(args, kwargs) of `Session.refine`; the masks are unpacked here, none larger than `max_pixels`."""
        current = None if self.current is None else {s: m.decode(max_pixels) for s, m in self.current.items()}
        return (self.slice_index, [(p.ijk, p.include) for p in self.points], self.mask.decode(max_pixels)), {
            "axis": self.axis, "slice_range": self.slice_range, "largest_area": self.largest_area, "current": current}

    def run_on(self, session, progress: Optional[ProgressFn] = None, cancel: Optional[CancelFn] = None, model: str = "",
               slice_done: Optional[SliceDoneFn] = None) -> "Result":
        """`session.refine` (an engine Session) with this request, the Result's `span` set: the engine's one answer
        to which slices the caller replaces (in-process and on the server alike); slice_done as `Session.refine`'s."""
        from .session import refine_span  # the engine side: torch is loaded there already

        self.check_current(session.volume.shape)
        args, kwargs = self.session_args(largest_slice_pixels(session.volume.shape))
        result = Result.of(session.refine(*args, progress=progress, cancel=cancel, slice_done=slice_done, **kwargs), model)
        result.span = refine_span(result, self.slice_range)
        return result


Request = Union[SegmentRequest, RestartRequest, RefineRequest]
ROUTES = {SegmentRequest: "segment", RestartRequest: "restart", RefineRequest: "refine"}  # the server's POST /sessions/{id}/<route> of each request


class SliceRecord(dict):
    """One slice's scores (index, iou, stability, area, overlap, growth, ..., accepted, reason): a dict, also readable as attributes."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def as_dict(self) -> dict:
        return dict(self)


@dataclass
class Result(MaskResultMixin):
    """What a segment or restart gave, the same whether the engine ran here or in a server."""

    axis: int  # IJK slice axis
    stack_shape: Tuple[int, int, int]  # (slices, rows, cols) along that axis
    slice_masks: Dict[int, np.ndarray] = field(default_factory=dict)  # index -> bool (rows, cols)
    info: List[SliceRecord] = field(default_factory=list)
    stopped: Dict[str, str] = field(default_factory=dict)  # "up"/"down" -> why propagation ended there
    cancelled: bool = False
    encoder_passes: int = 0
    seconds: float = 0.0
    prompt: str = ""  # how the prompt reached the model: one of wire.PROMPT_KINDS
    model: str = ""
    job: str = ""
    span: Optional[Tuple[int, int]] = None  # a refine's (first, last) slices that the caller replaces with slice_masks (a missing one: cleared)

    @classmethod
    def of(cls, result, model: str = "") -> "Result":
        """From the engine's PropagationResult (or a Result)."""
        if isinstance(result, Result):
            return result
        return cls(
            axis=int(result.axis), stack_shape=tuple(int(v) for v in result.stack_shape), slice_masks=dict(result.slice_masks),
            info=[SliceRecord(i.as_dict()) for i in result.info], stopped=dict(result.stopped), cancelled=bool(result.cancelled),
            encoder_passes=int(result.encoder_passes), seconds=float(result.seconds), prompt=result.prompt, model=model,
        )

    def to_json(self) -> dict:
        """The server's result line."""
        slices, bits = encode_masks(self.slice_masks)
        return {
            "type": "result", "axis": int(self.axis), "stack_shape": [int(v) for v in self.stack_shape], "slices": slices, "masks": bits,
            "info": [dict(i) for i in self.info], "stopped": dict(self.stopped), "cancelled": bool(self.cancelled),
            "encoder_passes": int(self.encoder_passes), "seconds": float(self.seconds), "prompt": self.prompt, "model": self.model,
            **({"span": [int(v) for v in self.span]} if self.span is not None else {}),
        }

    @classmethod
    def from_json(cls, event: dict, job: str = "") -> "Result":
        shape = tuple(int(v) for v in event["stack_shape"])
        return cls(
            axis=int(event["axis"]), stack_shape=shape, slice_masks=decode_masks(event["slices"], event["masks"], shape[1:]),
            info=[SliceRecord(i) for i in event["info"]], stopped=dict(event["stopped"]), cancelled=bool(event["cancelled"]),
            encoder_passes=int(event["encoder_passes"]), seconds=float(event["seconds"]), prompt=event.get("prompt", ""),
            model=event.get("model", ""), job=job, span=tuple(int(v) for v in event["span"]) if event.get("span") is not None else None,
        )


def largest_slice_pixels(shape_kji) -> int:
    """Pixels of the volume's largest slice along any axis: no 2D mask of a request may be larger."""
    nk, nj, ni = (int(v) for v in shape_kji)
    return max(nj * ni, nk * ni, nk * nj)


class ContractSession:
    """What every engine session offers: `run(request, progress, cancel) -> Result`, `close()`, and
    `segment` / `restart` / `refine` with `Session`'s arguments (voxel IJK prompts), built on `run`."""

    def run(self, request: Request, progress: Optional[ProgressFn] = None, cancel: Optional[CancelFn] = None,
            slice_done: Optional[SliceDoneFn] = None) -> Result:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def segment(self, box=None, points=(), axis=None, direction="both", slice_range=None, progress=None, cancel=None) -> Result:
        return self.run(SegmentRequest.of(box, points, axis, direction, slice_range), progress, cancel)

    def restart(self, slice_mask, slice_index, axis=2, direction="up", slice_range=None, progress=None, cancel=None, largest_area=None) -> Result:
        return self.run(RestartRequest.of(slice_mask, slice_index, axis, direction, slice_range, largest_area), progress, cancel)

    def refine(self, slice_index, points, slice_mask, axis=2, slice_range=None, largest_area=None, progress=None, cancel=None, current=None) -> Result:
        """As `Session.refine` (same argument order): clicks on a propagated slice, then propagation from it both ways;
        `result.span`: the slices the caller replaces."""
        return self.run(RefineRequest.of(slice_mask, slice_index, points, axis, slice_range, largest_area, current), progress, cancel)


class InProcessSession(ContractSession):
    """A `Session` in this process behind the contract (scripts and tests: `SlideSAMLogic(model=...)`)."""

    def __init__(self, session, model: str = ""):
        self.session, self.model = session, model

    def run(self, request: Request, progress: Optional[ProgressFn] = None, cancel: Optional[CancelFn] = None,
            slice_done: Optional[SliceDoneFn] = None) -> Result:
        if isinstance(request, SegmentRequest):
            result = self.session.segment(progress=progress, cancel=cancel, slice_done=slice_done, **request.session_kwargs())
        elif isinstance(request, RefineRequest):
            return request.run_on(self.session, progress, cancel, self.model, slice_done)
        else:
            args, kwargs = request.session_args(largest_slice_pixels(self.session.volume.shape))
            result = self.session.restart(*args, progress=progress, cancel=cancel, slice_done=slice_done, **kwargs)
        return Result.of(result, self.model)

    def close(self) -> None:
        """Nothing to free beyond what garbage collection frees: the embeddings live in the shared cache."""
