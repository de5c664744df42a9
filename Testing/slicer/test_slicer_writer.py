"""SegmentWriter and EditRules on real MRML (slicer-core): Segment Editor's overwrite modes, editable areas and
intensity range as Slicer applies them (vtkSlicerSegmentEditorLogic::ModifySegmentByLabelmap and
vtkMRMLSegmentationNode::GenerateEditMask, v5.8.1 / v5.10.0).  No model: each run writes known masks into a small
volume, so every expected voxel is known exactly.
"""
import numpy as np
import pytest
import slicer

from SlideSAMLib.errors import InputError
from SlideSAMSlicer import writer
from SlideSAMSlicer.writer import EditRules, SegmentWriter, check_editor, read_segment

SHAPE = (6, 20, 30)  # (k, j, i)
AXIS = 2  # runs replace K slices
SLICES = (2, 3)
SEG_NODE = slicer.vtkMRMLSegmentationNode
EDITOR = slicer.vtkMRMLSegmentEditorNode


def box(k, j, i):
    out = np.zeros(SHAPE, dtype=np.uint8)
    out[k, j, i] = 1
    return out


RUN = box(slice(2, 4), slice(5, 15), slice(5, 20))  # what the propagation returns on slices 2-3
OTHER_A = box(slice(0, 6), slice(0, 10), slice(0, 10))  # overlaps the run
OTHER_B = box(slice(0, 6), slice(10, 20), slice(15, 30))  # overlaps the run


@pytest.fixture
def scene_nodes(mrml):
    volume = mrml.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "writer volume")
    voxels = np.arange(np.prod(SHAPE), dtype=np.int16).reshape(SHAPE)
    slicer.util.updateVolumeFromArray(volume, voxels)
    seg = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "writer seg")
    seg.CreateDefaultDisplayNodes()
    seg.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    ids = {}
    for name, array in (("edited", np.zeros(SHAPE, np.uint8)), ("a", OTHER_A), ("b", OTHER_B)):
        ids[name] = seg.GetSegmentation().AddEmptySegment(name, name)
        if array.any():
            slicer.util.updateSegmentBinaryLabelmapFromArray(array, seg, ids[name], volume)
    editor = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
    editor.SetAndObserveSegmentationNode(seg)
    editor.SetAndObserveSourceVolumeNode(volume)
    yield volume, seg, ids, editor
    for node in (volume, seg, editor):
        mrml.scene.RemoveNode(node)


def run(volume, seg, segment_id, editor, masks=RUN, slices=SLICES):
    rules = EditRules.from_editor(editor, seg, segment_id, volume)
    out = SegmentWriter()
    out.apply(volume, seg, segment_id, AXIS, {s: masks[s] for s in slices}, slices, rules)
    return out


def test_overwrite_none_may_overlap_and_changes_no_other_segment(scene_nodes):
    volume, seg, ids, editor = scene_nodes
    editor.SetOverwriteMode(EDITOR.OverwriteNone)
    run(volume, seg, ids["edited"], editor)
    np.testing.assert_array_equal(read_segment(seg, ids["edited"], volume), RUN)  # overlaps a and b where the run does
    np.testing.assert_array_equal(read_segment(seg, ids["a"], volume), OTHER_A)
    np.testing.assert_array_equal(read_segment(seg, ids["b"], volume), OTHER_B)


def test_overwrite_visible_takes_from_visible_segments_only(scene_nodes):
    volume, seg, ids, editor = scene_nodes
    seg.GetDisplayNode().SetSegmentVisibility(ids["b"], False)
    editor.SetOverwriteMode(EDITOR.OverwriteVisibleSegments)
    out = run(volume, seg, ids["edited"], editor)
    np.testing.assert_array_equal(read_segment(seg, ids["edited"], volume), RUN)  # may overlap the hidden one
    np.testing.assert_array_equal(read_segment(seg, ids["a"], volume), OTHER_A & ~RUN)
    np.testing.assert_array_equal(read_segment(seg, ids["b"], volume), OTHER_B)  # hidden: never changed
    assert out.undo(seg)  # one step restores every segment the run changed
    for name, array in (("edited", 0 * RUN), ("a", OTHER_A), ("b", OTHER_B)):
        np.testing.assert_array_equal(read_segment(seg, ids[name], volume), array)


