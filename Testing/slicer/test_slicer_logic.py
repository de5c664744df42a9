"""SlideSAMLogic on real MRML (slicer-core) and a real CT: geometry, segments, saving, cancel, restart, undo.

One kidney propagation is paid once (module fixture); later runs reuse the volume's Session,
so they cost decoder passes only.  Reference: TotalSegmentator's kidney_left (label 3).
"""
import types

import numpy as np
import pytest
import SimpleITK as sitk
import slicer
import vtk

import SlideSAM
from SlideSAMLib.errors import InputError
from SlideSAMLib.propagation import StopRule
from SlideSAMSlicer import geometry
from SlideSAMSlicer.writer import EditRules, read_segment
from slicer_data import dice, lps_to_ras

OTHER = "overlapping block"


def inner(ct):
    """Slices of a run limited to `short_range(ct)` that match a full run exactly (the two edge slices lack a neighbour window)."""
    return slice(ct.k - 3, ct.k + 4)


def short_range(ct):
    """Later runs reuse the cached embeddings but still pay the decoder: keep them to 9 slices."""
    return (ct.k - 4, ct.k + 4)


def matrix(volume_node):
    m = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(m)
    return slicer.util.arrayFromVTKMatrix(m)


@pytest.fixture(scope="module")
def logic(slidesam_model):
    return SlideSAM.SlideSAMLogic(model=slidesam_model)


@pytest.fixture(scope="module")
def kidney(mrml, ct, logic):
    """The expensive run: logic.segment from a RAS box, next to a pre-existing overlapping segment."""
    seg = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "kidney run")
    seg.CreateDefaultDisplayNodes()
    seg.SetReferenceImageGeometryParameterFromVolumeNode(ct.node)
    other_id = seg.GetSegmentation().AddEmptySegment("other", OTHER)
    block = np.zeros_like(ct.reference)
    block[ct.k - 6 : ct.k + 6, 20:60, 20:50] = 1  # overlaps the kidney on the prompt slices
    slicer.util.updateSegmentBinaryLabelmapFromArray(block, seg, other_id, ct.node)
    other_before = read_segment(seg, other_id, ct.node)
    progress = []
    report = logic.segment(ct.node, seg, "kidney_left", box=ct.box_ras, progress=lambda f, m: progress.append(f))
    result = read_segment(seg, report.segmentId, ct.node)
    engine = logic.session(ct.node).segment(box=ct.box_ijk)  # same Session: cached embeddings, engine coordinates
    return types.SimpleNamespace(seg=seg, report=report, result=result, engine=engine, other_id=other_id,
                                 other_before=other_before, block=block, progress=progress)


def test_volume_node_has_the_file_voxels_and_geometry(ct):
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(ct.node), sitk.GetArrayFromImage(ct.image))
    direction = np.array(ct.image.GetDirection()).reshape(3, 3) * np.array(ct.image.GetSpacing())
    lps_to_ras_flip = np.diag([-1.0, -1.0, 1.0])
    np.testing.assert_allclose(matrix(ct.node)[:3, :3], lps_to_ras_flip @ direction, atol=1e-6)
    np.testing.assert_allclose(matrix(ct.node)[:3, 3], lps_to_ras(ct.image.GetOrigin()), atol=1e-4)


def test_logic_result_matches_engine_and_reference(ct, kidney):
    engine_mask = kidney.engine.volume_mask()
    agreement = dice(kidney.result, engine_mask)
    logic_dice, engine_dice = dice(kidney.result, ct.reference), dice(engine_mask, ct.reference)
    print(f"kidney_left: logic Dice {logic_dice:.4f}, engine Dice {engine_dice:.4f}, agreement {agreement:.4f}; {kidney.report.summary()}")
    assert agreement >= 0.99
    assert logic_dice >= engine_dice - 0.005
    assert logic_dice > 0.6  # a floor that lost geometry (a shifted or flipped mask) cannot reach
    assert kidney.report.axis == 2 and ct.k in kidney.report.slices
    assert kidney.report.createdSegment
    assert kidney.seg.GetSegmentation().GetSegment(kidney.report.segmentId).GetName() == "kidney_left"
    # every written slice was accepted, and the stop rule accepts no propagated slice under its IoU floor
    scores = kidney.report.scores
    assert set(scores) == set(kidney.report.slices)
    assert min(v for k, v in scores.items() if k != ct.k) >= StopRule().min_iou
    assert kidney.progress and max(kidney.progress) <= 1.0


