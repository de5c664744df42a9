"""Window predictor: one volume, one slice axis; encodes windows lazily and decodes prompts.

The encoder is almost all of the cost, so embeddings are computed only for the
windows asked for, in small batches, and kept in an `EmbeddingCache` that the
owner (a `Session`) shares across prompts, restarts and segments.
"""
import itertools
from dataclasses import dataclass
from typing import Hashable, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .cache import EmbeddingCache
from .checkpoint import SlideSAMModel
from .preprocess import Normalisation, NormalisedStack, SliceGeometry, logits_to_slice, normalisation_for, window_to_input

_CACHE_OWNERS = itertools.count(1)


def new_cache_owner() -> int:
    """A number no other cache owner (a Session, a lone predictor) of this process has had: unlike id(), never
    reused after its owner is freed, so a new Session cannot read a dead one's embeddings from a shared cache."""
    return next(_CACHE_OWNERS)


# The stability score's threshold offset of the authors' inference filters (Slide-SAM's code: offset 1.0).
STABILITY_OFFSET = 1.0


@dataclass
class WindowPrediction:
    """Masks for slices (k-1, k, k+1) of one window, as logits on the slice grid."""

    center: int
    logits: torch.Tensor  # [3, rows, cols] float32, CPU; order: k-1, k, k+1
    iou: float  # predicted IoU of the chosen candidate
    stability: float  # SAM's stability score of the centre mask


def stability_score(logits: torch.Tensor, offset: float = STABILITY_OFFSET) -> float:
    inter = (logits > offset).sum().item()
    union = (logits > -offset).sum().item()
    return inter / union if union else 0.0


def default_batch_size(device: torch.device) -> int:
    return 8 if device.type == "cuda" else 1


class WindowPredictor:
    def __init__(
        self,
        model: SlideSAMModel,
        volume: np.ndarray,
        axis: int,
        modality: str = "auto",
        cache: Optional[EmbeddingCache] = None,
        cache_owner: Optional[Hashable] = None,
        normalisation: Optional[Normalisation] = None,
        batch_size: Optional[int] = None,
    ):
        """`volume` is a numpy (z, y, x) array; `axis` is the IJK slice axis (2 = k = numpy axis 0).
        `cache_owner`: whose windows these are in a shared `cache` (default: a new owner, see `new_cache_owner`)."""
        self.model = model
        self.axis = axis
        norm = normalisation if normalisation is not None else normalisation_for(volume, model.spec.preprocessing, modality)
        # Stack: slice axis first, then rows/cols of the slice as they appear in the array.
        self.stack = NormalisedStack(volume, axis, norm)
        self.n_slices = self.stack.shape[0]
        rows, cols = self.stack.shape[1:]
        self.geometry = SliceGeometry(rows, cols, model.spec.img_size, keep_aspect=model.spec.preprocessing == "litemedsam")
        self.cache = cache if cache is not None else EmbeddingCache()
        self.cache_owner = cache_owner if cache_owner is not None else new_cache_owner()
        self.batch_size = batch_size or default_batch_size(model.device)
        self.encoder_passes = 0

    @property
    def cache_key(self) -> tuple:
        """The cache key of this predictor's windows (with the window index): owner, weights and encoder, axis."""
        return (self.cache_owner, self.model.embedding_identity, self.axis)

    # -- encoding -----------------------------------------------------------
    def window(self, k: int) -> np.ndarray:
        """Slices (k-1, k, k+1), the edge slice replicated at the volume's ends."""
        idx = np.clip([k - 1, k, k + 1], 0, self.n_slices - 1)
        return self.stack[idx]

    def is_encoded(self, k: int) -> bool:
        return (self.cache_key, k) in self.cache

    def encode(self, indices: Iterable[int]) -> None:
        """Encode the windows among `indices` that are not cached yet, `batch_size` at a time."""
        todo = [k for k in dict.fromkeys(indices) if 0 <= k < self.n_slices and not self.is_encoded(k)]
        for start in range(0, len(todo), self.batch_size):
            batch = todo[start : start + self.batch_size]
            x = torch.stack([window_to_input(self.window(k), self.geometry, self.model.spec.preprocessing) for k in batch])
            emb = self.model.encode(x)
            self.encoder_passes += len(batch)
            for k, e in zip(batch, emb):
                self.cache.put((self.cache_key, k), e)

    def embedding(self, k: int) -> torch.Tensor:
        emb = self.cache.get((self.cache_key, k))
        if emb is None:
            self.encode([k])
            emb = self.cache.get((self.cache_key, k))
        return emb

    # -- decoding -----------------------------------------------------------
    def predict(
        self,
        k: int,
        box: Optional[Sequence[float]] = None,
        points: Sequence[Tuple[float, float, bool]] = (),
    ) -> WindowPrediction:
        """Decode one prompt on window k.  box = (x0, y0, x1, y1) and points (x, y, include) in slice pixels."""
        net, dev = self.model.net, self.model.device
        emb = self.embedding(k).to(dev, torch.float32).unsqueeze(0)
        boxes = coords = labels = None
        if box is not None:
            corners = self.geometry.to_model(np.array([[box[0], box[1]], [box[2], box[3]]]))
            boxes = torch.as_tensor(corners.reshape(1, 4), dtype=torch.float32, device=dev)
        if points:
            xy = self.geometry.to_model(np.array([[p[0], p[1]] for p in points]))
            coords = torch.as_tensor(xy[None], dtype=torch.float32, device=dev)
            labels = torch.as_tensor([[1 if p[2] else 0 for p in points]], dtype=torch.int64, device=dev)
        multimask = net.spec.multimask
        with torch.inference_mode():
            low, iou = net.decode(emb, boxes=boxes, points=(coords, labels) if coords is not None else None, multimask=multimask)
        low = low[0].float().cpu()
        iou = iou[0].float().cpu()
        best = int(torch.argmax(iou)) if multimask else 0
        chosen = low[best * 3 : best * 3 + 3]
        logits = logits_to_slice(chosen, self.geometry)
        return WindowPrediction(center=k, logits=logits, iou=float(iou[best]), stability=stability_score(chosen[1]))
