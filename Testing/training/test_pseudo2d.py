"""`slidesam pseudo2d`: box prompts on single slices -> a sparse label volume that `train --pair2d` accepts."""
import json

import numpy as np
import SimpleITK as sitk

from SlideSAMLib.cli import main
from testdata import MR, MR_LABELS, ORGANS, dice, tight_box


def test_pseudo_labels_are_good_only_on_prompted_slices_and_train_on(tmp_path, capsys):
    reference = sitk.GetArrayFromImage(sitk.ReadImage(str(MR_LABELS)))
    prompts, expected = [], {}
    for organ in ("kidney_left", "spleen"):
        label = reference == ORGANS[organ]
        (x0, y0, k), (x1, y1, _) = tight_box(label)
        prompts.append({"slice": k, "box": [x0, y0, x1, y1], "label": ORGANS[organ]})
        expected[organ] = (k, label[k])
    (tmp_path / "prompts.json").write_text(json.dumps(prompts))
    out = tmp_path / "pseudo.nii.gz"
    assert main(["pseudo2d", str(MR), "--prompts", str(tmp_path / "prompts.json"), "-o", str(out)]) == 0
    assert "2 prompted slices, 0 of them empty" in capsys.readouterr().out

    written, source = sitk.ReadImage(str(out)), sitk.ReadImage(str(MR))
    assert written.GetOrigin() == source.GetOrigin() and written.GetSpacing() == source.GetSpacing()
    assert written.GetDirection() == source.GetDirection()
    labels = sitk.GetArrayFromImage(written)
    labelled_slices = sorted(np.nonzero(labels.any(axis=(1, 2)))[0].tolist())
    assert labelled_slices == sorted({k for k, _ in expected.values()})
    for organ, (k, truth) in expected.items():
        assert dice(labels[k] == ORGANS[organ], truth) >= 0.8, organ

    adapter = tmp_path / "adapter"
    code = main(["train", "--pair2d", str(MR), str(out), "--steps", "1", "--batch-size", "1", "--quiet", "-o", str(adapter)])
    assert code == 0 and (adapter / "slidesam_adapter.json").is_file()


def test_bad_prompts_are_one_line_and_write_nothing(tmp_path, capsys):
    out = tmp_path / "pseudo.nii.gz"
    for prompts, needle in (
        ([{"slice": 99, "box": [1, 1, 5, 5], "label": 1}], "outside the volume"),
        ([{"slice": 3, "box": [1, 1, 500, 5], "label": 1}], "outside the slice"),
        ([{"slice": 3, "box": [1, 1, 5]}], "[X0, Y0, X1, Y1]"),
        ([], "non-empty JSON list"),
    ):
        (tmp_path / "p.json").write_text(json.dumps(prompts))
        assert main(["pseudo2d", str(MR), "--prompts", str(tmp_path / "p.json"), "-o", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, err
        assert not out.exists()