def test_only_propagated_slices_are_written(kidney):
    written = set(np.nonzero(kidney.result.sum(axis=(1, 2)))[0].tolist())
    assert written <= set(kidney.report.slices)
    assert written


def test_preexisting_segment_stays_bit_identical(kidney, ct):
    assert kidney.seg.GetSegmentation().GetNumberOfSegments() == 2  # no stray segments
    np.testing.assert_array_equal(read_segment(kidney.seg, kidney.other_id, ct.node), kidney.other_before)
    assert np.any(kidney.result & kidney.block)  # the test is meaningful: the new segment overlaps it


def test_oblique_volume_gives_the_same_mask(mrml, ct, logic, kidney):
    original = matrix(ct.node)
    rotation = vtk.vtkTransform()
    rotation.RotateWXYZ(23.0, 0.3, 0.8, 0.5)
    rot = slicer.util.arrayFromVTKMatrix(rotation.GetMatrix())
    try:
        ct.node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(rot @ original))
        box = tuple((rot @ np.r_[c, 1.0])[:3] for c in ct.box_ras)
        seg = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "oblique")
        report = logic.segment(ct.node, seg, "kidney_left", box=box, sliceRange=short_range(ct))
        oblique = read_segment(seg, report.segmentId, ct.node)
        np.testing.assert_array_equal(oblique[inner(ct)], kidney.result[inner(ct)])
        assert not oblique[: ct.k - 4].any() and not oblique[ct.k + 5 :].any()
        assert report.encoderPasses == 0  # the Session (embeddings) survived the geometry change
        axial = mrml.scene.AddNewNodeByClass("vtkMRMLSliceNode")
        axial.SetOrientation("Axial")
        with pytest.raises(InputError, match="oblique"):
            geometry.slice_view_axis_and_index(ct.node, axial)
    finally:
        ct.node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(original))


def test_saved_segmentation_reads_back_with_slicerio(tmp_path, ct, kidney):
    import slicerio

    path = tmp_path / "kidney.seg.nrrd"
    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetFileName(str(path))
    assert storage.WriteData(kidney.seg)
    segmentation = slicerio.read_segmentation(str(path))
    names = [s["name"] for s in segmentation["segments"]]
    assert "kidney_left" in names and OTHER in names
    ijk_to_lps = np.asarray(segmentation["ijkToLPS"])
    ijk_to_ras_file = np.diag([-1.0, -1.0, 1.0, 1.0]) @ ijk_to_lps
    vol = matrix(ct.node)
    np.testing.assert_allclose(ijk_to_ras_file[:3, :3], vol[:3, :3], atol=1e-5)
    # The file's voxel grid must be the volume's grid, shifted by a whole number of voxels.
    offset = np.linalg.solve(vol[:3, :3], ijk_to_ras_file[:3, 3] - vol[:3, 3])
    np.testing.assert_allclose(offset, np.rint(offset), atol=1e-4)
    kidney_segment = next(s for s in segmentation["segments"] if s["name"] == "kidney_left")
    voxels = np.asarray(segmentation["voxels"])  # slicerio: ([layer,] i, j, k) order
    if voxels.ndim == 4:
        voxels = voxels[kidney_segment.get("layer", 0)]
    mask_ijk = voxels == kidney_segment["labelValue"]
    restored = np.zeros_like(kidney.result)
    o = np.rint(offset).astype(int)
    i, j, k = np.nonzero(mask_ijk)
    restored[k + o[2], j + o[1], i + o[0]] = 1
    np.testing.assert_array_equal(restored, kidney.result)


