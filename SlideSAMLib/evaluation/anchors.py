"""The two anchors every engine figure is judged against, with the engine's own predictor.

Both decode on the session's `WindowPredictor` (SlideSAMLib/predictor.py), so the encoder, the
pre-processing and the embedding cache are exactly the engine's; each slice's mask is the centre
output of its own window (logits > 0), with nothing of the engine's merging, constraints or stop rule.

chain   the naive box-from-previous-mask chain of MedSAMLite-style plugins: the prompt slice is decoded from
        the prompt box; each next slice, in both directions, from the bounding box of the previous slice's
        mask grown by CHAIN_MARGIN_MODEL_PX, until a mask comes out empty or the volume ends.
oracle  the reference label's tight box on every slice that holds the structure, each slice decoded on its
        own; slices without the structure stay empty.  What a perfect box-per-slice annotator would get.
"""
from typing import Dict, Sequence, Tuple

import numpy as np

from ..predictor import WindowPredictor
from ..propagation import grown_box
from ..training.prompts import tight_box

# The margin of the MedSAM CVPR 2024 LiteMedSAM inference script's 3D chain: get_bbox256(mask, bbox_shift=3),
# i.e. 3 pixels of the 256-pixel model input on each side of the previous slice's mask.
CHAIN_MARGIN_MODEL_PX = 3.0


def slice_pixels(geometry, model_px: float) -> Tuple[float, float]:
    """(x, y) slice pixels that make `model_px` pixels of the model's input (the chain's margin is set in those)."""
    rh, rw = geometry.resized
    return model_px * geometry.cols / rw, model_px * geometry.rows / rh


def _centre_mask(predictor: WindowPredictor, k: int, box: Sequence[float]) -> np.ndarray:
    return (predictor.predict(k, box=box).logits[1] > 0).numpy()


def chain(predictor: WindowPredictor, k0: int, box2d: Sequence[float]) -> Tuple[np.ndarray, Dict[str, int]]:
    """(mask stack (slices, rows, cols), {"up": last slice, "down": last slice}) of the naive chain from `box2d` on k0."""
    n = predictor.n_slices
    out = np.zeros(predictor.stack.shape, dtype=bool)
    margin = slice_pixels(predictor.geometry, CHAIN_MARGIN_MODEL_PX)
    predictor.encode([k0])
    out[k0] = _centre_mask(predictor, k0, box2d)
    ends = {}
    for name, d in (("up", 1), ("down", -1)):
        k, last = k0 + d, k0
        while 0 <= k < n:
            box = grown_box(out[k - d], margin)
            if box is None:
                break
            predictor.encode([k + d * i for i in range(predictor.batch_size)])
            out[k] = _centre_mask(predictor, k, box)
            if not out[k].any():
                break
            last, k = k, k + d
        ends[name] = last
    return out, ends


def oracle(predictor: WindowPredictor, truth: np.ndarray) -> np.ndarray:
    """Mask stack from the tight reference box on each slice of `truth` (slices, rows, cols) that holds the structure."""
    out = np.zeros(truth.shape, dtype=bool)
    ks = [int(k) for k in np.nonzero(truth.reshape(truth.shape[0], -1).any(axis=1))[0]]
    predictor.encode(ks)
    for k in ks:
        out[k] = _centre_mask(predictor, k, tight_box(truth[k]))
    return out
