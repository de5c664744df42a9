"""`Session.refine` with `current` (a local correction) and `refine_span`, on mr_abdomen (a training volume).

The figures in the comments were measured with the embedded LiteMedSAM default (benchmarks/RESULTS_protocol.md).
"""
import numpy as np
import pytest

from SlideSAMLib import Session
from SlideSAMLib.evaluation import protocol
from SlideSAMLib.evaluation.evaluate import load_case
from SlideSAMLib.propagation import PropagationResult
from SlideSAMLib.session import refine_span
from SlideSAMLib.stop_reasons import STOP_REASONS, STRUCTURE_ENDS
from SlideSAMLib.training.prompts import deepest_point, tight_box


@pytest.fixture(scope="module")
def mr(data_dir, model):
    d = data_dir / "mr_abdomen"  # 117 x 91 x 20, 3 mm: cheap to encode whole
    case = load_case(d / "example_mr_sm.nii.gz", d / "example_seg_mr.nii.gz", d / "labels_total_mr.json",
                     structures=["kidney_right", "kidney_left"])
    return case, Session(model, case.volume, spacing=case.spacing)


def _box_result(case, session, value):
    truth = case.labels == value
    k0 = int(truth.sum(axis=(1, 2)).argmax())
    x0, y0, x1, y1 = tight_box(truth[k0])
    res = session.segment(box=((x0, y0, k0), (x1, y1, k0)), axis=2)
    return truth, k0, {k: m for k, m in res.slice_masks.items() if m.any()}


def _trim_click(mask, k):
    """An include click at the mask's deepest pixel and an exclude click at the mask pixel farthest from it."""
    keep = deepest_point(mask)
    ys, xs = np.nonzero(mask)
    far = int(np.argmax((xs - keep[0]) ** 2 + (ys - keep[1]) ** 2))
    return [((keep[0], keep[1], k), True), ((int(xs[far]), int(ys[far]), k), False)]


def _apply(current, res, span, n):
    out = {s: current[s] for s in current}
    for s in range(span[0], span[1] + 1):
        out[s] = res.slice_masks.get(s, np.zeros(res.stack_shape[1:], bool))
    return {s: m for s, m in out.items() if m.any() and 0 <= s < n}


class CountingEncoder:
    def __init__(self, model, monkeypatch):
        self.windows = 0
        encode = model.encode
        monkeypatch.setattr(model, "encode", lambda x: (setattr(self, "windows", self.windows + int(x.shape[0])), encode(x))[1])


def test_refine_with_current_stops_where_it_agrees_and_keeps_the_rest(mr, model, monkeypatch):
    case, session = mr
    _, _, current = _box_result(case, session, 3)  # kidney_left: slices 0..9 of the box's result (0..11 before the drift rule)
    first, last = min(current), max(current)
    k = 3
    clicks = _trim_click(current[k], k)
    largest = max(int(m.sum()) for m in current.values())
    counter = CountingEncoder(model, monkeypatch)
    local = session.refine(k, clicks, current[k], axis=2, largest_area=largest, current=current)
    local_windows = counter.windows
    # Without `current` the refine may go past the box run's last slice (the drift rule ended that run on slice 10;
    # the refine's own intensity model lets it go on), so it can encode a window the box run never reached.
    whole = session.refine(k, clicks, current[k], axis=2, largest_area=largest)
    # Measured: both sides agree one slice away (2, 4): only 1..3 are replaced; without `current` the run goes on to
    # the kidney's end (12 windows against 5).
    assert local.stopped == {"up": "agrees", "down": "agrees"} and whole.stopped["up"] != "agrees"
    span = refine_span(local)
    assert span == (min(local.slice_masks), max(local.slice_masks)) and span[0] <= k <= span[1]
    assert first < span[0] and span[1] < last
    agreeing = sorted(i.index for i in local.info if i.reason == "agrees")
    assert agreeing == [span[0] - 1, span[1] + 1] and not set(agreeing) & set(local.slice_masks)
    assert len(local.info) < len(whole.info)  # nothing decoded past the agreeing slices
    # The caller's result: the clicked slice as corrected, the span as re-propagated, every other slice as it was.
    merged = _apply(current, local, span, case.volume.shape[0])
    assert np.array_equal(merged[k], local.slice_masks[k]) and not np.array_equal(merged[k], current[k])
    for s in set(current) - set(range(span[0], span[1] + 1)):
        assert np.array_equal(merged[s], current[s])
    assert local_windows == 0 and local.encoder_passes == 0


