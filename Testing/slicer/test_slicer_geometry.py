"""RAS <-> IJK and slice-view alignment on real MRML nodes (no model needed)."""
import math

import numpy as np
import pytest
import slicer
import vtk

from SlideSAMLib.errors import InputError
from SlideSAMSlicer import geometry


@pytest.fixture(scope="module")
def volume(mrml, data_dir):
    return mrml.volumes.AddArchetypeVolume(str(data_dir / "ct_abdomen" / "example_ct.nii.gz"), "geometry_ct", 0)


@pytest.fixture
def oblique(mrml, volume):
    """A copy of the volume's geometry with flipped, rotated, anisotropic axes."""
    node = mrml.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "oblique")
    node.SetAndObserveImageData(volume.GetImageData())
    t = vtk.vtkTransform()
    t.Translate(-20, 35, 7)
    t.RotateWXYZ(31, 1, 2, 3)
    t.Scale(-0.8, 1.2, 2.5)  # a flipped I axis
    node.SetIJKToRASMatrix(t.GetMatrix())
    return node


def test_round_trip_and_voxel_centres(oblique):
    ijk = np.array([[0, 0, 0], [10.5, 20.25, 30], [121, 100, 111]])
    np.testing.assert_allclose(geometry.ras_to_ijk(oblique, geometry.ijk_to_ras(oblique, ijk)), ijk, atol=1e-9)


def test_parent_transform_is_included(mrml, volume):
    transform = mrml.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    m = vtk.vtkMatrix4x4()
    m.SetElement(0, 3, 15.0)
    transform.SetMatrixTransformToParent(m)
    volume.SetAndObserveTransformNodeID(transform.GetID())
    try:
        ras = geometry.ijk_to_ras(volume, [[5, 6, 7]])
        volume.SetAndObserveTransformNodeID(None)
        np.testing.assert_allclose(ras - geometry.ijk_to_ras(volume, [[5, 6, 7]]), [[15.0, 0, 0]])
    finally:
        volume.SetAndObserveTransformNodeID(None)


def test_views_aligned_with_the_volume_give_their_axis(mrml, volume):
    expected = {"Axial": 2, "Sagittal": 0, "Coronal": 1}
    for orientation, axis in expected.items():
        view = mrml.scene.AddNewNodeByClass("vtkMRMLSliceNode")
        view.SetOrientation(orientation)
        assert geometry.slice_view_axis_and_index(volume, view)[0] == axis


def test_oblique_view_is_refused_with_a_message(mrml, oblique):
    view = mrml.scene.AddNewNodeByClass("vtkMRMLSliceNode")
    view.SetOrientation("Axial")
    with pytest.raises(InputError, match="oblique.*Rotate to volume plane"):
        geometry.slice_view_axis_and_index(oblique, view)


def test_view_rotated_to_the_volume_plane(mrml, oblique):
    ijk_to_ras = geometry.ijk_to_world(oblique)
    normal = geometry.slice_plane_normals(oblique)[2]
    x = ijk_to_ras[:3, 0] / np.linalg.norm(ijk_to_ras[:3, 0])
    y = np.cross(normal, x)
    centre = geometry.ijk_to_ras(oblique, [[60, 50, 42]])[0]
    view = mrml.scene.AddNewNodeByClass("vtkMRMLSliceNode")
    slice_to_ras = np.eye(4)
    slice_to_ras[:3, 0], slice_to_ras[:3, 1], slice_to_ras[:3, 2], slice_to_ras[:3, 3] = x, y, normal, centre
    view.GetSliceToRAS().DeepCopy(slicer.util.vtkMatrixFromArray(slice_to_ras))
    view.UpdateMatrices()
    assert geometry.slice_view_axis_and_index(oblique, view) == (2, 42)
    # A prompt placed on that view: picked, pinned to slice 42, box corners in IJK.
    corners = geometry.ijk_to_ras(oblique, [[30, 20, 42.2], [70, 60, 41.9]])
    axis, index, picked = geometry.pick_prompt_view(oblique, [view], box=corners)
    assert (axis, index, picked) == (2, 42, view)
    prompt = geometry.engine_prompt(oblique, box=corners, axis=axis, index=index)
    np.testing.assert_allclose(prompt.box_ijk, [[30, 20, 42], [70, 60, 42]], atol=1e-6)


def test_prompt_off_the_slice_is_refused(oblique):
    corners = geometry.ijk_to_ras(oblique, [[30, 20, 42], [70, 60, 45]])
    with pytest.raises(InputError, match="away from slice"):
        geometry.engine_prompt(oblique, box=corners, axis=2, index=42)


def test_box_corners_and_points_convert_to_ijk(mrml, oblique):
    a, b = geometry.ijk_to_ras(oblique, [[20, 30, 50], [40, 45, 50]])
    points = mrml.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode")
    points.AddControlPoint(*geometry.ijk_to_ras(oblique, [[25, 35, 50]])[0])
    points.AddControlPoint(*geometry.ijk_to_ras(oblique, [[35, 40, 50]])[0])
    points.SetNthControlPointSelected(1, False)  # unselected = exclude
    prompt = geometry.engine_prompt(oblique, points=points, axis=2, index=50)
    assert [inc for _, inc in prompt.points_ijk] == [True, False]
    np.testing.assert_allclose([p for p, _ in prompt.points_ijk], [[25, 35, 50], [35, 40, 50]], atol=1e-6)
    box = geometry.engine_prompt(oblique, box=(a, b))
    np.testing.assert_allclose(box.box_ijk, [[20, 30, 50], [40, 45, 50]], atol=1e-6)