def test_roi_and_point_list_nodes_give_the_same_result(mrml, ct, logic, kidney):
    roi = mrml.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode")
    c0, c1 = (np.asarray(c) for c in ct.box_ras)
    roi.SetCenterWorld(*((c0 + c1) / 2))
    roi.SetSizeWorld(*np.abs(c1 - c0))
    seg = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "roi prompt")
    report = logic.segment(ct.node, seg, None, box=roi, sliceRange=short_range(ct))
    np.testing.assert_array_equal(read_segment(seg, report.segmentId, ct.node)[inner(ct)], kidney.result[inner(ct)])
    assert seg.GetSegmentation().GetSegment(report.segmentId).GetName() == SlideSAM.DEFAULT_SEGMENT_NAME
    # An include click at the kidney's centre plus the box: lands on the prompt slice, result stays the kidney.
    points = mrml.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode")
    js, is_ = np.nonzero(ct.reference[ct.k])
    centre = lps_to_ras(ct.image.TransformContinuousIndexToPhysicalPoint([float(is_.mean()), float(js.mean()), float(ct.k)]))
    points.AddControlPoint(*centre)
    seg2 = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "roi + click")
    report2 = logic.segment(ct.node, seg2, "k", box=roi, points=points, sliceRange=short_range(ct))
    assert ct.k in report2.slices
    assert dice(read_segment(seg2, report2.segmentId, ct.node)[inner(ct)], ct.reference[inner(ct)]) > 0.7


def test_one_click_alone_segments_the_spleen(mrml, ct, logic, data_dir):
    """A single include click from a markups point list, no box: the embedded box-only model gets the click's
    box search (SlideSAMLib/clicks.py). Fed to its decoder as a point, this click gave Dice 0.00."""
    from SlideSAMLib.training.prompts import deepest_point

    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(data_dir / "ct_abdomen" / "example_seg_fast_force_split.nii.gz")))
    spleen = labels == 1
    k = int(spleen.sum(axis=(1, 2)).argmax())
    x, y = deepest_point(spleen[k])
    points = mrml.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode")
    points.AddControlPoint(*lps_to_ras(ct.image.TransformContinuousIndexToPhysicalPoint([float(x), float(y), float(k)])))
    seg = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "click only")
    lo, hi = k - 4, min(k + 4, spleen.shape[0] - 1)
    report = logic.segment(ct.node, seg, "spleen", points=points, sliceRange=(lo, hi))
    mask = read_segment(seg, report.segmentId, ct.node)
    assert mask[k, y, x] and set(report.slices) == set(range(lo, hi + 1))
    assert report.prompt == "click-search" and "turned into a box by search" in report.summary()
    assert dice(mask[lo : hi + 1], spleen[lo : hi + 1]) > 0.85


def test_cancel_keeps_a_consistent_partial_result(mrml, ct, logic, kidney):
    seg = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "cancelled")
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 4

    report = logic.segment(ct.node, seg, "partial", box=ct.box_ras, cancel=cancel)
    assert report.cancelled and "cancelled" in report.stopped.values()
    written = sorted(np.nonzero(read_segment(seg, report.segmentId, ct.node).sum(axis=(1, 2)))[0].tolist())
    assert ct.k in written and written == list(range(written[0], written[-1] + 1))  # contiguous around the prompt
    assert len(written) < len(kidney.report.slices)
    assert set(written) <= set(report.slices)


def test_restart_replaces_only_that_side_and_undo_restores(mrml, ct, logic, kidney):
    seg = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "restart")
    seg.SetReferenceImageGeometryParameterFromVolumeNode(ct.node)
    sid = seg.GetSegmentation().AddEmptySegment("kidney", "kidney")
    initial = kidney.result.copy()
    corrected_slice = ct.k + 3
    edited = initial.copy()
    edited[corrected_slice] = ct.reference[corrected_slice]  # the annotator's correction
    edited[corrected_slice + 4 :] = 0  # ... and a wrong tail that the restart must replace
    slicer.util.updateSegmentBinaryLabelmapFromArray(edited, seg, sid, ct.node)
    before = read_segment(seg, sid, ct.node)
    np.testing.assert_array_equal(before, edited)
    point_on_slice = lps_to_ras(ct.image.TransformContinuousIndexToPhysicalPoint([10.0, 10.0, float(corrected_slice)]))
    report = logic.restart(ct.node, seg, sid, point_on_slice, axis="K", direction="up")
    after = read_segment(seg, sid, ct.node)
    np.testing.assert_array_equal(after[: corrected_slice + 1], before[: corrected_slice + 1])  # this side untouched
    assert all(s >= corrected_slice for s in report.slices)
    assert after[corrected_slice + 4 :].any()  # the tail came back from propagation
    assert report.encoderPasses < len(report.slices)  # windows encoded by the first run are reused
    assert dice(after, ct.reference) >= dice(before, ct.reference)
    assert logic.undo(seg)
    np.testing.assert_array_equal(read_segment(seg, sid, ct.node), before)
    with pytest.raises(InputError, match="empty"):
        logic.restart(ct.node, seg, sid, 0, axis=2, direction="up")


