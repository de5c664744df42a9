"""Bad training input is refused with one clear line before any training starts (and writes nothing)."""
import numpy as np
import pytest
import SimpleITK as sitk

from SlideSAMLib.cli import main


@pytest.fixture
def mr(data_dir):
    d = data_dir / "mr_abdomen"
    return d / "example_mr_sm.nii.gz", d / "example_seg_mr.nii.gz", d / "labels_total_mr.json"


def _fails(capsys, argv, *needles):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("slidesam: error:")
    for n in needles:
        assert n in err
    return err


def test_mismatched_grid(capsys, tmp_path, mr, data_dir):
    out = tmp_path / "adapter"
    _fails(capsys, ["train", "--pair", str(mr[0]), str(data_dir / "ct_abdomen" / "example_seg.nii.gz"), "-o", str(out)], "not on the grid", "resample")
    assert not out.exists()


def test_empty_label(capsys, tmp_path, mr):
    image = sitk.ReadImage(str(mr[0]))
    empty = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(image)
    path = tmp_path / "empty.nii.gz"
    sitk.WriteImage(empty, str(path))
    out = tmp_path / "adapter"
    _fails(capsys, ["train", "--pair", str(mr[0]), str(path), "-o", str(out)], "no labelled voxel")
    assert not out.exists()


def test_unknown_structure_name(capsys, tmp_path, mr):
    out = tmp_path / "adapter"
    _fails(capsys, ["train", "--pair", *map(str, mr), "--structures", "liver,livr", "-o", str(out)], "unknown structure 'livr'", "liver")
    assert not out.exists()


def test_wrong_pair_arity_and_missing_file(capsys, tmp_path, mr):
    _fails(capsys, ["train", "--pair", str(mr[0]), "-o", str(tmp_path / "a")], "IMAGE LABEL")
    _fails(capsys, ["train", "--pair", str(mr[0]), str(tmp_path / "nope.nii.gz"), "-o", str(tmp_path / "a")], "not found")


def test_structure_absent_from_every_volume(capsys, tmp_path, mr):
    lab = sitk.ReadImage(str(mr[1]))
    arr = sitk.GetArrayFromImage(lab)
    only = sitk.GetImageFromArray((arr == 5).astype(np.uint8) * 5)  # liver only
    only.CopyInformation(lab)
    path = tmp_path / "liver_only.nii.gz"
    sitk.WriteImage(only, str(path))
    _fails(capsys, ["train", "--pair", str(mr[0]), str(path), str(mr[2]), "--structures", "spleen", "-o", str(tmp_path / "a")], "spleen")


@pytest.mark.parametrize("weight", ["-1", "nan"])
def test_negative_or_nan_anchor_weight(capsys, tmp_path, mr, weight):
    out = tmp_path / "adapter"
    _fails(capsys, ["train", "--decoder", "neighbours", "--pair", *map(str, mr), "--structures", "kidney_left", "--anchor-weight", weight,
                    "-o", str(out)], "--anchor-weight", "positive")
    assert not out.exists()
