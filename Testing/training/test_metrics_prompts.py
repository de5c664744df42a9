"""Metrics on known shapes, and prompt simulation."""
import numpy as np
import pytest

from SlideSAMLib.evaluation import metrics
from SlideSAMLib.training.prompts import deepest_point, jittered_box, simulate, tight_box


def _cube(shift=0):
    m = np.zeros((12, 40, 40), bool)
    m[2:10, 10:30, 10 + shift:30 + shift] = True
    return m


def test_metrics_of_a_shifted_cube_use_the_spacing():
    a, b = _cube(), _cube(2)
    assert metrics.dice(a, a) == 1.0 and metrics.hd95(a, a, (1, 1, 1)) == 0.0
    assert abs(metrics.dice(a, b) - 0.9) < 1e-9
    assert metrics.hd95(a, b, (1.0, 1.0, 3.0)) == 2.0  # the shift is along x (spacing 1 mm)
    assert metrics.hd95(a, b, (2.0, 1.0, 1.0)) == 4.0
    assert metrics.surface_dice(a, b, (1, 1, 1), 2.0) == 1.0
    # a 2nd cube far from the first: its whole surface misses, the first's matches; equal shapes, so 2/3 exactly
    pair = np.zeros((12, 80, 40), bool)
    pair[:, :40], pair[:, 40:] = a, a
    one = np.zeros_like(pair)
    one[:, :40] = a
    for spacing in ((1, 1, 1), (2.0, 1.0, 3.0)):
        assert metrics.surface_dice(pair, one, spacing, 2.0) == pytest.approx(2 / 3, abs=1e-6)
    assert metrics.surface_dice(a, b, (2, 1, 1), 4.0) == 1.0
    assert metrics.hd95(a, np.zeros_like(a), (1, 1, 1)) is None
    assert metrics.extent(a) == (2, 9)


def test_prompts_stay_on_the_structure():
    m = np.zeros((64, 64), bool)
    m[20:40, 10:50] = True
    m[28:32, 50:60] = True  # a thin appendix: the deepest point is still in the body
    x, y = deepest_point(m)
    assert 25 <= y <= 34 and 20 <= x <= 40
    rng = np.random.default_rng(0)
    x0, y0, x1, y1 = tight_box(m)
    for _ in range(50):
        b = jittered_box(m, rng)
        assert abs(b[0] - x0) < 8 and abs(b[3] - y1) < 8 and b[2] > b[0] and b[3] > b[1]
        p = simulate(m, rng, point_fraction=1.0)
        assert p.box is None and any(lab == 1 for *_, lab in p.points)
        for px, py, lab in p.points:
            assert m[int(py), int(px)] == bool(lab)


def test_one_dice_with_one_convention():
    """Dice was written six times, one of them (the server tests') giving 0 for two empty masks."""
    import testdata
    from SlideSAMLib import propagation

    empty = np.zeros((3, 4, 5), bool)
    assert metrics.dice(empty, empty) == 1.0 and metrics.dice(empty, _cube()[:3, :4, :5] | True) == 0.0
    assert propagation.dice is metrics.dice and testdata.dice is metrics.dice
