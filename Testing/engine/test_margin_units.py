"""The box margin and outline step are model-input pixels; the mm written beside them (propagation.py, README) hold."""
import SimpleITK as sitk
import pytest

from SlideSAMLib.preprocess import SliceGeometry
from SlideSAMLib.propagation import BOX_MARGIN_MODEL_PX, STEP_MODEL_PX, slice_pixels


@pytest.mark.parametrize("name, margin_mm, step_px, step_mm", [
    ("ct_abdomen/example_ct.nii.gz", 7.1, 1, 3.0),
    ("ct_chest_nodule/image.nrrd", 5.7, 4, 2.3),
    ("ct_liver_lits/image.nii.gz", 2.5, 1, 1.0),
    ("mr_breast_lesion/image.nrrd", 1.6, 1, 0.7),
])
def test_margin_and_step_in_mm_as_documented(data_dir, name, margin_mm, step_px, step_mm):
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(data_dir / name))
    reader.ReadImageInformation()
    (ni, nj, _), (si, sj, _) = reader.GetSize(), reader.GetSpacing()
    geometry = SliceGeometry(nj, ni, 256, keep_aspect=True)  # LiteMedSAM, axial slices (axis k)
    mx, my = slice_pixels(geometry, BOX_MARGIN_MODEL_PX)
    assert round(mx * si, 1) == round(my * sj, 1) == margin_mm
    sx, _ = slice_pixels(geometry, STEP_MODEL_PX)
    assert max(1, int(round(sx))) == step_px and round(step_px * si, 1) == step_mm
