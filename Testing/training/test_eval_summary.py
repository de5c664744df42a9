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