def test_overwrite_all_takes_what_the_run_writes_from_every_other_segment(scene_nodes):
    volume, seg, ids, editor = scene_nodes
    editor.SetOverwriteMode(EDITOR.OverwriteAllSegments)
    run(volume, seg, ids["edited"], editor)
    np.testing.assert_array_equal(read_segment(seg, ids["edited"], volume), RUN)
    np.testing.assert_array_equal(read_segment(seg, ids["a"], volume), OTHER_A & ~RUN)
    np.testing.assert_array_equal(read_segment(seg, ids["b"], volume), OTHER_B & ~RUN)


def test_inside_all_segments_includes_the_edited_segment(scene_nodes):
    volume, seg, ids, editor = scene_nodes
    own = box(slice(2, 4), slice(12, 18), slice(0, 6))  # the edited segment's own voxels, outside a and b
    slicer.util.updateSegmentBinaryLabelmapFromArray(own, seg, ids["edited"], volume)
    editor.SetOverwriteMode(EDITOR.OverwriteNone)
    editor.SetMaskMode(SEG_NODE.EditAllowedInsideAllSegments)
    rules = EditRules.from_editor(editor, seg, ids["edited"], volume)
    np.testing.assert_array_equal(rules.editable, (OTHER_A | OTHER_B | own).astype(bool))
    run(volume, seg, ids["edited"], editor)  # the run covers only part of `own`: inside it, the rest is cleared
    expected = (RUN & (OTHER_A | OTHER_B | own)).astype(np.uint8)
    np.testing.assert_array_equal(read_segment(seg, ids["edited"], volume), expected)


def test_outside_all_segments_excludes_the_edited_segment(scene_nodes):
    volume, seg, ids, editor = scene_nodes
    slicer.util.updateSegmentBinaryLabelmapFromArray(box(2, slice(12, 18), slice(0, 6)), seg, ids["edited"], volume)
    editor.SetMaskMode(SEG_NODE.EditAllowedOutsideAllSegments)
    np.testing.assert_array_equal(EditRules.from_editor(editor, seg, ids["edited"], volume).editable, ~(OTHER_A | OTHER_B).astype(bool))


def test_visible_means_the_segments_own_visibility(scene_nodes):
    volume, seg, ids, editor = scene_nodes
    seg.GetDisplayNode().SetVisibility(False)  # the whole segmentation hidden in views: its segments keep their own flag
    seg.GetDisplayNode().SetSegmentVisibility(ids["b"], False)
    editor.SetMaskMode(SEG_NODE.EditAllowedInsideVisibleSegments)
    np.testing.assert_array_equal(EditRules.from_editor(editor, seg, ids["edited"], volume).editable, OTHER_A.astype(bool))


def test_an_editor_on_another_segmentation_does_not_apply_and_does_not_raise(mrml, scene_nodes):
    volume, seg, ids, editor = scene_nodes
    elsewhere = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "the editor's segmentation")
    mask_id = elsewhere.GetSegmentation().AddEmptySegment("mask", "mask")
    editor.SetAndObserveSegmentationNode(elsewhere)
    editor.SetMaskMode(SEG_NODE.EditAllowedInsideSingleSegment)
    editor.SetMaskSegmentID(mask_id)  # a segment of the editor's segmentation, not of ours
    editor.SetOverwriteMode(EDITOR.OverwriteAllSegments)
    check_editor(editor, seg, volume)
    rules = EditRules.from_editor(editor, seg, ids["edited"], volume)
    assert rules.editable is None and rules.overwritten_ids == []
    run(volume, seg, ids["edited"], editor)
    np.testing.assert_array_equal(read_segment(seg, ids["a"], volume), OTHER_A)
    mrml.scene.RemoveNode(elsewhere)


