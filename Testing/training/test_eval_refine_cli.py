"""`slidesam refine`'s refusals: one line, exit 2, no output file (checked before any model is loaded)."""
from SlideSAMLib.cli import main


def _refuses(args, capsys, tmp_path, expected):
    out = tmp_path / "refined.nii.gz"
    code = main(["refine", *args, "-o", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and expected in err, err
    assert not out.exists() and not list(tmp_path.iterdir())


def test_refine_refuses_a_result_on_another_grid(data_dir, capsys, tmp_path):
    d = data_dir / "mr_breast_lesion"
    other = data_dir / "mr_brain_tumour2" / "label.nrrd"
    _refuses([str(d / "image.nrrd"), str(other), "--slice", "10", "--negative", "20", "60"], capsys, tmp_path, "is not on the grid of image")


def test_refine_refuses_no_click_and_an_absent_label(data_dir, capsys, tmp_path):
    d = data_dir / "mr_breast_lesion"
    _refuses([str(d / "image.nrrd"), str(d / "label.nrrd"), "--slice", "10"], capsys, tmp_path, "no refinement click")
    _refuses([str(d / "image.nrrd"), str(d / "label.nrrd"), "--slice", "10", "--point", "20", "60", "--label", "7"], capsys, tmp_path, "has no voxel of label 7")


def test_refine_refuses_a_slice_outside_the_volume_before_loading_a_model(data_dir, capsys, tmp_path, monkeypatch):
    import SlideSAMLib

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded for a refusal")

    monkeypatch.setattr(SlideSAMLib, "load_model", no_model)
    d = data_dir / "mr_breast_lesion"  # 21 slices along k
    for k in ("21", "-1"):
        _refuses([str(d / "image.nrrd"), str(d / "label.nrrd"), "--slice", k, "--point", "25", "68"], capsys, tmp_path,
                 f"--slice {k} is outside 0..20 along k")


def test_refine_refuses_a_result_of_another_shape(data_dir, capsys, tmp_path, tmp_path_factory):
    import SimpleITK as sitk

    d = data_dir / "mr_breast_lesion"
    label = sitk.ReadImage(str(d / "label.nrrd"))
    cropped = tmp_path_factory.mktemp("bad_result") / "cropped.nrrd"
    sitk.WriteImage(label[:40, :, :], str(cropped))  # same origin, spacing and direction; 40 columns instead of 45
    _refuses([str(d / "image.nrrd"), str(cropped), "--slice", "9", "--point", "25", "68"], capsys, tmp_path, "is not on the grid of image")
