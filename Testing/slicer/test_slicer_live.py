"""The module shows a run's masks while it goes (SlideSAMSlicer/preview.py), driven through the widget's poll timer.

Real widget, logic, MRML and CT as in test_slicer_widget.py.  The engine (the in-process session) is gated: after
its first streamed slice it waits until the test lets it go, so "the segment shows a slice before the run ends" is
a mechanism the test holds still, not a race.  A refine is stepped: the engine waits after every slice it streams.
"""
import threading
import time
import types

import numpy as np
import pytest
import slicer

from SlideSAMSlicer.writer import read_segment, stack_view
from test_slicer_widget import RANGE, corrected_kidney, refinement_setup, env, gui, in_slice_range, kidney_box, new_segmentation, propagate_kidney, ras_of, run_to_end, show_slice  # noqa: F401  (fixtures)


class Gate:
    """Wraps the volume's contract session: every slice is relayed to the module, the first one then holds the engine."""

    def __init__(self, session, fail=False, hold=lambda index: True):
        self.session, self.fail, self.hold = session, fail, hold
        self.streamed, self.go = threading.Event(), threading.Event()
        self.first = None  # (index, mask) of the first streamed slice that `hold` picks

    def run(self, request, progress=None, cancel=None, slice_done=None):
        def relay(index, mask):
            if slice_done is not None:
                slice_done(index, mask)
            if self.first is None and self.hold(index):
                self.first = (int(index), np.array(mask, dtype=bool))
                self.streamed.set()
                assert self.go.wait(300), "the test never let the engine go on"

        result = self.session.run(request, progress, cancel, relay)
        if self.fail:
            raise RuntimeError("the engine process exited (simulated)")
        return result


@pytest.fixture
def gated(gui, monkeypatch):
    """The logic's sessions wrapped in Gates (set `.fail` to make the engine fail after its run, `.hold` to pick the slice held on)."""
    logic, state = gui.widget.logic, types.SimpleNamespace(fail=False, hold=lambda index: True, gates=[])
    real = logic._sessionGetter

    def sessionGetter(volumeNode):
        get = real(volumeNode)

        def getGated():
            state.gates.append(Gate(get(), fail=state.fail, hold=state.hold))
            return state.gates[-1]

        return getGated

    monkeypatch.setattr(logic, "_sessionGetter", sessionGetter)
    return state


def start_held(gui, gated):
    """Press Propagate (slices k-RANGE..k+RANGE) and wait until the engine holds after its first slice."""
    ui, ct = gui.ui, gui.ct
    kidney_box(gui)
    show_slice(gui, ct.k)
    in_slice_range(gui)
    ui.propagateButton.click()
    return held(gui, gated)


def held(gui, gated):
    """The first gate once its engine holds."""
    assert gui.ui.cancelButton.enabled
    for _ in range(600):  # the engine is loading its windows; poll as Slicer's timer does meanwhile
        if gated.gates and gated.gates[0].streamed.wait(0.5):
            break
        if not gated.gates:
            time.sleep(0.5)  # the worker thread has not asked for the session yet
        gui.widget._timer.fire()
    gate = gated.gates[0]
    assert gate.streamed.is_set(), "the engine streamed no slice"
    return gate


def kidney_segment(gui, segmentation):
    """An annotator's segment: the kidney on slices outside the run's range, and an odd mark on the prompt slice."""
    ct = gui.ct
    segmentId = segmentation.GetSegmentation().AddEmptySegment("kidney", "kidney")
    before = ct.reference.copy()
    before[ct.k - RANGE : ct.k + RANGE + 1] = 0
    before[ct.k, :5, :5] = 1
    slicer.util.updateSegmentBinaryLabelmapFromArray(before, segmentation, segmentId, ct.node)
    gui.ui.segmentSelector.setCurrentNode(segmentation)
    gui.ui.segmentSelector.setCurrentSegmentID(segmentId)
    return segmentId, read_segment(segmentation, segmentId, ct.node)


def shown_while_held(gui, segmentation, segmentId, gate):
    """One timer tick while the engine is held writes the streamed slice into the segment (once a write is due: the
    preview paces its writes, and a slice streamed before this one, e.g. a restart's corrected slice, may have
    been written by a tick less than FLUSH_S ago)."""
    index, mask = gate.first
    time.sleep(gui.widget._preview.wait_s())
    gui.widget._timer.fire()
    assert not gui.widget._background.poll()[0]  # the job has not finished: it is held
    now = stack_view(read_segment(segmentation, segmentId, gui.ct.node), 2)
    np.testing.assert_array_equal(now[index] > 0, mask)
    return now


