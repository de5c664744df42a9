"""Time of the first mask from one click (the box search of SlideSAMLib/clicks.py) against one box, same window.

Both start from the prompt window's embedding already computed (encoded once, outside the timers), so the
figures are decoder-side only: the click search's 16 decodes against the box's single decode. Structures: the
four organs of example_ct (training volume) at their largest slice; click at the deepest interior pixel.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_clicks.py [--repeat 3]
"""
import argparse
import time

import numpy as np
import torch

from _common import CT, CT_LABELS, load_avg  # noqa: F401  (puts the project on sys.path)
from SlideSAMLib import Session, array_of, load_model, read_image
from SlideSAMLib.clicks import ClickSearch
from SlideSAMLib.propagation import box_of, dice
from SlideSAMLib.training.prompts import deepest_point

ORGANS = {"spleen": 1, "kidney_right": 2, "kidney_left": 3, "liver": 5}


def best_of(repeat, fn):
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="timed repeats; the best is reported")
    args = ap.parse_args()
    torch.set_num_threads(2)
    image = read_image(CT)
    labels = array_of(read_image(CT_LABELS))
    session = Session(load_model(device="cpu"), array_of(image), spacing=image.GetSpacing())
    pred = session.predictor(2)
    pixel_mm = float(np.mean(image.GetSpacing()[:2]))
    print(f"load {load_avg()}, torch threads {torch.get_num_threads()}, best of {args.repeat}")
    print("| structure | box: s (decodes) | click search: s (decodes) | ratio | 2D Dice box | 2D Dice click |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, value in ORGANS.items():
        ref = labels == value
        k = int(ref.sum(axis=(1, 2)).argmax())
        x, y = deepest_point(ref[k])
        pred.encode([k])
        x0, y0, x1, y1 = box_of(ref[k])
        t_box, box_pred = best_of(args.repeat, lambda: pred.predict(k, box=(x0, y0, x1, y1)))
        search = ClickSearch(pred, pixel_mm)
        t_click, click_pred = best_of(args.repeat, lambda: search.predict(k, [(x, y, True)]))
        d_box = dice((box_pred.logits[1] > 0).numpy(), ref[k])
        d_click = dice((click_pred.logits[1] > 0).numpy(), ref[k])
        print(f"| {name} | {t_box:.3f} (1) | {t_click:.3f} ({search.decodes}) | {t_click / t_box:.1f}× | {d_box:.3f} | {d_click:.3f} |")


if __name__ == "__main__":
    main()
