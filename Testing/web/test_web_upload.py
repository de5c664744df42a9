"""Loading volumes through the page (trame-slicer's Open Files / Open Directory buttons, Playwright's file chooser):
a NIfTI file, an NRRD file, a DICOM folder.

The volume's geometry as the server holds it (the page publishes what the engine is sent, ITK's LPS) must equal
SimpleITK's reading of the same file or DICOM series.  Runs last among the web tests: an upload replaces the scene.
"""
import json

import numpy as np

from webpage import DATA

SPINE_CT = DATA / "ct_mr_spine" / "sub-ct_label-22_ct.nii.gz"  # train data; axes permuted and flipped (a real test of direction)
BREAST_MR = DATA / "mr_breast_lesion" / "image.nrrd"  # train data: an NRRD file (45 x 120 x 21, 0.664 x 0.664 x 2.1 mm)
DICOM = DATA / "ct_dicom" / "dicom"  # evaluation-only data, used here only to load it (no setting is chosen on it)


def _upload(page, selector: str, files) -> dict:
    before = page.json("slidesam-volume")["name"]
    page.page.locator(selector).set_input_files(files)
    page.wait_for(f"JSON.parse(document.querySelector('#slidesam-volume').textContent).name !== {json.dumps(before)}", 300_000)
    return page.json("slidesam-volume")


def _assert_geometry(volume: dict, image) -> None:
    assert volume["dims"] == list(image.GetSize()), (volume["dims"], image.GetSize())
    np.testing.assert_allclose(volume["spacing"], image.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(volume["origin"], image.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(volume["direction"], image.GetDirection(), atol=1e-5)


def test_upload_a_nifti_file(page):
    import SimpleITK as sitk

    volume = _upload(page, "input[type=file]:not([webkitdirectory])", str(SPINE_CT))
    assert volume["name"].startswith("sub-ct_label-22_ct"), volume["name"]
    _assert_geometry(volume, sitk.ReadImage(str(SPINE_CT)))
    assert page.views()["Red"]["axis"] is not None  # the views show the new volume


def test_upload_an_nrrd_file(page):
    import SimpleITK as sitk

    volume = _upload(page, "input[type=file]:not([webkitdirectory])", str(BREAST_MR))
    assert volume["name"].startswith("image"), volume["name"]
    _assert_geometry(volume, sitk.ReadImage(str(BREAST_MR)))
    assert page.views()["Red"]["axis"] is not None


def test_upload_a_dicom_folder(page):
    import SimpleITK as sitk

    volume = _upload(page, "input[type=file][webkitdirectory]", str(DICOM))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(DICOM)))
    _assert_geometry(volume, reader.Execute())
