"""NOT SHIPPED (benchmarks/RESULTS_clicks.md §10): clicks_step5_guarded.py's step 5, allowed only where the choice
looks leaked past the structure (`_looks_leaked`), as a subclass overriding the choice (`ClickSearch._choose`).

Loaded by bench_clicks_pickfeat.py --replay, bench_clicks_slice.py --baseline and bench_clicks_3d.py --variant
(`load_clicks`). On the 377 dumped training clicks it loses none by > 0.02 (the 120: click / box 0.937 -> 0.967,
32 -> 29 below 0.7 x; set C: 0.696 -> 0.710 mean click, 3 better), but its gate was one of 2 of 108 that passed the
leave-one-folder-out search, where a random feature passes 20 % of the time (`--chance`), and set C does not test it
(the guard alone also loses nothing there): chance-level evidence, so it stays out of clicks.py.
"""
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_clicks_slice import load_clicks  # noqa: E402

from SlideSAMLib.clicks import _edge  # noqa: E402

_guarded = load_clicks(Path(__file__).with_name("clicks_step5_guarded.py"), "_clicks_step5_guarded")
pair_features, replace_probability = _guarded.pair_features, _guarded.replace_probability

# The 90th percentile of the intensity gradient inside the choice (its mask eroded by the ring's width) at most
# LEAK_INNER_EDGE_MAX x the mean gradient along its outline. Chosen on the training folders (bench_clicks_pickfeat.py,
# §10): the one pick gate of 216 searched on the 120 structures and 143 large-organ clicks (sets A, B) whose
# threshold, chosen leave-one-folder-out, lost no large-organ click (B's two spleens 0.442 -> 0.077 and 0.488 -> 0.222
# under the guard alone; their choices 1.73, 1.74); the cut lies between 1.649 (example_ct adrenal_gland_right, a gain)
# and 1.698 (a set-B kidney, a gain).
LEAK_INNER_EDGE_MAX = 1.673


class ClickSearch(_guarded.ClickSearch):
    """The guarded step 5, only where the choice of steps 3-4 looks leaked."""

    def _choose(self, candidates, scores, image, in_band, click) -> int:
        pick = self._smallest_plausible(candidates, scores, image)
        gradient = np.hypot(ndimage.sobel(image, 0), ndimage.sobel(image, 1))
        if not self._looks_leaked(candidates[pick][2], gradient):
            return pick
        return super()._choose(candidates, scores, image, in_band, click)

    def _looks_leaked(self, part: np.ndarray, gradient: np.ndarray) -> bool:
        """The gate: the mask's inside holds no edge much sharper than its outline (LEAK_INNER_EDGE_MAX)."""
        inner = ndimage.binary_erosion(part, iterations=self.ring_px)
        if not inner.any():  # too thin to have an inside: nothing inside contradicts it
            return True
        return float(np.percentile(gradient[inner], 90)) <= LEAK_INNER_EDGE_MAX * max(_edge(part, gradient), 1e-9)