def test_editor_settings_that_cannot_apply_are_refused_in_one_line(mrml, scene_nodes):
    volume, seg, ids, editor = scene_nodes
    editor.SetMaskMode(SEG_NODE.EditAllowedInsideSingleSegment)
    with pytest.raises(InputError, match="inside a segment' but names none"):
        check_editor(editor, seg, volume)
    editor.SetMaskMode(SEG_NODE.EditAllowedEverywhere)
    other_volume = mrml.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "another scan")
    editor.SetAndObserveSourceVolumeNode(other_volume)
    editor.SetSourceVolumeIntensityMask(True)
    with pytest.raises(InputError, match="belongs to its source volume 'another scan', not 'writer volume'") as raised:
        EditRules.from_editor(editor, seg, ids["edited"], volume)
    assert "\n" not in str(raised.value)
    mrml.scene.RemoveNode(other_volume)


def test_intensity_range_of_the_source_volume_masks_the_run(scene_nodes):
    volume, seg, ids, editor = scene_nodes
    editor.SetOverwriteMode(EDITOR.OverwriteNone)
    editor.SetSourceVolumeIntensityMask(True)
    editor.SetSourceVolumeIntensityMaskRange(1500, 2000)  # voxel value = its flat index
    run(volume, seg, ids["edited"], editor)
    voxels = np.arange(np.prod(SHAPE)).reshape(SHAPE)
    np.testing.assert_array_equal(read_segment(seg, ids["edited"], volume), RUN & (voxels >= 1500) & (voxels <= 2000))


def test_a_failed_write_changes_nothing_and_records_no_undo(scene_nodes, monkeypatch):
    volume, seg, ids, editor = scene_nodes
    editor.SetOverwriteMode(EDITOR.OverwriteAllSegments)
    real, calls = writer.write_segment, []

    def failing(array, *args):
        calls.append(1)
        if len(calls) == 2:  # the edited segment is written, then the first overwritten one fails
            raise RuntimeError("write failed")
        real(array, *args)

    monkeypatch.setattr(writer, "write_segment", failing)
    out = SegmentWriter()
    rules = EditRules.from_editor(editor, seg, ids["edited"], volume)
    with pytest.raises(RuntimeError):
        out.apply(volume, seg, ids["edited"], AXIS, {s: RUN[s] for s in SLICES}, SLICES, rules)
    monkeypatch.setattr(writer, "write_segment", real)
    assert not read_segment(seg, ids["edited"], volume).any() and not out.can_undo(seg)
    np.testing.assert_array_equal(read_segment(seg, ids["a"], volume), OTHER_A)
    np.testing.assert_array_equal(read_segment(seg, ids["b"], volume), OTHER_B)


def test_undo_puts_back_the_voxels_the_run_changed_and_keeps_later_edits(scene_nodes):
    # Undo used to write back each segment as it was before the run, dropping what the annotator painted since.
    volume, seg, ids, editor = scene_nodes
    editor.SetOverwriteMode(EDITOR.OverwriteAllSegments)
    out = run(volume, seg, ids["edited"], editor)
    np.testing.assert_array_equal(read_segment(seg, ids["a"], volume), OTHER_A & ~RUN)
    painted = read_segment(seg, ids["edited"], volume)
    painted[5, 0:3, 0:3] = 1  # a later paint stroke on slice 5 (not a run slice) ...
    painted[2, 5, 5] = 0  # ... and one erased voxel the run had written
    writer.write_segment(painted, seg, ids["edited"], volume)
    b_painted = read_segment(seg, ids["b"], volume)
    b_painted[0, 0, 29] = 1  # and segment b edited elsewhere
    writer.write_segment(b_painted, seg, ids["b"], volume)
    assert out.undo(seg)
    expected = np.zeros(SHAPE, np.uint8)
    expected[5, 0:3, 0:3] = 1  # the paint stays; the run's voxels are as before the run (empty)
    np.testing.assert_array_equal(read_segment(seg, ids["edited"], volume), expected)
    np.testing.assert_array_equal(read_segment(seg, ids["a"], volume), OTHER_A)  # what the run took, given back
    b_expected = OTHER_B.copy()
    b_expected[0, 0, 29] = 1
    np.testing.assert_array_equal(read_segment(seg, ids["b"], volume), b_expected)
    assert not out.can_undo(seg)