def test_refine_span_on_both_stop_kinds(mr):
    case, session = mr
    empty = np.zeros((4, 4), bool)
    made = lambda stopped: PropagationResult(axis=2, stack_shape=(20, 4, 4), slice_masks={s: empty for s in (5, 6, 7, 8)}, stopped=stopped)
    assert refine_span(made({"up": "agrees", "down": "vanished"}), (2, 15)) == (2, 8)  # the structure ends below
    assert refine_span(made({"up": "low-iou", "down": "departs"}), (2, 15)) == (5, 15)
    assert refine_span(made({"up": "range-end", "down": "kept"})) == (5, 8)
    assert refine_span(made({"up": "tail", "down": "grew"})) == (0, 19)
    assert all(r in STOP_REASONS for r in ("agrees", "departs", "kept") + STRUCTURE_ENDS)
    # Real ones: kidney_right's first protocol click (an include click on slice 14, where the box's result has
    # nothing). Measured: the chain up ends (vanished on 19, where the result has nothing): the span runs to the
    # volume's end; the chain down leaves the kidney on 13 ("departs"): the span starts at the clicked slice.
    truth, k0, current = _box_result(case, session, 2)
    box = np.zeros(truth.shape, bool)
    for s, m in current.items():
        box[s] = m
    k, x, y, include = protocol.error_click(box, truth)
    res = session.refine(k, [((x, y, k), include)], box[k], axis=2, current=current,
                         largest_area=max(int(m.sum()) for m in current.values()))
    assert res.stopped == {"up": "vanished", "down": "departs"}
    assert refine_span(res) == (k, 19) and min(res.slice_masks) == k and max(res.slice_masks) < 19
    assert [i.index for i in res.info if i.reason == "departs"] == [k - 1]

def test_an_emptied_slice_keeps_the_current_masks_on_both_sides(mr):
    case, session = mr
    _, _, current = _box_result(case, session, 3)
    k = 6
    x, y = deepest_point(current[k])
    kwargs = dict(axis=2, largest_area=max(int(m.sum()) for m in current.values()))
    res = session.refine(k, [((x, y, k), False)], current[k], current=current, **kwargs)  # the kidney's one part
    assert not res.slice_masks[k].any() and res.stopped == {"up": "kept", "down": "kept"}
    assert refine_span(res) == (k, k)
    before = session.refine(k, [((x, y, k), False)], current[k], **kwargs)  # without `current`: as before
    assert before.stopped == {"up": "vanished", "down": "vanished"} and refine_span(before) == (0, 19)


def test_the_protocols_first_click_no_longer_undoes_the_kidney(mr):
    """kidney_right: the first click goes on slice 14 (2 reference voxels, nothing predicted); its box search finds a
    46-pixel blob beside the kidney. Replacing every slice down to the box's (session 6) took 3D Dice 0.878 -> 0.552;
    locally the chain down departs from the kidney at once and slices 6..13 stay as they were."""
    case, session = mr
    truth, k0, current = _box_result(case, session, 2)
    box = np.zeros(truth.shape, bool)
    for s, m in current.items():
        box[s] = m
    local = protocol.interactive(session, truth, case.spacing, k0, box, clicks=1)
    whole = protocol.interactive(session, truth, case.spacing, k0, box, clicks=1, agree_dice=None)
    b, (click,) = local["curve"][0]["dice"], local["curve"][1:]
    assert click["click"]["slice"] == 14 and click["click"]["include"]
    assert click["stopped"]["down"] == "departs" and click["replaced"][0] == 14
    assert click["dice"] >= b - 0.05  # measured 0.847 against the box's 0.878: the blob on 14..18 remains
    assert whole["curve"][1]["dice"] < b - 0.2  # the old rule, same click: 0.552
    assert whole["curve"][1]["replaced"][0] == k0 + 1  # everything from the box's slice up
