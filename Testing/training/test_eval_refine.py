"""`Session.refine` on a real propagated result (example_ct, a training volume) and the eval protocol curve."""
import json

import numpy as np
import pytest

from SlideSAMLib.cli import main
from SlideSAMLib.training.prompts import deepest_point
from testdata import ORGANS, tight_box


class CountingEncoder:
    """Wraps the model's encoder to count the windows it is given (the mechanism behind 'encodes nothing again')."""

    def __init__(self, model, monkeypatch):
        self.windows = 0
        encode = model.encode

        def counted(x):
            self.windows += int(x.shape[0])
            return encode(x)

        monkeypatch.setattr(model, "encode", counted)


@pytest.fixture(scope="module")
def spleen(ct_session, ct_labels):
    """The spleen of example_ct propagated from one box (the shared session: its windows stay encoded)."""
    truth = ct_labels == ORGANS["spleen"]
    box = tight_box(truth)
    return ct_session, truth, box[0][2], ct_session.segment(box=box, axis=2)


def test_refine_encodes_nothing_again_and_edits_the_clicked_slice(model, spleen, monkeypatch):
    session, truth, k0, result = spleen
    counter = CountingEncoder(model, monkeypatch)
    slices = sorted(result.slice_masks)
    s = slices[len(slices) // 4]  # a slice of the result below the prompt
    mask = result.slice_masks[s]
    assert mask.any() and s != k0
    keep = deepest_point(mask)
    ys, xs = np.nonzero(mask)
    far = int(np.argmax((xs - keep[0]) ** 2 + (ys - keep[1]) ** 2))  # the mask pixel farthest from the include click
    cut = (int(xs[far]), int(ys[far]))
    refined = session.refine(s, [((keep[0], keep[1], s), True), ((cut[0], cut[1], s), False)], mask, axis=2,
                             largest_area=int(max(m.sum() for m in result.slice_masks.values())))
    new = refined.slice_masks[s]
    # As asked: the include pixel stays, the exclude pixel goes, the slice only loses pixels (the part is split).
    assert new[keep[1], keep[0]] and not new[cut[1], cut[0]]
    assert not (new & ~mask).any() and 0 < new.sum() < mask.sum()
    # Re-propagated both ways from the clicked slice, on windows that were all encoded already.
    assert min(refined.slice_masks) < s < max(refined.slice_masks) and refined.prompt == "refine"
    assert set(refined.stopped) == {"up", "down"}
    assert counter.windows == 0 and refined.encoder_passes == 0


def test_refine_include_click_off_the_mask_adds_the_structure_under_it(model, spleen, ct_labels, monkeypatch):
    session, truth, k0, result = spleen
    counter = CountingEncoder(model, monkeypatch)
    mask = result.slice_masks[k0]
    liver = (ct_labels == ORGANS["liver"])[k0]
    assert liver.any() and not (liver & mask).any()
    x, y = deepest_point(liver)
    predictor = session.predictor(2)
    cached = {k for k in range(predictor.n_slices) if predictor.is_encoded(k)}
    refined = session.refine(k0, [((x, y, k0), True)], mask, axis=2)
    new = refined.slice_masks[k0]
    assert new[y, x] and (new & mask).sum() == mask.sum()  # the liver's pixel added, the spleen kept
    added = new & ~mask
    assert 2 * (added & liver).sum() / (added.sum() + liver.sum()) > 0.5  # what was added is the liver
    # The liver reaches slices the spleen never did (measured: 58 new windows): those are encoded once, no cached one again.
    newly = {k for k in range(predictor.n_slices) if predictor.is_encoded(k)} - cached
    assert k0 in cached and counter.windows == len(newly) == refined.encoder_passes


def test_eval_json_holds_the_interactive_protocol_curve(data_dir, tmp_path, capsys):
    d = data_dir / "mr_abdomen"
    out = tmp_path / "eval"
    code = main(["eval", "--case", str(d / "example_mr_sm.nii.gz"), str(d / "example_seg_mr.nii.gz"), str(d / "labels_total_mr.json"),
                 "--structures", "kidney_right", "--jitter", "0", "--no-efficiency", "--no-anchors", "--no-figures", "--device", "cpu",
                 "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "eval.json").read_text())
    (res,) = report["results"]
    it = res["interactive"]
    curve = it["curve"]
    assert [c["interaction"] for c in curve] == ["box"] + [f"click-{i}" for i in range(1, 6)]
    assert curve[0]["dice"] == res["runs"]["box"]["dice"]
    for c in curve[1:]:
        assert c["click"] is None or c["click"]["slice"] in range(20)
        assert 0.0 <= c["dice"] <= 1.0 and 0.0 <= c["surface_dice_2mm"] <= 1.0
    dice = [c["dice"] for c in curve[1:]]
    assert it["dice_auc"] == round(sum((a + b) / 2 for a, b in zip(dice[:-1], dice[1:])), 4)
    assert it["dice_final"] == curve[-1]["dice"]
    # The first click goes on the box result's worst slice (lowest 2D Dice), and the clicks changed the result.
    assert res["slice_dice"][str(curve[1]["click"]["slice"])] == min(res["slice_dice"].values())
    assert len({c["dice"] for c in curve}) > 1 and it["dice_auc"] > 0
    assert res["encoder_passes_total"] <= 20  # 20 slices: no window encoded twice (the refinements encoded 4 new ones)
    assert report["summary"]["interactive"]["mean_dice_curve"] == [c["dice"] for c in curve]
    assert "Interactive protocol (CVPR 2025)" in (out / "eval.md").read_text()
