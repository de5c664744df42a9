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


def test_a_written_segment_reads_back_the_same_under_a_volume_transform(mrml):
    volume = mrml.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "moved volume")
    slicer.util.updateVolumeFromArray(volume, np.zeros(SHAPE, np.int16))
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
    volume = mrml.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "v")
    slicer.util.updateVolumeFromArray(volume, np.zeros(SHAPE, np.int16))
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

    volume = mrml.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "v")
    slicer.util.updateVolumeFromArray(volume, np.zeros(SHAPE, np.int16))
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
