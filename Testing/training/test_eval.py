"""`slidesam eval` on a small real case (manual liver label, three CT slices)."""
import json

import SlideSAMLib.session
from SlideSAMLib.cli import main


def test_eval_writes_report_with_plausible_values(data_dir, tmp_path, capsys, monkeypatch):
    d = data_dir / "ct_liver_3slice"
    out = tmp_path / "eval"
    spacings = []  # every engine Session the evaluation makes must know the voxel size (the stop rule's tail is in mm)

    class RecordingSession(SlideSAMLib.session.Session):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            spacings.append(tuple(self.spacing))

    monkeypatch.setattr(SlideSAMLib.session, "Session", RecordingSession)
    code = main(["eval", "--case", str(d / "dicom"), str(d / "liver_spine_seg.nrrd"), str(d / "labels.json"),
                 "--structures", "liver", "--jitter", "1", "--device", "cpu", "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "eval.json").read_text())
    assert report["model_kind"] == "embedded" and report["supports_points"] is False
    (res,) = report["results"]
    assert res["structure"] == "liver" and res["voxels"] == 107098
    box = res["runs"]["box"]
    assert set(res["runs"]) == {"box", "jitter-1", "point"}
    click = res["runs"]["point"]
    assert click["click_prompt"] == "box search" and click["dice"] > 0.75 and res["point_vs_box"] > 0.8  # measured 0.836, 0.877
    assert 0.85 < box["dice"] <= 1.0 and 0.85 < box["surface_dice_2mm"] <= 1.0
    assert 0.0 < box["hd95_mm"] < 15.0
    assert box["extent_true"] == [0, 2] and box["extent_pred"] == [0, 2]
    assert 1 <= box["encoder_passes"] <= 3 and box["seconds"] > 0
    eff = res["efficiency"]
    assert eff["box_every_slice_prompts"] == 3 and 1 <= eff["prompts"] <= 3 and eff["box_every_slice_dice"] > 0.85
    assert set(res["slice_dice"]) == {"0", "1", "2"}
    # one row per run (box, jitter-1, point), one each in the anchors, interactive and labelling-efficiency tables
    assert (out / "eval.md").read_text().count("| ct_liver_3slice/dicom | liver |") == 6
    assert [c["interaction"] for c in res["interactive"]["curve"]][:2] == ["box", "click-1"]
    assert res["anchors"]["oracle"]["extent_pred"] == [0, 2] and res["engine_vs_oracle"] > 0.9  # measured 0.991
    assert (out / "ct_liver_3slice_dicom_liver.png").stat().st_size > 10_000
    assert spacings and all(max(abs(a - b) for a, b in zip(sp, report["cases"][0]["spacing"])) < 1e-6 for sp in spacings), spacings


def test_eval_unknown_structure_is_one_line(data_dir, tmp_path, capsys):
    d = data_dir / "ct_liver_3slice"
    code = main(["eval", "--case", str(d / "dicom"), str(d / "liver_spine_seg.nrrd"), str(d / "labels.json"), "--structures", "lung", "-o", str(tmp_path / "e")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "unknown structure 'lung'" in err
    assert not (tmp_path / "e").exists()
