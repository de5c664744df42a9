"""The image encoder on ONNX Runtime: the CPU fast path (same masks, see benchmarks/RESULTS.md §2).

The encoder is nearly all of a propagation's cost. On CPU, ONNX Runtime runs the exported encoder
markedly faster than eager PyTorch with embeddings equal to ~1e-6. The export is done once per set of
weights and kept in a cache folder (`SLIDESAM_CACHE_DIR`, default ~/.cache/slidesam); later processes
only load it.
"""
from __future__ import annotations  # torch is imported where used: the CLIs read ENCODER_BACKENDS without it

import hashlib
import logging
import os
import warnings
from pathlib import Path
from typing import Optional

import numpy as np

from .atomic import atomic_write
from .errors import CheckpointError

log = logging.getLogger("slidesam")

ENCODER_BACKENDS = ("auto", "torch", "onnx")
ENCODER_HELP = "image encoder backend (default auto: ONNX Runtime on CPU when installed, else PyTorch; env SLIDESAM_ENCODER)"
OPSET = 17


def cache_dir() -> Path:
    return Path(os.environ.get("SLIDESAM_CACHE_DIR") or Path.home() / ".cache" / "slidesam")


def weights_digest(module: torch.nn.Module) -> str:
    """Names, shapes and bytes of every parameter and buffer: a changed weight gets a new export."""
    h = hashlib.sha256()
    for name, tensor in list(module.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:20]


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class OnnxEncoder:
    """Callable like the torch encoder: float32 [B, 3, S, S] CPU tensor in, embeddings out."""

    def __init__(self, encoder: torch.nn.Module, img_size: int, threads: Optional[int] = None):
        import onnxruntime as ort
        import torch

        self.path = self._export(encoder, img_size)
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # The pre-planned activation block costs ~190 MB resident for no measurable speed (paired, 2 cores:
        # 1.01x, identical embeddings); benchmarks/RESULTS.md §2.
        options.enable_mem_pattern = False
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])

    @staticmethod
    def _export(encoder: torch.nn.Module, img_size: int) -> Path:
        import torch

        folder = cache_dir() / "onnx"
        path = folder / f"encoder-{weights_digest(encoder)}-{img_size}-opset{OPSET}.onnx"
        if path.is_file():
            return path
        example = torch.zeros(1, 3, img_size, img_size)

        def export(tmp: Path) -> None:
            with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the exporter's tracer warnings are about its internals, not the user's input
                torch.onnx.export(
                    encoder.cpu().eval(), (example,), str(tmp), input_names=["x"], output_names=["embedding"],
                    dynamic_axes={"x": {0: "batch"}, "embedding": {0: "batch"}}, opset_version=OPSET, dynamo=False,
                )

        try:
            folder.mkdir(parents=True, exist_ok=True)
            log.info("SlideSAM: exporting the image encoder for ONNX Runtime once, to %s", path)
            return atomic_write(path, export)  # a concurrent process sees the whole file or none
        except OSError as exc:
            raise CheckpointError(f"cannot write the ONNX encoder to {folder} ({exc}): set SLIDESAM_CACHE_DIR to a writable folder, or use --encoder torch") from exc

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        import torch

        array = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        # One window per run: the traced TinyViT keeps batch-1 reshapes (and on CPU a batch is no faster).
        return torch.from_numpy(np.concatenate([self.session.run(None, {"x": array[n : n + 1]})[0] for n in range(len(array))]))
