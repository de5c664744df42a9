"""Refine by clicks after a run, through SlideSAMLogic on real MRML (slicer-core) and the real example_ct.

The kidney is propagated over nine slices, then one exclude and one include click (markups point lists, as the
widget places them) on one slice correct it: the clicked slice changes as asked, the result is the engine's own
`Session.refine` of the same slice, mask and clicks, nothing is encoded again, other segments stay as they were,
and one undo restores the segment exactly.  Bad clicks change nothing and say what is wrong in one line.
"""
import types

import numpy as np
import pytest
import slicer
from scipy import ndimage

import SlideSAM
from SlideSAMLib.errors import InputError
from SlideSAMSlicer.writer import read_segment
from slicer_data import lps_to_ras, refinement_clicks


def ras(ct, i, j, k):
    """RAS of a voxel from the file's own geometry (SimpleITK, LPS), independent of the module's code."""
    return lps_to_ras(ct.image.TransformContinuousIndexToPhysicalPoint([float(i), float(j), float(k)]))


def point_list(mrml, name, points_ras, selected=True):
    node = mrml.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", name)
    for p in points_ras:
        node.SetNthControlPointSelected(node.AddControlPoint(*p), selected)
    return node


@pytest.fixture(scope="module")
def logic(slidesam_model):
    return SlideSAM.SlideSAMLogic(model=slidesam_model)


@pytest.fixture(scope="module")
def run(mrml, ct, window, logic):
    """The kidney over `window`, beside another segment that overlaps it; the clicks: exclude on the mask's
    part farthest outside the reference kidney, include deepest inside it, both on slice k + 1."""
    seg = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "refine")
    seg.CreateDefaultDisplayNodes()
    seg.SetReferenceImageGeometryParameterFromVolumeNode(ct.node)
    other = seg.GetSegmentation().AddEmptySegment("other", "other")
    block = np.zeros_like(ct.reference)
    block[ct.k - 6: ct.k + 6, 20:60, 20:50] = 1
    slicer.util.updateSegmentBinaryLabelmapFromArray(block, seg, other, ct.node)
    report = logic.segment(ct.node, seg, "kidney", box=ct.box_ras, sliceRange=window)
    k = ct.k + 1
    exclude, include = refinement_clicks(read_segment(seg, report.segmentId, ct.node)[k] > 0, ct.reference[k] > 0)
    return types.SimpleNamespace(seg=seg, sid=report.segmentId, other=other, block=block, k=k, exclude=exclude, include=include)


def test_refine_changes_the_clicked_slice_as_asked_and_undo_restores(mrml, ct, window, logic, run):
    before = read_segment(run.seg, run.sid, ct.node)
    (ex, ey), (ix, iy), k = run.exclude, run.include, run.k
    include = point_list(mrml, "include", [ras(ct, ix, iy, k)])
    exclude = point_list(mrml, "exclude", [ras(ct, ex, ey, k)])
    report = logic.refine(ct.node, run.seg, run.sid, points=include, excludePoints=exclude, sliceRange=window)
    after = read_segment(run.seg, run.sid, ct.node)
    assert after[k, ey, ex] == 0 and after[k, iy, ix] == 1  # the exclude voxel went, the include voxel stayed
    assert not np.array_equal(after[k], before[k]) and k in report.changedSlices
    assert report.encoderPasses == 0 and report.prompt == "refine"  # every window was encoded by the first run
    assert report.axis == 2 and set(report.slices) <= set(range(window[0], window[1] + 1))
    # the engine's own local refine of the same slice, mask, clicks (voxel IJK) and current masks is what was written
    current = {s: before[s] > 0 for s in range(window[0], window[1] + 1) if s != k and before[s].any()}
    engine = logic.session(ct.node).refine(k, [((ix, iy, k), True), ((ex, ey, k), False)], before[k] > 0, axis=2, slice_range=window,
                                           largest_area=int(before.reshape(len(before), -1).sum(axis=1).max()), current=current)
    first, last = engine.span
    expected = before.copy()
    for s in range(first, last + 1):  # the span is replaced (a slice missing from the result is cleared), the rest kept
        expected[s] = engine.slice_masks[s] if s in engine.slice_masks else 0
    print(f"refine: span {first}..{last} of window {window}, stopped {report.stopped}, changed {report.changedSlices}")
    np.testing.assert_array_equal(after, expected)
    assert report.slices == engine.slices and report.stopped == engine.stopped
    np.testing.assert_array_equal(read_segment(run.seg, run.other, ct.node), run.block)  # another segment: untouched
    assert logic.undo(run.seg)
    np.testing.assert_array_equal(read_segment(run.seg, run.sid, ct.node), before)
    np.testing.assert_array_equal(read_segment(run.seg, run.other, ct.node), run.block)