def test_masks_show_during_the_run_and_one_undo_restores_the_segment(gui, gated):
    segmentation = new_segmentation(gui, "live")
    segmentId, before = kidney_segment(gui, segmentation)
    gate = start_held(gui, gated)
    shown = shown_while_held(gui, segmentation, segmentId, gate)
    assert not np.array_equal(shown, before)  # the streamed slice differs from what the segment held
    gate.go.set()
    run_to_end(gui)
    assert not gui.errors and not gui.raised, (gui.errors, gui.raised)
    after = read_segment(segmentation, segmentId, gui.ct.node)
    assert not np.array_equal(after, before) and "slices (K" in gui.ui.statusLabel.text
    gui.ui.undoButton.click()
    assert gui.ui.statusLabel.text == "last run undone"
    np.testing.assert_array_equal(read_segment(segmentation, segmentId, gui.ct.node), before)


def test_cancel_mid_run_keeps_exactly_the_results_slices(gui, gated):
    segmentation = new_segmentation(gui, "live cancel")  # no segment yet: the preview makes one, the result keeps it
    gate = start_held(gui, gated)
    segmentIds = list(segmentation.GetSegmentation().GetSegmentIDs())
    assert len(segmentIds) == 1
    shown_while_held(gui, segmentation, segmentIds[0], gate)
    job = gui.widget._job
    gui.ui.cancelButton.click()
    gate.go.set()
    run_to_end(gui)
    assert gui.ui.statusLabel.text.startswith("cancelled, partial result kept"), gui.ui.statusLabel.text
    (result,) = job.results
    assert result.cancelled
    segmentId = gui.ui.segmentSelector.currentSegmentID()
    assert list(segmentation.GetSegmentation().GetSegmentIDs()) == [segmentId]
    stack = stack_view(read_segment(segmentation, segmentId, gui.ct.node), 2) > 0
    expected = np.zeros_like(stack)
    for index, mask in result.slice_masks.items():
        expected[index] = mask
    np.testing.assert_array_equal(stack, expected)  # the result's slices, nothing else the run showed
    gui.ui.undoButton.click()
    assert segmentation.GetSegmentation().GetNumberOfSegments() == 0  # the run made the segment: undo removes it


def test_an_engine_error_leaves_the_segment_and_the_others_as_before(gui, gated):
    ct = gui.ct
    segmentation = new_segmentation(gui, "live error")
    otherId = segmentation.GetSegmentation().AddEmptySegment("other", "other")
    slicer.util.updateSegmentBinaryLabelmapFromArray(ct.reference, segmentation, otherId, ct.node)  # overlaps the run
    other = read_segment(segmentation, otherId, ct.node)
    segmentId, before = kidney_segment(gui, segmentation)
    gated.fail = True
    gate = start_held(gui, gated)
    shown_while_held(gui, segmentation, segmentId, gate)
    gate.go.set()
    run_to_end(gui)
    assert len(gui.errors) == 1 and "engine process exited" in gui.errors[0], gui.errors
    assert gui.ui.statusLabel.text == "failed: nothing was written"
    np.testing.assert_array_equal(read_segment(segmentation, segmentId, ct.node), before)
    np.testing.assert_array_equal(read_segment(segmentation, otherId, ct.node), other)
    assert list(segmentation.GetSegmentation().GetSegmentIDs()) == [otherId, segmentId]
    assert not gui.widget.logic.canUndo(segmentation)


def test_a_restart_shows_its_slices_and_undo_restores_the_segment(gui, gated):
    ui, ct = gui.ui, gui.ct
    fixed = ct.k + 1
    segmentation, segmentId, before = corrected_kidney(gui, "live restart", fixed)
    gated.hold = lambda index: index > fixed  # the restart streams the corrected slice first
    ui.restartButton.click()
    gate = held(gui, gated)
    shown = shown_while_held(gui, segmentation, segmentId, gate)
    assert gate.first[0] > fixed and not np.array_equal(shown, before)  # a slice above the correction, shown mid-run
    gate.go.set()
    run_to_end(gui)
    assert not gui.errors and not gui.raised, (gui.errors, gui.raised)
    assert read_segment(segmentation, segmentId, ct.node)[fixed + 1 : ct.k + RANGE + 1].any()
    ui.undoButton.click()
    np.testing.assert_array_equal(read_segment(segmentation, segmentId, ct.node), before)


