"""Scenes a user builds that the module's writer must handle (real MRML, slicer-core).

A volume under a parent transform that the segmentation does not share: what is written reads back as written.  slicer.util.updateSegmentBinaryLabelmapFromArray applies the transform between the
labelmap and the segmentation twice (vtkSlicerSegmentationsModuleLogic.cxx, ImportLabelmapToSegmentationNode with
updatedSegmentIDs: TransformOrientedImage, then the same transform passed on and applied again), so the writer must
not take that path there."""
import numpy as np
import pytest
import slicer
import vtk
from vtk.util.numpy_support import vtk_to_numpy

from SlideSAMLib.errors import InputError
from SlideSAMSlicer.logic import SlideSAMLogic
from SlideSAMSlicer.writer import read_segment, write_segment

SHAPE = (6, 20, 30)


def small_volume(mrml, name):
    """A blank int16 volume of SHAPE (k, j, i), 1 mm voxels."""
    volume = mrml.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    slicer.util.updateVolumeFromArray(volume, np.zeros(SHAPE, np.int16))
    return volume


def test_a_written_segment_reads_back_the_same_under_a_volume_transform(mrml):
    volume = small_volume(mrml, "moved volume")
    transform = mrml.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    m = vtk.vtkMatrix4x4()
    m.SetElement(0, 3, 7.0)  # 7 mm along R
    m.SetElement(1, 3, -3.0)
    transform.SetMatrixTransformToParent(m)
    volume.SetAndObserveTransformNodeID(transform.GetID())
    seg = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "unmoved seg")
    seg.CreateDefaultDisplayNodes()
    seg.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    sid = seg.GetSegmentation().AddEmptySegment("s", "s")
    mask = np.zeros(SHAPE, np.uint8)
    mask[2:4, 5:15, 5:20] = 1
    try:
        write_segment(mask, seg, sid, volume)
        np.testing.assert_array_equal(read_segment(seg, sid, volume), mask)
        # and it lies where the volume's voxels are in the world (once transformed, not twice, nor not at all)
        stored = slicer.vtkOrientedImageData()
        seg.GetBinaryLabelmapRepresentation(sid, stored)
        to_world = vtk.vtkMatrix4x4()
        stored.GetImageToWorldMatrix(to_world)
        extent = stored.GetExtent()
        dims = stored.GetDimensions()
        voxels = vtk_to_numpy(stored.GetPointData().GetScalars()).reshape(dims[2], dims[1], dims[0])
        k, j, i = np.nonzero(voxels)
        ijk = np.stack([i + extent[0], j + extent[2], k + extent[4], np.ones_like(i)]).astype(float)
        centre_world = (slicer.util.arrayFromVTKMatrix(to_world) @ ijk)[:3].mean(axis=1)
        ijk_to_ras = vtk.vtkMatrix4x4()
        volume.GetIJKToRASMatrix(ijk_to_ras)
        kk, jj, ii = np.nonzero(mask)
        expected = (slicer.util.arrayFromVTKMatrix(ijk_to_ras) @ np.stack([ii, jj, kk, np.ones_like(ii)]).astype(float))[:3].mean(axis=1)
        np.testing.assert_allclose(centre_world, expected + [7.0, -3.0, 0.0], atol=1e-6)
    finally:
        for node in (volume, seg, transform):
            mrml.scene.RemoveNode(node)


def test_a_segmentation_stored_as_surfaces_is_refused_before_any_run(mrml):
    # Slicer cannot import a labelmap into it (ImportLabelmapToSegmentationNode: "is not binary labelmap"); the run
    # would compute everything and fail when writing.
    volume = small_volume(mrml, "v")
    seg = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "from a model")
    try:
        SlideSAMLogic._checkNodes(volume, seg)  # a new segmentation: binary labelmap, accepted
        seg.GetSegmentation().SetSourceRepresentationName(slicer.vtkSegmentationConverter.GetClosedSurfaceRepresentationName())
        with pytest.raises(InputError, match=r"^segmentation 'from a model' is stored as 'Closed surface', not as a binary labelmap: .*Representations") as error:
            SlideSAMLogic._checkNodes(volume, seg)
        assert "\n" not in str(error.value)
    finally:
        for node in (volume, seg):
            mrml.scene.RemoveNode(node)


def test_the_local_engine_is_made_on_the_main_thread(mrml, monkeypatch):
    # Making the engine reads the application settings (slicer.app.settings(), a QSettings of the main thread); the
    # session itself is made on the worker thread. Session 13's audit: the worker read them.
    import threading

    from SlideSAMLib.engine_process import EngineSession

    volume = small_volume(mrml, "v")
    logic = SlideSAMLogic()  # no model, no server: the local engine (its process starts on first use, not here)
    reads, made = [], []
    monkeypatch.setattr(logic, "engineSettingPython", lambda: reads.append(threading.current_thread()))
    try:
        get = logic._sessionGetter(volume)
        worker = threading.Thread(target=lambda: made.append(get()))
        worker.start()
        worker.join()
        assert isinstance(made[0], EngineSession)
        assert reads == [threading.main_thread()]
    finally:
        logic.stopEngine()
        mrml.scene.RemoveNode(volume)