def test_undo_of_a_created_segment_removes_it(mrml, ct, logic, kidney):
    seg = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "undo")
    report = logic.segment(ct.node, seg, "to undo", box=ct.box_ras, sliceRange=(ct.k - 2, ct.k + 2))
    assert set(report.slices) <= set(range(ct.k - 2, ct.k + 3))
    assert logic.canUndo(seg) and logic.undo(seg)
    assert seg.GetSegmentation().GetSegment(report.segmentId) is None
    assert not logic.undo(seg)


def test_segment_editor_masking_is_honoured(mrml, ct, logic, kidney):
    seg = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "masking")
    seg.CreateDefaultDisplayNodes()
    seg.SetReferenceImageGeometryParameterFromVolumeNode(ct.node)
    other = seg.GetSegmentation().AddEmptySegment("other", "other")
    slicer.util.updateSegmentBinaryLabelmapFromArray(kidney.block, seg, other, ct.node)
    editor = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
    editor.SetAndObserveSegmentationNode(seg)  # editor settings belong to the editor's own segmentation and source volume
    editor.SetAndObserveSourceVolumeNode(ct.node)
    editor.SetOverwriteMode(slicer.vtkMRMLSegmentEditorNode.OverwriteNone)  # Slicer: may overlap, removes nothing from others
    report = logic.segment(ct.node, seg, "masked", box=ct.box_ras, editorNode=editor, sliceRange=short_range(ct))
    masked = read_segment(seg, report.segmentId, ct.node)
    np.testing.assert_array_equal(read_segment(seg, other, ct.node), kidney.block)  # not overwritten
    np.testing.assert_array_equal(masked[inner(ct)], kidney.result[inner(ct)])  # overlap allowed
    assert (masked & kidney.block).any()
    assert report.encoderPasses == 0  # embeddings reused across segments

    # Overwrite allowed: the other segment loses exactly what the new one adds; intensity range respected.
    seg2 = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "overwrite")
    seg2.CreateDefaultDisplayNodes()
    seg2.SetReferenceImageGeometryParameterFromVolumeNode(ct.node)
    other2 = seg2.GetSegmentation().AddEmptySegment("other", "other")
    slicer.util.updateSegmentBinaryLabelmapFromArray(kidney.block, seg2, other2, ct.node)
    editor.SetAndObserveSegmentationNode(seg2)
    editor.SetOverwriteMode(slicer.vtkMRMLSegmentEditorNode.OverwriteAllSegments)
    editor.SetSourceVolumeIntensityMask(True)
    editor.SetSourceVolumeIntensityMaskRange(100, 400)
    report2 = logic.segment(ct.node, seg2, "overwrite", box=ct.box_ras, editorNode=editor, sliceRange=short_range(ct))
    new = read_segment(seg2, report2.segmentId, ct.node).astype(bool)
    hu = slicer.util.arrayFromVolume(ct.node)
    in_range = (hu >= 100) & (hu <= 400)
    np.testing.assert_array_equal(new[inner(ct)], (kidney.result.astype(bool) & in_range)[inner(ct)])
    assert not (new & ~in_range).any() and (new & kidney.block.astype(bool)).any()
    np.testing.assert_array_equal(read_segment(seg2, other2, ct.node).astype(bool), kidney.block.astype(bool) & ~new)
    assert logic.undo(seg2)  # one step restores both segments
    np.testing.assert_array_equal(read_segment(seg2, other2, ct.node), kidney.block)
    assert seg2.GetSegmentation().GetSegment(report2.segmentId) is None  # it was created by that run

    # Editable area "outside all segments": nothing is written inside the other segment.
    editor.SetAndObserveSegmentationNode(seg)
    rules = EditRules.from_editor(editor, seg, report.segmentId, ct.node)
    assert rules.overwritten_ids == [other]
    editor.SetMaskMode(slicer.vtkMRMLSegmentationNode.EditAllowedOutsideAllSegments)
    editor.SetSourceVolumeIntensityMask(False)
    rules = EditRules.from_editor(editor, seg, report.segmentId, ct.node)
    np.testing.assert_array_equal(rules.editable, ~kidney.block.astype(bool))
