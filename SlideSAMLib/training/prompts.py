"""Prompt simulation in model-input pixel coordinates (x = column, y = row).

Boxes are the tight box of the centre-slice mask, each side shifted by Gaussian noise
(a fraction of the box size, capped) and grown by a small random margin, as the
propagation itself prompts with a slightly grown box.  Include clicks are random mask
pixels or the mask's deepest interior pixel (where annotators click); exclude clicks are
pixels just outside the mask, inside its grown box.
"""
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np

BOX_JITTER_FRACTION = 0.03  # std of each side's shift, as a fraction of the mean box side
BOX_JITTER_CAP = 0.1  # the shift never exceeds this fraction of the mean box side
BOX_MAX_MARGIN = 4.0  # extra random growth on each side, model pixels


@dataclass
class Prompt:
    box: Optional[Tuple[float, float, float, float]] = None  # x0, y0, x1, y1
    points: List[Tuple[float, float, int]] = field(default_factory=list)  # (x, y, 1 include / 0 exclude)

    @property
    def kind(self) -> str:
        if self.box is not None and self.points:
            return "box+points"
        return "box" if self.box is not None else "points"


def tight_box(mask: np.ndarray) -> Tuple[float, float, float, float]:
    ys, xs = np.nonzero(mask)
    return float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())


def jitter_box(box, shape, rng: np.random.Generator, fraction=BOX_JITTER_FRACTION, cap=BOX_JITTER_CAP, margin=BOX_MAX_MARGIN):
    """The one box jitter (training prompts and eval's "jitter-N" runs): (x0, y0, x1, y1) in pixels of an image of
    `shape` (rows, cols).

    Each side moves by a seeded Gaussian shift (std `fraction` of the mean box side, clipped at `cap` of it), then
    grows outwards by a uniform random margin in [0, `margin`) pixels (margin 0: no growth, and no draw from `rng`,
    so a caller without growth gets the same boxes from the same seed). The box is clipped to the image and keeps
    at least 1 pixel of width and height.
    """
    x0, y0, x1, y1 = box
    side = 0.5 * ((x1 - x0 + 1) + (y1 - y0 + 1))
    b = np.array(box, dtype=float) + np.clip(rng.normal(0.0, fraction * side, 4), -cap * side, cap * side)
    if margin:
        b += rng.uniform(0.0, margin, 4) * np.array([-1, -1, 1, 1])
    rows, cols = shape
    b[[0, 2]] = np.clip(b[[0, 2]], 0, cols - 1)
    b[[1, 3]] = np.clip(b[[1, 3]], 0, rows - 1)
    if b[2] - b[0] < 1:
        b[2] = min(cols - 1, b[0] + 1)
    if b[3] - b[1] < 1:
        b[3] = min(rows - 1, b[1] + 1)
    return tuple(float(v) for v in b)


def jittered_box(mask: np.ndarray, rng: np.random.Generator, jitter=BOX_JITTER_FRACTION, cap=BOX_JITTER_CAP, margin=BOX_MAX_MARGIN):
    """A training box prompt: the mask's tight box, jittered and grown (`jitter_box`)."""
    return jitter_box(tight_box(mask), mask.shape, rng, jitter, cap, margin)


def deepest_point(mask: np.ndarray) -> Tuple[int, int]:
    """(x, y) of a mask pixel farthest from the background: a click 'in the middle' of the structure.

    Farthest in city-block steps (scipy's chamfer distance transform; outside the image counts as background);
    among those pixels, the one nearest their centroid.
    """
    from scipy import ndimage

    m = np.asarray(mask, bool)
    if not m.any():
        raise ValueError("deepest_point of an empty mask")
    depth = ndimage.distance_transform_cdt(np.pad(m, 1), metric="taxicab")[1:-1, 1:-1]
    core = depth == depth.max()
    ys, xs = np.nonzero(core)
    i = int(np.argmin((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2))
    return int(xs[i]), int(ys[i])


def random_inside(mask: np.ndarray, rng: np.random.Generator, n: int) -> List[Tuple[float, float]]:
    ys, xs = np.nonzero(mask)
    idx = rng.integers(0, xs.size, n)
    return [(float(xs[i]), float(ys[i])) for i in idx]


def random_outside_near(mask: np.ndarray, rng: np.random.Generator, n: int, grow: int = 8) -> List[Tuple[float, float]]:
    """Background pixels inside the mask's box grown by `grow` pixels (where a wrong leak would be)."""
    x0, y0, x1, y1 = (int(v) for v in tight_box(mask))
    rows, cols = mask.shape
    ya, yb, xa, xb = max(0, y0 - grow), min(rows, y1 + grow + 1), max(0, x0 - grow), min(cols, x1 + grow + 1)
    ys, xs = np.nonzero(~mask[ya:yb, xa:xb])
    if not xs.size:
        return []
    idx = rng.integers(0, xs.size, n)
    return [(float(xs[i] + xa), float(ys[i] + ya)) for i in idx]


def simulate(mask: np.ndarray, rng: np.random.Generator, point_fraction: float = 0.5, deepest=None) -> Prompt:
    """A random prompt for a non-empty centre mask (model-input frame).

    With probability 1 - point_fraction a jittered box (sometimes with clicks); otherwise clicks only:
    one to three include clicks (the first one often the deepest interior point) and up to two exclude clicks.
    """
    mask = mask.astype(bool)
    if rng.random() >= point_fraction:
        prompt = Prompt(box=jittered_box(mask, rng))
        if point_fraction > 0 and rng.random() < 0.2:
            prompt.points = [(x, y, 1) for x, y in random_inside(mask, rng, 1)]
        return prompt
    n_inc = int(rng.choice([1, 1, 2, 3]))
    inc = random_inside(mask, rng, n_inc)
    if rng.random() < 0.5:
        cx, cy = deepest if deepest is not None else deepest_point(mask)
        inc[0] = (float(cx), float(cy))
    n_exc = int(rng.choice([0, 0, 1, 2]))
    exc = random_outside_near(mask, rng, n_exc) if n_exc else []
    return Prompt(points=[(x, y, 1) for x, y in inc] + [(x, y, 0) for x, y in exc])
