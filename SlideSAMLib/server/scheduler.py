"""Fair sharing of one model between sessions: a FIFO lock taken around each network call.

The engine calls the model once per encoder batch (`SlideSAMModel.encode`, PyTorch or ONNX Runtime) and the
network once per window decode.  Wrapping those calls (and nothing bigger) in a first-come-first-served lock makes concurrent
propagations take turns window by window: a long or cancelled propagation never holds the
model for more than its current window, and no request can starve another.
"""
import dataclasses
import threading
from collections import deque

from ..checkpoint import SlideSAMModel


class FairLock:
    """A lock granted strictly in arrival order (threading.Lock gives no ordering guarantee)."""

    def __init__(self):
        self._cond = threading.Condition()
        self._queue = deque()
        self._held = False
        self.grants = 0  # how many times it was taken (for /status and tests)

    def acquire(self) -> None:
        me = object()
        with self._cond:
            self._queue.append(me)
            while self._held or self._queue[0] is not me:
                self._cond.wait()
            self._queue.popleft()
            self._held = True
            self.grants += 1

    def release(self) -> None:
        with self._cond:
            self._held = False
            self._cond.notify_all()

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()

    @property
    def waiting(self) -> int:
        with self._cond:
            return len(self._queue)


class _GuardedModule:
    """Calls go through the lock; every other attribute is the wrapped module's."""

    def __init__(self, module, lock: FairLock):
        self._module = module
        self._lock = lock

    def __call__(self, *args, **kwargs):
        with self._lock:
            return self._module(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._module, name)


class GuardedNet:
    """The network as the engine's decoder sees it (prompt_encoder, mask_decoder, spec, ...), each call locked.
    The image encoder is reached unguarded here: `SharedModel.encode` takes the lock around it, whichever backend."""

    _GUARDED = ("prompt_encoder", "mask_decoder")

    def __init__(self, net, lock: FairLock):
        self._net = net
        self._lock = lock
        for name in self._GUARDED:
            setattr(self, name, _GuardedModule(getattr(net, name), lock))

    def decode(self, *args, **kwargs):
        """The network's prompt -> mask decode as one turn of the lock."""
        with self._lock:
            return self._net.decode(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._net, name)


@dataclasses.dataclass
class SharedModel(SlideSAMModel):
    """The loaded model with every network call taking turns through `lock`; the same weights, encoder backend
    and embedding identity as the model it was made from."""

    lock: FairLock = None

    def encode(self, batch):
        with self.lock:
            return super().encode(batch)


def shared_model(model: SlideSAMModel, lock: FairLock) -> SlideSAMModel:
    """A SlideSAMModel over the same weights, with the same encoder (`slidesam serve --encoder`), whose network
    calls take turns through `lock`."""
    fields = {f.name: getattr(model, f.name) for f in dataclasses.fields(SlideSAMModel)}
    return SharedModel(**{**fields, "net": GuardedNet(model.net, lock)}, lock=lock)
