"""Per-slice candidate end signals of one propagation (benchmarks/sweep_rules.py --features; RESULTS_rules.md,
"Session 8: ends").

`Recorder` wraps `propagation.score_slice` (every scored window: accepted ones and the one that ended its chain)
and `propagation.IntensityModel` (to see the prompt slice and its mask) while a structure is propagated, and
records, per window, signals that might say "the structure has ended" — measured, not assumed:
  * the decoder's predicted IoU and stability score;
  * intensity drift: the mask's median / mean against the prompt mask's median, in units of the prompt mask's IQR;
  * boundary contrast: mean intensity of the mask's inner ring minus its outer ring (2 px each), and the mean
    gradient magnitude on the outline, each as a ratio to the prompt slice's;
  * the area (constrained), the raw decoder mask's area and the share `constrain` kept;
  * Dice to the previous accepted mask of the chain, centroid drift (mm);
and, after the run, each slice's final mask against the reference (area, intersection, 2D Dice, inside the
reference's extent or not), so a stricter rule can be simulated offline (`analyse_ends.py`).
Measurement only: nothing here changes what propagation does.
"""
import numpy as np
from scipy import ndimage

from SlideSAMLib import propagation

RING_PX = 2  # inner / outer ring width for the boundary contrast (slice pixels)


def _stats(image, mask):
    v = image[mask]
    q1, med, q3 = np.percentile(v, (25, 50, 75))
    return float(med), float(v.mean()), float(max(q3 - q1, 1e-6))


def _boundary(image, mask, grad):
    """(inner ring mean - outer ring mean, mean gradient magnitude on the outline); NaN for tiny masks."""
    if mask.sum() < 4:
        return float("nan"), float("nan")
    inner = mask & ~ndimage.binary_erosion(mask, iterations=RING_PX)
    outer = ndimage.binary_dilation(mask, iterations=RING_PX) & ~mask
    edge = mask & ~ndimage.binary_erosion(mask)
    if not inner.any() or not outer.any():
        return float("nan"), float("nan")
    return float(image[inner].mean() - image[outer].mean()), float(grad[edge].mean())


def _grad(image):
    gy, gx = np.gradient(image.astype(np.float32))
    return np.hypot(gx, gy)


def _dice(a, b):
    s = a.sum() + b.sum()
    return float(2 * (a & b).sum() / s) if s else 1.0


class Recorder:
    def __init__(self, pixel_mm):
        self.pixel_mm = pixel_mm  # (rows, cols) mm
        self.records, self.start, self.ref, self._last = [], None, None, {}
        self._score, self._intensity = propagation.score_slice, propagation.IntensityModel

    def begin(self, start):
        self.records, self.start, self.ref, self._last = [], int(start), None, {}

    def __enter__(self):
        rec = self
        base = self._intensity

        class Capturing(base):
            def __init__(self, image, mask):
                super().__init__(image, mask)
                rec._prompt(image, mask)

        propagation.IntensityModel = Capturing
        propagation.score_slice = self._scored
        return self

    def __exit__(self, *exc):
        propagation.score_slice, propagation.IntensityModel = self._score, self._intensity

    def _centroid(self, mask):
        ys, xs = np.nonzero(mask)
        return (ys.mean() * self.pixel_mm[0], xs.mean() * self.pixel_mm[1]) if ys.size else None

    def _prompt(self, image, mask):
        mask = mask.astype(bool)
        if mask.sum() < 10:
            self.ref = None
            return
        med, mean, iqr = _stats(image, mask)
        contrast, grad = _boundary(image, mask, _grad(image))
        self.ref = {"median": med, "mean": mean, "iqr": iqr, "contrast": contrast, "grad": grad, "area": int(mask.sum())}
        self._last = {+1: mask, -1: mask}

    def _scored(self, index, pred, raw, centre, prompt_mask, image, intensity, previous_area, tail_mm):
        info = self._score(index, pred, raw, centre, prompt_mask, image, intensity, previous_area, tail_mm)
        d = 1 if index > self.start else -1
        f = {"index": int(index), "dir": d, "info": info}
        ref, prev = self.ref, self._last.get(d)
        if centre.sum() >= 4 and ref is not None:
            med, mean, _ = _stats(image, centre)
            contrast, grad = _boundary(image, centre, _grad(image))
            f.update(drift_median=(med - ref["median"]) / ref["iqr"], drift_mean=(mean - ref["mean"]) / ref["iqr"],
                     contrast=contrast / ref["iqr"], contrast_ratio=contrast / ref["contrast"] if ref["contrast"] else float("nan"),
                     grad_ratio=grad / ref["grad"] if ref["grad"] else float("nan"))
        f["raw_area"] = int(raw.sum())
        f["kept"] = float(centre.sum() / max(raw.sum(), 1))
        if prev is not None:
            f["dice_prev"] = _dice(centre, prev)
            a, b = self._centroid(centre), self._centroid(prev)
            f["centroid_mm"] = float(np.hypot(a[0] - b[0], a[1] - b[1])) if a and b else float("nan")
        self._last[d] = centre
        self.records.append(f)
        return info

    def finish(self, res, truth):
        """The records as JSON-able dicts, each with its slice's final mask against the reference `truth` (k, j, i)."""
        out = []
        for f in self.records:
            info = f.pop("info")
            c = f["index"]
            m = res.slice_masks.get(c)
            t = truth[c]
            f.update({k: v for k, v in info.as_dict().items() if k != "index"})
            f.update(truth_area=int(t.sum()), final_area=int(m.sum()) if m is not None else 0,
                     final_inter=int((m & t).sum()) if m is not None else 0,
                     dice2d=_dice(m, t) if m is not None else (1.0 if not t.any() else 0.0))
            out.append({k: (round(v, 4) if isinstance(v, float) else v) for k, v in f.items()})
        s = self.start
        m = res.slice_masks.get(s)
        start = {"index": s, "truth_area": int(truth[s].sum()), "final_area": int(m.sum()) if m is not None else 0,
                 "final_inter": int((m & truth[s]).sum()) if m is not None else 0, "ref": self.ref}
        return {"start": start, "slices": out}