def test_box_dragged_off_the_image_is_clipped(volume):
    corners = geometry.ijk_to_ras(volume, [[-30, 10, 5], [40, 200, 5]])
    prompt = geometry.engine_prompt(volume, box=corners)
    np.testing.assert_allclose(prompt.box_ijk, [[-0.5, 10, 5], [40, 100.5, 5]])


def two_click_roi(mrml, volume, ijk_a, ijk_b):
    """An ROI placed as Slicer places one: two control points (opposite corners on one slice), which the real
    vtkMRMLMarkupsROINode turns into a box as thick as its shorter side and one centre point."""
    roi = mrml.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "two clicks")
    for corner in geometry.ijk_to_ras(volume, [ijk_a, ijk_b]):
        roi.AddControlPointWorld(*corner)
    return roi


@pytest.fixture
def grid(mrml, volume):
    """The CT's voxels on a grid aligned with RAS, isotropic (1 mm) or with 5 mm slices."""
    def make(spacing):
        node = mrml.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", f"grid {spacing}")
        node.SetAndObserveImageData(volume.GetImageData())
        node.SetSpacing(*spacing)
        return node
    return make


@pytest.mark.parametrize("spacing, corners, axis", [
    ((1.0, 1.0, 1.0), ([20, 30, 50], [60, 50, 50]), 2),  # axial, isotropic: K and J sides both 20 mm
    ((0.8, 0.8, 5.0), ([20, 40, 10], [70, 40, 14]), 1),  # coronal, 5 mm slices: its IJK extent is thinnest along K
])
def test_a_two_click_roi_without_its_view_is_refused_not_guessed(mrml, grid, spacing, corners, axis):
    node = grid(spacing)
    roi = two_click_roi(mrml, node, *corners)
    size = [0.0] * 3
    roi.GetSizeWorld(size)
    assert roi.GetNumberOfControlPoints() == 1 and sorted(size)[0] == sorted(size)[1]  # Slicer's two-click box
    with pytest.raises(InputError, match="does not show which slice it was drawn on") as raised:
        geometry.engine_prompt(node, box=roi)
    assert "\n" not in str(raised.value)
    # With the view it was drawn on, the same ROI is fine: that view decides.
    prompt = geometry.engine_prompt(node, box=roi, axis=axis, index=corners[0][axis])
    lo, hi = np.array(prompt.box_ijk)
    np.testing.assert_allclose([lo, hi], [np.minimum(*corners), np.maximum(*corners)], atol=1e-6)


@pytest.fixture
def turned(mrml, volume):
    """The CT's voxels with axes turned 15 degrees about S (in the axial plane), 0.8 x 0.8 x 2.5 mm."""
    node = mrml.scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "turned 15")
    node.SetAndObserveImageData(volume.GetImageData())
    t = vtk.vtkTransform()
    t.Translate(-40, 25, -90)
    t.RotateZ(15)
    t.Scale(0.8, 0.8, 2.5)
    node.SetIJKToRASMatrix(t.GetMatrix())
    return node


@pytest.mark.parametrize("align, grows", [(False, True), (True, False)])
def test_a_two_click_roi_on_a_turned_volume_gives_the_rectangle_drawn_once_aligned(mrml, turned, align, grows):
    # A 40 x 40 voxel square drawn on axial slice 50 of a volume turned 15 degrees against RAS (a view rotated to it).
    roi = mrml.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "turned box")
    if align:  # else the new ROI keeps the axes Slicer gives it: RAS
        assert geometry.align_roi_to_volume(roi, turned)
    for corner in geometry.ijk_to_ras(turned, [[30, 20, 50], [70, 60, 50]]):
        roi.AddControlPointWorld(*corner)  # what placing does: the real node makes the box
    lo, hi = np.array(geometry.engine_prompt(turned, box=roi, axis=2, index=50).box_ijk)
    side = hi[:2] - lo[:2]
    if grows:  # the RAS box with the two clicks as its diagonal, turned back to the voxel axes: 1 x 1.37 of the square
        np.testing.assert_allclose(sorted(side), [40, 40 * (1 + math.sqrt(3)) / 2], atol=1e-6)  # 40 x 54.6 voxels
    else:
        np.testing.assert_allclose([lo[:2], hi[:2]], [[30, 20], [70, 60]], atol=1e-6)
    assert not geometry.align_roi_to_volume(roi, turned)  # placed: left as it is


def test_aligning_an_roi_under_a_transform_and_on_a_flipped_volume(mrml, oblique):
    transform = mrml.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    t = vtk.vtkTransform()
    t.RotateX(40)
    transform.SetMatrixTransformToParent(t.GetMatrix())
    roi = mrml.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "under a transform")
    roi.SetAndObserveTransformNodeID(transform.GetID())
    assert geometry.align_roi_to_volume(roi, oblique)  # oblique: flipped I axis, rotated, anisotropic
    directions = geometry.ijk_to_world(oblique)[:3, :3]
    directions = directions / np.linalg.norm(directions, axis=0)
    for axis, getter in enumerate((roi.GetXAxisWorld, roi.GetYAxisWorld, roi.GetZAxisWorld)):
        world = [0.0] * 3
        getter(world)
        assert abs(abs(np.dot(world, directions[:, axis])) - 1) < 1e-9


def test_a_thin_roi_gives_its_thinnest_side_in_mm(mrml, grid):
    node = grid((0.8, 0.8, 5.0))
    roi = mrml.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "thin in y")
    roi.SetCenterWorld(*geometry.ijk_to_ras(node, [[40, 40, 10]])[0])
    roi.SetSizeWorld(40.0, 8.0, 20.0)  # 8 mm thick along A-P; in voxels that is 10 along J, 4 along K
    assert geometry.engine_prompt(node, box=roi).axis == 1
