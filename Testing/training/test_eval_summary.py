"""`summarise`'s click / box ratio: a structure whose box found nothing has no ratio (it once added ~10^5 to the mean)."""
from SlideSAMLib.evaluation import evaluate


def _result(box, point):
    runs = {name: {"dice": d, "surface_dice_2mm": d, "hd95_mm": None} for name, d in (("box", box), ("point", point))}
    return {"runs": runs, "point_vs_box": round(point / max(box, 1e-6), 3)}  # the ratio as eval.json files before the fix hold it


def test_click_vs_box_is_undefined_for_an_empty_box_result_and_left_out_of_the_mean():
    # Figures of two ct_dicom structures (benchmarks/RESULTS_anchors.md): rib_right_6 box 0.000, click 0.236; liver 0.967, 0.967.
    results = [_result(0.0, 0.236), _result(0.967, 0.967)]
    assert evaluate.summarise(results)["point_vs_box_mean"] == 1.0
    assert "point_vs_box_mean" not in evaluate.summarise([_result(0.0, 0.5)])
    assert evaluate.click_vs_box(results[0]) is None and evaluate.click_vs_box(results[1]) == 1.0


def test_a_stopped_eval_keeps_the_structures_it_finished(data_dir, tmp_path, capsys, monkeypatch):
    """Ctrl-C (or a kill) during the second structure: eval.json already holds the first one, marked incomplete."""
    import json

    from SlideSAMLib.cli import main

    done = []
    real = evaluate.evaluate_structure

    def stop_at_the_second(*args, **kwargs):
        if done:
            raise KeyboardInterrupt
        done.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate, "evaluate_structure", stop_at_the_second)
    d = data_dir / "mr_abdomen"
    out = tmp_path / "eval"
    code = main(["eval", "--case", str(d / "example_mr_sm.nii.gz"), str(d / "example_seg_mr.nii.gz"), str(d / "labels_total_mr.json"),
                 "--structures", "kidney_right,kidney_left", "--jitter", "0", "--no-efficiency", "--no-anchors", "--no-interactive",
                 "--no-figures", "--device", "cpu", "-o", str(out)])
    assert code == 130 and "cancelled" in capsys.readouterr().err
    report = json.loads((out / "eval.json").read_text())
    assert report["complete"] is False and [r["structure"] for r in report["results"]] == ["kidney_right"]
    assert report["summary"]["box"]["structures"] == 1 and report["results"][0]["runs"]["box"]["dice"] > 0.5