def test_refine_clicks_as_ras_tuples_on_the_k_axis_of_the_last_run(ct, window, logic, run):
    (ex, ey), (ix, iy), k = run.exclude, run.include, run.k
    before = read_segment(run.seg, run.sid, ct.node)
    report = logic.refine(ct.node, run.seg, run.sid, points=[(ras(ct, ix, iy, k), True), (ras(ct, ex, ey, k), False)], sliceRange=window)
    after = read_segment(run.seg, run.sid, ct.node)
    assert after[k, ey, ex] == 0 and after[k, iy, ix] == 1 and report.encoderPasses == 0
    assert logic.undo(run.seg)
    np.testing.assert_array_equal(read_segment(run.seg, run.sid, ct.node), before)


def test_an_exclude_click_that_empties_the_slice_replaces_that_slice_only(ct, window, logic, run):
    (ex, ey), k = run.exclude, run.k
    before = read_segment(run.seg, run.sid, ct.node)
    assert ndimage.label(before[k])[1] == 1 and before[k, ey, ex]  # one part, clicked: the exclude click removes all of it
    report = logic.refine(ct.node, run.seg, run.sid, points=[(ras(ct, ex, ey, k), False)], sliceRange=window)
    after = read_segment(run.seg, run.sid, ct.node)
    assert report.stopped == {"up": "kept", "down": "kept"} and report.changedSlices == [k]
    assert not after[k].any()
    np.testing.assert_array_equal(np.delete(after, k, axis=0), np.delete(before, k, axis=0))  # every other slice kept
    assert logic.undo(run.seg)
    np.testing.assert_array_equal(read_segment(run.seg, run.sid, ct.node), before)


@pytest.mark.parametrize("case, message", [
    ("beyond the last slice", "outside the volume"),
    ("beside the image", "outside the volume"),
    ("two slices", "lie on slices"),
    ("no click", "no refinement click"),
    ("empty segment", "is empty: propagate first"),
    ("no such segment", "is not in"),
])
def test_bad_refinements_change_nothing_and_say_why_in_one_line(mrml, ct, window, logic, run, case, message):
    (ix, iy), k = run.include, run.k
    n = ct.reference.shape[0]
    sid, points = run.sid, [(ras(ct, ix, iy, k), True)]
    if case == "beyond the last slice":
        points = [(ras(ct, ix, iy, n + 5), True)]
    elif case == "beside the image":
        points = [(ras(ct, -20, iy, k), False)]
    elif case == "two slices":
        points = [(ras(ct, ix, iy, k), True), (ras(ct, ix, iy, k + 2), False)]
    elif case == "no click":
        points = []
    elif case == "empty segment":
        sid = run.seg.GetSegmentation().AddEmptySegment("empty", "empty")
    elif case == "no such segment":
        sid = "no such"
    segments = {s: read_segment(run.seg, s, ct.node) for s in (run.sid, run.other)}
    steps = len(logic.writer._undo.get(run.seg.GetID(), []))
    try:
        with pytest.raises(InputError, match=message) as caught:
            logic.refine(ct.node, run.seg, sid, points=points, sliceRange=window)
        assert "\n" not in str(caught.value)
        for s, array in segments.items():
            np.testing.assert_array_equal(read_segment(run.seg, s, ct.node), array)
        assert len(logic.writer._undo.get(run.seg.GetID(), [])) == steps  # no undo step: nothing was written
    finally:
        if case == "empty segment":
            run.seg.GetSegmentation().RemoveSegment(sid)
