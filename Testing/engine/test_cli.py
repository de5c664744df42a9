"""The `slidesam` command on real files: exact output geometry, readable .seg.nrrd, and bad input."""
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from SlideSAMLib.cli import main
from testdata import CT, CT_LABELS, DATA, ORGANS, ROOT, dice, tight_box


def same_grid(a: sitk.Image, b: sitk.Image):
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-9)


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def kidney_box(ct_labels):
    return tight_box(ct_labels == ORGANS["kidney_left"])


def test_segment_nifti_with_flipped_axes_to_seg_nrrd(tmp_path, capsys, ct_labels, kidney_box):
    import slicerio

    (i0, j0, k), (i1, j1, _) = kidney_box
    out = tmp_path / "kidney.seg.nrrd"
    code, stdout, _ = run_cli(capsys, "segment", CT, "--box", i0, j0, i1, j1, "--slice", k, "--range", k - 2, k + 2, "--name", "kidney_left", "-o", out)
    assert code == 0 and "wrote" in stdout
    seg = slicerio.read_segmentation(str(out))
    assert [s["name"] for s in seg["segments"]] == ["kidney_left"]
    ref = sitk.ReadImage(str(CT))
    # slicerio's ijkToLPS matrix must equal the CT's own geometry
    direction = np.array(ref.GetDirection()).reshape(3, 3) * np.array(ref.GetSpacing())
    np.testing.assert_allclose(seg["ijkToLPS"][:3, :3], direction, atol=1e-5)
    np.testing.assert_allclose(seg["ijkToLPS"][:3, 3], ref.GetOrigin(), atol=1e-4)
    back = sitk.ReadImage(str(out))
    same_grid(back, ref)
    mask = sitk.GetArrayFromImage(back).astype(bool)
    label = ct_labels == ORGANS["kidney_left"]
    assert dice(mask[k - 2 : k + 3], label[k - 2 : k + 3]) >= 0.8
    assert not mask[: k - 2].any() and not mask[k + 3 :].any()


def test_physical_coordinates_give_the_same_mask(tmp_path, capsys, kidney_box):
    (i0, j0, k), (i1, j1, _) = kidney_box
    ref = sitk.ReadImage(str(CT))
    lps0 = ref.TransformIndexToPhysicalPoint((i0, j0, k))
    lps1 = ref.TransformIndexToPhysicalPoint((i1, j1, k))
    ras = lambda p: (-p[0], -p[1], p[2])
    voxel_out, ras_out = tmp_path / "v.nii.gz", tmp_path / "r.nii.gz"
    run_cli(capsys, "segment", CT, "--box", i0, j0, i1, j1, "--slice", k, "--range", k, k + 1, "-o", voxel_out)
    r0, r1 = ras(lps0), ras(lps1)
    code, _, err = run_cli(capsys, "segment", CT, "--coords", "ras", "--box", r0[0], r0[1], r1[0], r1[1], "--slice", r0[2], "--range", k, k + 1, "-o", ras_out)
    assert code == 0, err
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(voxel_out))), sitk.GetArrayFromImage(sitk.ReadImage(str(ras_out))))


def test_one_click_with_the_embedded_model(tmp_path, capsys):
    """`--point` alone: the box-only default model gets the click's box search (SlideSAMLib/clicks.py)."""
    from SlideSAMLib.training.prompts import deepest_point
    from testdata import MR, MR_LABELS

    label = sitk.GetArrayFromImage(sitk.ReadImage(str(MR_LABELS))) == ORGANS["kidney_right"]
    k = int(label.sum(axis=(1, 2)).argmax())
    x, y = deepest_point(label[k])
    out = tmp_path / "kidney.nii.gz"
    code, stdout, err = run_cli(capsys, "segment", MR, "--point", x, y, "--slice", k, "-o", out)
    assert code == 0 and "wrote" in stdout and "the click was turned into a box by search" in stdout, err
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(out))).astype(bool)
    assert dice(mask, label) >= 0.8  # measured 0.863 (one box: 0.878)


def _prompt_on_label(image, label_path, value=None):
    lab = sitk.GetArrayFromImage(sitk.ReadImage(str(label_path)))
    lab = lab > 0 if value is None else lab == value
    return tight_box(lab)


@pytest.mark.parametrize(
    "source, labels, value",
    [
        ("mr_brain_tumour/brain1_image.nrrd", "mr_brain_tumour/brain1_label.nrrd", None),
        ("ct_dicom/dicom", "ct_dicom/seg_on_dicom_grid.nii.gz", None),
    ],
    ids=["nrrd", "dicom-series"],
)
def test_output_grid_is_the_input_grid(tmp_path, capsys, source, labels, value):
    from SlideSAMLib import read_image

    image = read_image(DATA / source)
    (i0, j0, k), (i1, j1, _) = _prompt_on_label(image, DATA / labels, value)
    out = tmp_path / "out.nrrd"
    code, _, err = run_cli(capsys, "segment", DATA / source, "--box", i0, j0, i1, j1, "--slice", k, "--range", k, k + 1, "-o", out)
    assert code == 0, err
    result = sitk.ReadImage(str(out))
    same_grid(result, image)
    assert sitk.GetArrayFromImage(result)[k].any()