def _import(mrml, seg, name, array, ijk_to_ras):
    """A segment made from a labelmap on its own grid (ijk_to_ras), as Slicer imports one."""
    labelmap = mrml.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", name)
    slicer.util.updateVolumeFromArray(labelmap, array.astype(np.uint8))
    labelmap.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(ijk_to_ras))
    before = set(seg.GetSegmentation().GetSegmentIDs())
    assert slicer.modules.segmentations.logic().ImportLabelmapToSegmentationNode(labelmap, seg)
    mrml.scene.RemoveNode(labelmap)
    (sid,) = set(seg.GetSegmentation().GetSegmentIDs()) - before
    seg.GetSegmentation().GetSegment(sid).SetName(name)
    return sid


def _stored(seg, sid):
    image = slicer.vtkOrientedImageData()
    seg.GetBinaryLabelmapRepresentation(sid, image)
    m = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(m)
    return slicer.util.arrayFromVTKMatrix(m), image.GetExtent(), vtk_to_numpy(image.GetPointData().GetScalars()).copy()


def test_a_segment_on_another_grid_is_refused_not_resampled_and_one_on_the_same_lattice_is_written(mrml):
    # The writer replaces a whole segment with a labelmap on the volume's grid; a segment stored on a finer grid (an
    # oversampled segmentation) would be resampled on every slice, not only those the run replaces.
    from SlideSAMSlicer.writer import EditRules, SegmentWriter, check_grid

    volume = small_volume(mrml, "CT")
    volume.SetSpacing(0.8, 0.8, 2.5)
    grid = np.diag([0.8, 0.8, 2.5, 1.0])
    seg = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "oversampled")
    seg.CreateDefaultDisplayNodes()
    fine_array = np.zeros((SHAPE[0], SHAPE[1] * 2, SHAPE[2] * 2), np.uint8)
    fine_array[1:3, 11:19, 13:27] = 1  # edges that fall between the volume's voxels
    fine = _import(mrml, seg, "fine", fine_array, np.diag([0.4, 0.4, 2.5, 1.0]))  # Specify geometry, oversampling 2
    cropped = np.zeros((2, 5, 6), np.uint8)
    cropped[:, 1:4, 2:5] = 1
    shifted = grid.copy()
    shifted[:3, 3] = grid[:3, :3] @ [10, 4, 3]  # a sub-block of the volume's grid: voxel (10, 4, 3) first
    same = _import(mrml, seg, "same lattice", cropped, shifted)
    empty = seg.GetSegmentation().AddEmptySegment("empty", "empty")
    try:
        with pytest.raises(InputError, match=r"^segment 'fine' of 'oversampled' is stored on another voxel grid \(0.4x0.4x2.5 mm\) than 'CT' \(0.8x0.8x2.5 mm\).*Specify geometry\)$") as error:
            SlideSAMLogic._checkNodes(volume, seg, "fine")  # by name, as the panel may give it
        assert "\n" not in str(error.value)
        SlideSAMLogic._checkNodes(volume, seg, same)
        SlideSAMLogic._checkNodes(volume, seg, empty)
        check_grid(seg, [same, empty, None, ""], volume)
        # The writer refuses too (a run whose overwrite mode would take voxels from the fine segment), before writing
        before = {sid: _stored(seg, sid) for sid in (fine, same)}
        mask = np.zeros(SHAPE, bool)
        mask[2, 4:12, 5:15] = True
        writer = SegmentWriter()
        with pytest.raises(InputError, match="^segment 'fine'"):
            writer.apply(volume, seg, same, 2, {2: mask[2]}, [2], EditRules(overwritten_ids=[fine]))
        for sid in (fine, same):
            matrix, extent, voxels = _stored(seg, sid)
            np.testing.assert_allclose(matrix, before[sid][0])
            assert extent == before[sid][1] and np.array_equal(voxels, before[sid][2])
        assert not writer.can_undo(seg)
        # Without the fine segment in the way, the same-lattice segment is written: its slice 2 replaced, slice 3 kept
        writer.apply(volume, seg, same, 2, {2: mask[2]}, [2], EditRules())
        result = read_segment(seg, same, volume)
        expected = np.zeros(SHAPE, np.uint8)
        expected[3:5, 5:8, 12:15] = 1  # the cropped block at voxel (10, 4, 3): slices 3-4
        expected[2] = mask[2]
        np.testing.assert_array_equal(result, expected)
    finally:
        for node in (volume, seg):
            mrml.scene.RemoveNode(node)


def test_a_volume_whose_spacing_is_edited_gets_a_new_session_and_a_moved_one_keeps_its_own(mrml, slidesam_model):
    # The session was given the spacing when it was made (the stop rule measures mm along the slice axis), the engine
    # process and the server the whole geometry; editing it in the Volumes module changes neither voxel MTime.
    volume = small_volume(mrml, "respaced")
    volume.SetSpacing(0.8, 0.8, 2.5)
    transform = mrml.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    logic = SlideSAMLogic(model=slidesam_model)
    try:
        first = logic.session(volume)
        assert logic.session(volume) is first
        volume.SetAndObserveTransformNodeID(transform.GetID())  # moved: prompts use the transform at each run
        assert logic.session(volume) is first
        volume.SetSpacing(0.8, 0.8, 5.0)
        second = logic.session(volume)
        assert second is not first
        np.testing.assert_allclose(second.session.spacing, (0.8, 0.8, 5.0))  # the in-process Session's own
    finally:
        logic.clearState()
        for node in (volume, transform):
            mrml.scene.RemoveNode(node)
