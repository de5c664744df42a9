"""The real CT the Slicer-side tests segment, loaded into MRML, with a kidney box computed independently of the module."""
import types

import numpy as np
import SimpleITK as sitk

from SlideSAMLib.evaluation.metrics import dice  # noqa: F401  (the one Dice; the Slicer tests import it from here)

KIDNEY_LEFT = 3  # TotalSegmentator label in example_seg_fast_force_split


def lps_to_ras(p):
    return np.array([-p[0], -p[1], p[2]])


def load_kidney_ct(mrml, data_dir):
    """example_ct as a volume node; the left kidney's reference mask, its largest slice k and a box around it (IJK and RAS)."""
    path = data_dir / "ct_abdomen" / "example_ct.nii.gz"
    node = mrml.volumes.AddArchetypeVolume(str(path), "example_ct", 0)
    image = sitk.ReadImage(str(path))
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(data_dir / "ct_abdomen" / "example_seg_fast_force_split.nii.gz")))
    reference = (label == KIDNEY_LEFT).astype(np.uint8)
    k = int(reference.sum(axis=(1, 2)).argmax())
    js, is_ = np.nonzero(reference[k])
    pad = 3
    box_ijk = ((is_.min() - pad, js.min() - pad, k), (is_.max() + pad, js.max() + pad, k))
    # RAS corners from the file's own geometry (SimpleITK, LPS), independent of the module's code.
    box_ras = tuple(lps_to_ras(image.TransformContinuousIndexToPhysicalPoint([float(c) for c in corner])) for corner in box_ijk)
    return types.SimpleNamespace(node=node, image=image, reference=reference, k=k, box_ijk=box_ijk, box_ras=box_ras)


def refinement_clicks(mask, truth):
    """((ex, ey), (ix, iy)) on a propagated slice: an exclude click on the mask's part farthest outside the reference,
    an include click deepest inside the reference; both on the mask (so a refine must change the slice to honour them)."""
    from scipy import ndimage

    outside = ndimage.distance_transform_edt(~truth) * (mask & ~truth)
    ey, ex = np.unravel_index(outside.argmax(), mask.shape)
    iy, ix = np.unravel_index(ndimage.distance_transform_edt(truth).argmax(), mask.shape)
    assert outside.max() > 0 and mask[ey, ex] and mask[iy, ix]
    return (int(ex), int(ey)), (int(ix), int(iy))