def test_oblique_volume_keeps_its_direction(tmp_path, capsys, ct_image, kidney_box):
    angle = np.deg2rad(20)
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    oblique = sitk.Image(ct_image)
    oblique.SetDirection(tuple((rot @ np.array(ct_image.GetDirection()).reshape(3, 3)).ravel()))
    path = tmp_path / "oblique.nrrd"
    sitk.WriteImage(oblique, str(path))
    (i0, j0, k), (i1, j1, _) = kidney_box
    out = tmp_path / "oblique_seg.nii.gz"
    code, _, err = run_cli(capsys, "segment", path, "--box", i0, j0, i1, j1, "--slice", k, "--range", k, k + 1, "-o", out)
    assert code == 0, err
    result = sitk.ReadImage(str(out))
    same_grid(result, oblique)
    code, _, err = run_cli(capsys, "segment", path, "--coords", "ras", "--box", 0, 0, 10, 10, "--slice", 0, "-o", tmp_path / "x.nii.gz")
    assert code == 2 and "oblique" in err


def _bad_inputs(tmp_path):
    text = tmp_path / "notes.nii.gz"
    text.write_text("not an image")
    flat = tmp_path / "flat.nii.gz"
    sitk.WriteImage(sitk.Image(20, 20, sitk.sitkInt16), str(flat))
    four = tmp_path / "four.nii.gz"
    sitk.WriteImage(sitk.Image([8, 8, 8, 3], sitk.sitkInt16), str(four))
    truncated = tmp_path / "half.pth"
    from SlideSAMLib.checkpoint import embedded_checkpoint_path

    truncated.write_bytes(open(embedded_checkpoint_path(), "rb").read()[:100000])
    foreign = tmp_path / "foreign.pth"
    import torch

    torch.save({"fc.weight": torch.zeros(3, 3)}, foreign)
    ok_box = ["--box", "40", "40", "60", "60", "--slice", "50"]
    return {
        "nonexistent": ([tmp_path / "nope.nii.gz", *ok_box], "not found"),
        "not-an-image": ([text, *ok_box], "cannot read"),
        "2d": ([flat, "--box", "2", "2", "8", "8", "--slice", "0"], "2D"),
        "4d": ([four, "--box", "2", "2", "5", "5", "--slice", "1"], "4D"),
        "box-outside": ([CT, "--box", "40", "40", "600", "60", "--slice", "50"], "outside the volume"),
        "zero-box": ([CT, "--box", "40", "40", "40", "60", "--slice", "50"], "zero size"),
        "slice-out-of-range": ([CT, "--box", "40", "40", "60", "60", "--slice", "400"], "outside the volume"),
        "no-prompt": ([CT, "--slice", "50"], "empty prompt"),
        "missing-checkpoint": ([CT, *ok_box, "--checkpoint", tmp_path / "none.pth"], "not found"),
        "truncated-checkpoint": ([CT, *ok_box, "--checkpoint", truncated], "truncated"),
        "foreign-checkpoint": ([CT, *ok_box, "--checkpoint", foreign], "unrecognised"),
        "exclude-clicks-only": ([CT, "--negative", "50", "50", "--slice", "50"], "only exclude clicks"),
        # every box the click search tries holds the exclude click: nothing may be written
        "contradictory-clicks": ([CT, "--point", "60", "50", "--negative", "60", "50", "--slice", "80"], "no structure found under the click"),
    }


CASES = ["nonexistent", "not-an-image", "2d", "4d", "box-outside", "zero-box", "slice-out-of-range", "no-prompt",
         "missing-checkpoint", "truncated-checkpoint", "foreign-checkpoint", "exclude-clicks-only", "contradictory-clicks"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_one_line_nonzero_no_output(tmp_path, capsys, case):
    args, expected = _bad_inputs(tmp_path)[case]
    out = tmp_path / "out" / "result.nii.gz"
    out.parent.mkdir()
    code, stdout, err = run_cli(capsys, "segment", *args, "-o", out)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("slidesam: error:") and expected in lines[0], err
    assert "Traceback" not in err
    assert list(out.parent.iterdir()) == []


def test_installed_command_prints_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "SlideSAMLib.cli", "segment", str(tmp_path / "missing.nii.gz"), "--box", "1", "1", "5", "5", "--slice", "0", "-o", str(tmp_path / "o.nii.gz")],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert not (tmp_path / "o.nii.gz").exists()


def test_info_describes_image_and_checkpoint(capsys):
    from SlideSAMLib.checkpoint import embedded_checkpoint_path

    code, out, _ = run_cli(capsys, "info", CT)
    assert code == 0 and "(122, 101, 112)" in out and "spacing (3.0, 3.0, 3.0)" in out
    code, out, _ = run_cli(capsys, "info", embedded_checkpoint_path())
    assert code == 0 and "litemedsam" in out