class Stepper:
    """Wraps the volume's contract session: every slice is relayed to the module, then the engine waits until the
    test lets it take one more step (so each slice can be looked at in the segment while the run is held)."""

    def __init__(self):
        self.arrived, self.step = threading.Semaphore(0), threading.Semaphore(0)
        self.free = threading.Event()  # set when the test stops stepping (done or failed): the engine runs on
        self.streamed = []  # (index, mask) in the order the engine sent them

    def wrap(self, session):
        self.session = session
        return self

    def run(self, request, progress=None, cancel=None, slice_done=None):
        def relay(index, mask):
            if slice_done is not None:
                slice_done(index, mask)
            self.streamed.append((int(index), np.array(mask, dtype=bool)))
            self.arrived.release()
            while not self.free.is_set() and not self.step.acquire(timeout=0.5):
                pass

        return self.session.run(request, progress, cancel, relay)


def next_streamed(gui, stepper, timeout=600):
    """Poll as Slicer's timer does until the engine holds after its next streamed slice (True) or the run is over and
    its result written (False)."""
    deadline = time.time() + timeout
    while gui.widget._background is not None:
        assert time.time() < deadline, "the run neither streamed a slice nor ended"
        if stepper.arrived.acquire(timeout=0.2):
            return True
        gui.widget._timer.fire()
    return False


def test_a_refine_shows_the_corrected_slice_first_then_each_slice_and_undo_restores(gui, monkeypatch):
    ui, ct, logic = gui.ui, gui.ct, gui.widget.logic
    segmentation = propagate_kidney(gui, "live refine")  # not stepped: the refine's result is what this test follows
    run_to_end(gui)
    assert not gui.errors and not gui.raised, (gui.errors, gui.raised)
    segmentId, before, k, (ex, ey), (ix, iy), include, exclude = refinement_setup(gui, segmentation)
    include.AddControlPointWorld(*ras_of(ct, (ix, iy, k)))
    exclude.AddControlPointWorld(*ras_of(ct, (ex, ey, k)))
    show_slice(gui, k)
    stepper, real = Stepper(), logic._sessionGetter
    monkeypatch.setattr(logic, "_sessionGetter", lambda volumeNode: (lambda get=real(volumeNode): stepper.wrap(get())))
    ui.refineButton.click()
    job, preview = gui.widget._job, gui.widget._preview
    assert job.kind == "refine" and preview is not None and ui.cancelButton.enabled
    expected = before.copy()
    try:
        while next_streamed(gui, stepper):  # the engine holds after each slice: one tick must show it in the segment
            index, mask = stepper.streamed[-1]
            stack_view(expected, 2)[index] = mask
            time.sleep(preview.wait_s())  # the preview paces its writes (FLUSH_S)
            gui.widget._timer.fire()
            assert not gui.widget._background.poll()[0]  # still running: held by the stepper
            np.testing.assert_array_equal(read_segment(segmentation, segmentId, ct.node), expected,
                                          err_msg=f"the segment after streamed slice no. {len(stepper.streamed)} ({index})")
            stepper.step.release()
    finally:
        stepper.free.set()  # a failed check does not leave the engine thread waiting
    order = [index for index, _ in stepper.streamed]
    print(f"refine streamed {order}; shown {preview.shown}")
    assert order and order[0] == k, f"the refine streamed {order} while it ran: the corrected slice {k} first"
    corrected = stepper.streamed[0][1]
    assert not corrected[ey, ex] and corrected[iy, ix] and not np.array_equal(corrected, before[k] > 0)  # the clicks, shown mid-run
    assert len(order) > 1 and preview.shown == order  # then its neighbours, one tick each
    assert not gui.errors and not gui.raised, (gui.errors, gui.raised)
    # the result is written as before the preview: the engine's span replaced by its masks, every other slice kept
    (result,) = job.results
    assert set(order) <= set(result.slice_masks)  # only slices the result holds were shown
    first, last = result.span
    written = before.copy()
    for s in range(first, last + 1):
        written[s] = result.slice_masks[s] if s in result.slice_masks else 0
    after = read_segment(segmentation, segmentId, ct.node)
    np.testing.assert_array_equal(after, written)
    assert after[k, ey, ex] == 0 and after[k, iy, ix] == 1 and "0 encoder passes" in ui.statusLabel.text
    ui.undoButton.click()
    assert ui.statusLabel.text == "last run undone"
    np.testing.assert_array_equal(read_segment(segmentation, segmentId, ct.node), before)
