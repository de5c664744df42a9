"""RAS <-> IJK for prompts and slice views, with the volume's full IJK-to-RAS matrix.

Any matrix works: flipped axes (example_ct's LPS direction (-1, -1, 1)), oblique or sheared
directions, and a linear parent transform.  Prompts become continuous IJK coordinates that
the engine (SlideSAMLib.Session) takes directly; the slice axis is the IJK axis a prompt or a
slice view is perpendicular to.
"""
import math
from typing import List, Optional, Sequence, Tuple

import numpy as np
import vtk

from SlideSAMLib.errors import InputError

# A slice view counts as aligned with a volume axis when its normal is within this angle.
ALIGNMENT_TOLERANCE_DEGREES = 1.0
# Without a slice view to pin it, an ROI's slice axis is its thinnest side only when that side is at most this
# fraction of the next one.  A box placed with two clicks in Slicer is exactly as thick as its shorter in-plane side
# (vtkMRMLMarkupsROINode::UpdateBoxROIFromControlPoints, v5.8.1 / v5.10.0): ratio 1, refused; an ROI made thin on
# purpose (a scripted one, or one resized to a slice) passes.  0.5 keeps near-ties out.
THIN_SIDE_RATIO = 0.5
AXIS_NAMES = "IJK"


def _matrix_to_array(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def ijk_to_world(volume_node) -> np.ndarray:
    """4x4 IJK -> world RAS, including a linear parent transform (a warping one is refused)."""
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    ijk_to_ras = _matrix_to_array(matrix)
    parent = volume_node.GetParentTransformNode()
    if parent is not None:
        if not parent.IsTransformToWorldLinear():
            raise InputError(
                f"volume '{volume_node.GetName()}' is under a non-linear transform: harden the transform (Data module) before segmenting"
            )
        to_world = vtk.vtkMatrix4x4()
        parent.GetMatrixTransformToWorld(to_world)
        ijk_to_ras = _matrix_to_array(to_world) @ ijk_to_ras
    return ijk_to_ras


def itk_geometry(volume_node) -> Tuple[Tuple[float, ...], Tuple[float, ...], Tuple[float, ...]]:
    """(spacing, origin, direction) in ITK's LPS convention, as a file of this volume would store them."""
    matrix = np.diag([-1.0, -1.0, 1.0, 1.0]) @ ijk_to_world(volume_node)  # RAS -> LPS
    spacing = np.linalg.norm(matrix[:3, :3], axis=0)
    direction = matrix[:3, :3] / spacing
    return tuple(float(v) for v in spacing), tuple(float(v) for v in matrix[:3, 3]), tuple(float(v) for v in direction.ravel())


def dimensions(volume_node) -> Tuple[int, int, int]:
    image = volume_node.GetImageData()
    if image is None:
        raise InputError(f"volume '{volume_node.GetName()}' has no image data: load a volume first")
    return tuple(int(d) for d in image.GetDimensions())


def ras_to_ijk(volume_node, points_ras) -> np.ndarray:
    """Continuous IJK (N, 3) of world RAS points (N, 3) — voxel centres are integers."""
    pts = np.atleast_2d(np.asarray(points_ras, dtype=float))
    if pts.shape[1] != 3 or not np.all(np.isfinite(pts)):
        raise InputError(f"{pts.tolist()} are not RAS points (x, y, z)")
    homogeneous = np.c_[pts, np.ones(len(pts))]
    return (np.linalg.inv(ijk_to_world(volume_node)) @ homogeneous.T).T[:, :3]


def ijk_to_ras(volume_node, points_ijk) -> np.ndarray:
    pts = np.atleast_2d(np.asarray(points_ijk, dtype=float))
    return (ijk_to_world(volume_node) @ np.c_[pts, np.ones(len(pts))].T).T[:, :3]


def slice_plane_normals(volume_node) -> np.ndarray:
    """Row a: the unit RAS normal of the planes of constant IJK index a (correct for sheared grids too)."""
    directions = ijk_to_world(volume_node)[:3, :3].T  # row a = world direction of IJK axis a
    normals = []
    for a in range(3):
        b, c = [x for x in range(3) if x != a]
        n = np.cross(directions[b], directions[c])
        normals.append(n / np.linalg.norm(n))
    return np.array(normals)


def axis_of_normal(volume_node, normal_ras, what: str = "the slice view") -> int:
    """The IJK axis whose slices are perpendicular to `normal_ras`; an oblique normal raises InputError."""
    n = np.asarray(normal_ras, dtype=float)
    length = np.linalg.norm(n)
    if n.shape != (3,) or not length:
        raise InputError(f"{what} has no valid normal {tuple(n)}")
    cosines = np.abs(slice_plane_normals(volume_node) @ (n / length))
    axis = int(np.argmax(cosines))
    angle = math.degrees(math.acos(min(1.0, float(cosines[axis]))))
    if angle > ALIGNMENT_TOLERANCE_DEGREES:
        raise InputError(
            f"{what} is oblique to the voxel grid of '{volume_node.GetName()}' ({angle:.1f} degrees off its {AXIS_NAMES[axis]} slices): "
            "use 'Rotate to volume plane' in the slice view's menu, or resample the volume, then place the prompt again"
        )
    return axis


def slice_view_axis_and_index(volume_node, slice_node) -> Tuple[int, int]:
    """(IJK axis, slice index) shown by a slice view; raises InputError when the view is oblique."""
    slice_to_ras = _matrix_to_array(slice_node.GetSliceToRAS())
    axis = axis_of_normal(volume_node, slice_to_ras[:3, 2], f"slice view '{slice_node.GetName()}'")
    index = int(np.rint(ras_to_ijk(volume_node, slice_to_ras[:3, 3])[0, axis]))
    return axis, index


def roi_corners_ras(roi_node) -> np.ndarray:
    """The 8 world corners of a markups ROI (any orientation)."""
    centre, size = [0.0] * 3, [0.0] * 3
    axes = [[0.0] * 3 for _ in range(3)]
    roi_node.GetCenterWorld(centre)
    roi_node.GetSizeWorld(size)
    roi_node.GetXAxisWorld(axes[0])
    roi_node.GetYAxisWorld(axes[1])
    roi_node.GetZAxisWorld(axes[2])
    if sorted(size)[1] <= 0:
        raise InputError(f"ROI '{roi_node.GetName()}' has no area yet: click two opposite corners around the structure on a slice view")
    centre, half, axes = np.array(centre), np.array(size) / 2.0, np.array(axes)
    signs = np.array([(sx, sy, sz) for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=float)
    return centre + (signs * half) @ axes


def align_roi_to_volume(roi_node, volume_node) -> bool:
    """Turn an ROI that has no point yet to the volume's voxel axes, so that two clicks give the rectangle drawn.

    Slicer's two-click box is the bounding box of the clicks in the ROI's own axes (the rotation of its
    ObjectToNodeMatrix: vtkMRMLMarkupsROINode::UpdateBoundingBoxROIFromControlPoints, v5.6.2 to main), and a new ROI's
    axes are RAS; placing never changes them (vtkSlicerMarkupsWidget / vtkSlicerROIWidget do not touch that matrix).
    On a volume rotated against RAS an RAS box around the clicks is larger than the rectangle drawn in a view rotated
    to the volume (a square at 15 degrees: 1 x 1.37 of its side). Axes of a sheared volume become the nearest
    rotation. An ROI already placed, or under a non-linear transform, is left as it is. True when it was turned."""
    if roi_node is None or volume_node is None or roi_node.GetNumberOfDefinedControlPoints() > 0:
        return False
    parent = roi_node.GetParentTransformNode()
    world_to_node = np.eye(4)
    if parent is not None:
        if not parent.IsTransformToWorldLinear():
            return False
        to_world = vtk.vtkMatrix4x4()
        parent.GetMatrixTransformToWorld(to_world)
        world_to_node = np.linalg.inv(_matrix_to_array(to_world))
    try:
        directions = world_to_node[:3, :3] @ ijk_to_world(volume_node)[:3, :3]
    except InputError:  # a volume under a warping transform: Propagate says so, in one line
        return False
    u, _, vt = np.linalg.svd(directions / np.linalg.norm(directions, axis=0))
    rotation = u @ vt  # the nearest rotation (polar decomposition); a flipped axis keeps its sign ...
    if np.linalg.det(rotation) < 0:
        rotation[:, 2] *= -1  # ... except that the ROI's axes must be right-handed (a box's bounds ignore the sign)
    object_to_node = _matrix_to_array(roi_node.GetObjectToNodeMatrix())
    object_to_node[:3, :3] = rotation
    matrix = vtk.vtkMatrix4x4()
    matrix.DeepCopy(object_to_node.ravel())
    roi_node.SetAndObserveObjectToNodeMatrix(matrix)
    return True


def roi_slice_axis(volume_node, roi_node) -> int:
    """The IJK axis of an ROI's thinnest side (in mm, along the ROI's own axes); an ROI that does not say which of
    two sides is its thickness, or one oblique to the voxel grid, raises InputError."""
    size, axes = [0.0] * 3, [[0.0] * 3 for _ in range(3)]
    roi_node.GetSizeWorld(size)
    roi_node.GetXAxisWorld(axes[0])
    roi_node.GetYAxisWorld(axes[1])
    roi_node.GetZAxisWorld(axes[2])
    order = np.argsort(size)
    thin, second = float(size[order[0]]), float(size[order[1]])
    if thin > THIN_SIDE_RATIO * second:
        raise InputError(
            f"ROI '{roi_node.GetName()}' does not show which slice it was drawn on (its two thinnest sides are {thin:.1f} and {second:.1f} mm; "
            "a box placed with two clicks is as thick as its shorter side): show its slice in a slice view, or give the slice axis (axis=0/1/2, 'I'/'J'/'K' or a slice node)"
        )
    return axis_of_normal(volume_node, axes[order[0]], f"ROI '{roi_node.GetName()}'")


def markups_points(points_node, include_default: bool = True) -> List[Tuple[np.ndarray, bool]]:
    """[(world RAS, include)] of a point list: a selected point includes, an unselected one excludes."""
    out = []
    for n in range(points_node.GetNumberOfControlPoints()):
        if hasattr(points_node, "GetNthControlPointPositionStatus") and points_node.GetNthControlPointPositionStatus(n) != points_node.PositionDefined:
            continue  # a point still being placed
        position = [0.0] * 3
        points_node.GetNthControlPointPositionWorld(n, position)
        include = bool(points_node.GetNthControlPointSelected(n)) if include_default else False
        out.append((np.array(position), include))
    return out


def clicks_on_slice(volume_node, axis: int, index: int, points_node=None, exclude_node=None) -> List[Tuple[np.ndarray, bool]]:
    """[(world RAS, include)] of the point lists' points on slice `index` along IJK `axis` (within half a voxel):
    the points a slice view shows on that slice; points placed on other slices (earlier prompts) are left out."""
    clicks = []
    for node, include in ((points_node, True), (exclude_node, False)):
        if node is not None:
            clicks += [(p, inc and include) for p, inc in markups_points(node)]
    if not clicks:
        return []
    offsets = np.abs(ras_to_ijk(volume_node, np.array([p for p, _ in clicks]))[:, axis] - index)
    return [c for c, off in zip(clicks, offsets) if off <= 0.5]


def _is_node(value, class_name: str) -> bool:
    return hasattr(value, "IsA") and value.IsA(class_name)


class EnginePrompt:
    """A prompt in the engine's voxel IJK coordinates: box corners, clicks, the slice axis and index."""

    def __init__(self, box_ijk, points_ijk, axis: Optional[int], index: Optional[int]):
        self.box_ijk = box_ijk  # ((i, j, k), (i, j, k)) or None
        self.points_ijk = points_ijk  # [((i, j, k), include)]
        self.axis = axis
        self.index = index

    def engine_kwargs(self) -> dict:
        return {"box": self.box_ijk, "points": self.points_ijk, "axis": self.axis}


def _clip_in_plane(corners: np.ndarray, dims, axis: int) -> np.ndarray:
    """A box placed partly off the image is kept on it (only the in-plane axes are clipped)."""
    out = corners.copy()
    for a in range(3):
        if a != axis:
            out[:, a] = np.clip(out[:, a], -0.5, dims[a] - 0.5)
    return out


def _snap(coords: np.ndarray, axis: int, index: int, what: str) -> np.ndarray:
    """Put prompt coordinates exactly on slice `index` along `axis` (they must lie within a voxel of it)."""
    off = np.abs(coords[:, axis] - index)
    if np.any(off > 1.0):
        raise InputError(
            f"the {what} lies {float(off.max()):.1f} voxels away from slice {index} along {AXIS_NAMES[axis]}: place it on the slice you propagate from"
        )
    out = coords.copy()
    out[:, axis] = index
    return out


def engine_prompt(volume_node, box=None, points=None, exclude_points=None, axis: Optional[int] = None, index: Optional[int] = None) -> EnginePrompt:
    """Convert a box (two RAS corners or a markups ROI) and clicks (RAS tuples or point lists) to IJK.

    `axis`/`index` (e.g. from the slice view the prompt was placed in) pin the slice; without them
    the box decides: an ROI lies on the IJK axis of its clearly thinnest side (roi_slice_axis), two
    corners on the axis they share (the engine checks).
    """
    dims = dimensions(volume_node)
    box_ijk = None
    if box is not None:
        if _is_node(box, "vtkMRMLMarkupsROINode"):
            corners = ras_to_ijk(volume_node, roi_corners_ras(box))
            if axis is None:
                axis = roi_slice_axis(volume_node, box)
            if index is None:
                index = int(np.rint(corners[:, axis].mean()))
            lo, hi = corners.min(axis=0), corners.max(axis=0)
            lo[axis] = hi[axis] = index
            corners = np.array([lo, hi])
        else:
            pair = np.asarray(box, dtype=float)
            if pair.shape != (2, 3):
                raise InputError(f"box {box!r} is not two RAS corners ((x, y, z), (x, y, z)) nor a markups ROI node")
            corners = ras_to_ijk(volume_node, pair)
            if axis is not None and index is None:
                index = int(np.rint(corners[0, axis]))
            if axis is not None:
                corners = _snap(corners, axis, index, "box")
        box_axis = axis
        if box_axis is None:  # the axis the two corners share (ties: k, the engine's choice)
            shared = [a for a in (2, 1, 0) if abs(corners[0, a] - corners[1, a]) < 0.5]
            box_axis = shared[0] if shared else None
        if box_axis is not None:
            corners = _clip_in_plane(corners, dims, box_axis)
        box_ijk = (tuple(corners[0]), tuple(corners[1]))
    clicks: List[Tuple[np.ndarray, bool]] = []
    for source, include in ((points, True), (exclude_points, False)):
        if source is None:
            continue
        if _is_node(source, "vtkMRMLMarkupsNode"):
            clicks += [(p, inc and include) for p, inc in markups_points(source)]
        else:
            for item in source:
                try:
                    ras, inc = item
                except (TypeError, ValueError) as exc:
                    raise InputError(f"click {item!r} is not (ras, isInclude): give [((x, y, z), True), ...]") from exc
                clicks.append((np.asarray(ras, dtype=float), bool(inc) and include))
    points_ijk = []
    if clicks:
        coords = ras_to_ijk(volume_node, np.array([p for p, _ in clicks]))
        if axis is not None:
            if index is None:
                index = int(np.rint(coords[0, axis]))
            coords = _snap(coords, axis, index, "click")
        points_ijk = [(tuple(c), inc) for c, (_, inc) in zip(coords, clicks)]
    return EnginePrompt(box_ijk, points_ijk, axis, index)


def slice_of(volume_node, slice_spec, axis: int) -> int:
    """A slice index from an int index or an RAS point on that slice."""
    if isinstance(slice_spec, (int, np.integer)):
        return int(slice_spec)
    return int(np.rint(ras_to_ijk(volume_node, slice_spec)[0, axis]))


def resolve_axis(volume_node, axis) -> Optional[int]:
    """An IJK axis from an int (0, 1, 2), a name ('i', 'j', 'k'), an RAS normal, a slice node, or None."""
    if axis is None:
        return None
    if isinstance(axis, (int, np.integer)):
        if int(axis) not in (0, 1, 2):
            raise InputError(f"slice axis {axis} is not 0 (I), 1 (J) or 2 (K)")
        return int(axis)
    if isinstance(axis, str):
        if axis.upper() not in AXIS_NAMES:
            raise InputError(f"slice axis '{axis}' is not I, J or K")
        return AXIS_NAMES.index(axis.upper())
    if _is_node(axis, "vtkMRMLSliceNode"):
        return slice_view_axis_and_index(volume_node, axis)[0]
    return axis_of_normal(volume_node, axis, "the given normal")


def prompt_anchor_points(box=None, points=None, exclude_points=None) -> np.ndarray:
    """World points that must lie on the slice a prompt was placed on (ROI centre, clicks)."""
    anchors = []
    if box is not None:
        if _is_node(box, "vtkMRMLMarkupsROINode"):
            centre = [0.0] * 3
            box.GetCenterWorld(centre)
            anchors.append(centre)
        else:
            anchors.extend(np.asarray(box, dtype=float).reshape(-1, 3))
    for source in (points, exclude_points):
        if source is None:
            continue
        if _is_node(source, "vtkMRMLMarkupsNode"):
            anchors.extend(p for p, _ in markups_points(source))
        else:
            anchors.extend(np.asarray(ras, dtype=float) for ras, _ in source)
    return np.array(anchors, dtype=float).reshape(-1, 3)


def pick_prompt_view(volume_node, slice_nodes, box=None, points=None, exclude_points=None):
    """(axis, index, slice node) of the slice view the prompt lies in.

    A view qualifies when all prompt anchors lie within half a voxel of its plane.  Among
    several (a click where two planes cross), the first aligned one wins.  When the only
    qualifying views are oblique, InputError says so; when none qualifies, (None, None, None)
    lets the prompt's own geometry decide.
    """
    anchors = prompt_anchor_points(box, points, exclude_points)
    if not len(anchors):
        return None, None, None
    spacing = np.linalg.norm(ijk_to_world(volume_node)[:3, :3], axis=0)
    oblique_error = None
    for slice_node in slice_nodes:
        slice_to_ras = _matrix_to_array(slice_node.GetSliceToRAS())
        normal = slice_to_ras[:3, 2] / np.linalg.norm(slice_to_ras[:3, 2])
        distance = np.abs((anchors - slice_to_ras[:3, 3]) @ normal)
        if np.any(distance > 0.5 * float(spacing.max())):
            continue
        try:
            axis, index = slice_view_axis_and_index(volume_node, slice_node)
        except InputError as exc:
            oblique_error = exc
            continue
        return axis, index, slice_node
    if oblique_error is not None:
        raise oblique_error
    return None, None, None
