"""Frozen-encoder training: each training window's image embedding, computed once and kept on disk.

The embeddings are made by the engine's own `WindowPredictor` (same normalisation, geometry and
encoder backend as a propagation), so the decoder trains on exactly what it will see at inference.
Layout: <cache>/train-embeddings/<encoder weights digest>-<img size>-<backend>/<volume digest>/kNNNN.npy
(float16 [256, 64, 64]; the digest of a volume covers its voxels, its shape and the modality used).
Every file is written atomically, so an interrupted pass resumes where it stopped.
"""
import hashlib
import sys
import time
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import torch

from ..atomic import atomic_write
from ..onnx_encoder import cache_dir, weights_digest
from ..predictor import WindowPredictor
from ..preprocess import detect_modality

SUBDIR = "train-embeddings"
AXIS = 2  # IJK k = numpy axis 0: the axis a propagation slides along by default


def volume_digest(image: np.ndarray, modality: str) -> str:
    h = hashlib.sha256()
    h.update(f"{image.shape}|{image.dtype}|{modality}".encode())
    h.update(np.ascontiguousarray(image).tobytes())
    return h.hexdigest()[:20]


class EmbeddingStore:
    """Embeddings of the windows of labelled volumes for one model (its encoder weights and backend)."""

    def __init__(self, model, root: Optional[Path] = None):
        self.model = model
        tag = f"{weights_digest(model.net.image_encoder)}-{model.spec.img_size}-{model.encoder_backend}"
        self.root = Path(root) if root is not None else cache_dir() / SUBDIR / tag
        self._predictors = {}
        self.computed = 0  # encoder passes run by this store
        self.seconds = 0.0

    def predictor(self, volume) -> WindowPredictor:
        """The engine's predictor of `volume` (its geometry maps label slices and boxes to the model frame)."""
        key = id(volume)
        if key not in self._predictors:
            modality = detect_modality(volume.image) if volume.modality == "auto" else volume.modality
            p = WindowPredictor(self.model, volume.image, AXIS, modality)
            p.digest = volume_digest(volume.image, modality)
            self._predictors[key] = p
        return self._predictors[key]

    def path(self, volume, k: int) -> Path:
        return self.root / self.predictor(volume).digest / f"k{k:04d}.npy"

    def ensure(self, volume, slices: Iterable[int], log=None) -> int:
        """Encode the windows among `slices` not on disk yet; returns how many were encoded."""
        p = self.predictor(volume)
        todo = [k for k in sorted(set(slices)) if not self.path(volume, k).is_file()]
        if not todo:
            return 0
        folder = self.path(volume, todo[0]).parent
        folder.mkdir(parents=True, exist_ok=True)
        for n, k in enumerate(todo):
            t0 = time.perf_counter()
            p.encode([k])
            emb = p.cache.get((p.cache_key, k)).float().cpu().numpy().astype(np.float16)
            p.cache.clear()  # the store is the cache: keep no copy in memory
            atomic_write(self.path(volume, k), lambda tmp: np.save(tmp, emb))
            self.computed += 1
            self.seconds += time.perf_counter() - t0
            if log is not None:
                log(f"embedded {volume.name} window {k} ({n + 1}/{len(todo)}, {self.seconds:.0f} s so far)")
        return len(todo)

    def load(self, volume, k: int) -> torch.Tensor:
        return torch.from_numpy(np.load(self.path(volume, k)).astype(np.float32))


def stderr_log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
