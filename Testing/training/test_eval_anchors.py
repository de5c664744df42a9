"""`slidesam eval`'s anchors (chain, oracle) on a real small volume, one value checked by hand."""
import json

import numpy as np

from SlideSAMLib import Session, array_of, read_image
from SlideSAMLib.cli import main
from SlideSAMLib.evaluation import anchors, metrics
from SlideSAMLib.training.prompts import tight_box


def test_eval_json_holds_anchors_and_the_oracle_is_a_box_per_slice(data_dir, model, tmp_path, capsys):
    d = data_dir / "mr_breast_lesion"
    out = tmp_path / "eval"
    code = main(["eval", "--case", str(d / "image.nrrd"), str(d / "label.nrrd"), "--jitter", "0", "--no-efficiency",
                 "--no-interactive", "--no-figures", "--device", "cpu", "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "eval.json").read_text())
    (res,) = report["results"]
    assert res["voxels"] == 143
    chain, orc = res["anchors"]["chain"], res["anchors"]["oracle"]
    engine = res["runs"]["box"]["dice"]

    # By hand: the lesion's tight box on each of its slices, decoded alone; 3D Dice of the stacked centre masks.
    image, label = read_image(d / "image.nrrd"), array_of(read_image(d / "label.nrrd")) == 1
    predictor = Session(model, array_of(image), spacing=image.GetSpacing()).predictor(2)
    by_hand = np.zeros_like(label)
    for k in np.nonzero(label.any(axis=(1, 2)))[0]:
        by_hand[k] = (predictor.predict(int(k), box=tight_box(label[k])).logits[1] > 0).numpy()
    assert abs(orc["dice"] - round(metrics.dice(by_hand, label), 4)) < 1e-4
    assert orc["extent_pred"][0] >= orc["extent_true"][0] and orc["extent_pred"][1] <= orc["extent_true"][1]
    assert orc["encoder_passes"] == 0  # the engine's runs had encoded these windows: same cache, same predictor
    # The naive chain never stops on this lesion: a box always yields some mask (measured: all 21 slices).
    assert chain["extent_pred"] == [0, 20] and chain["last_slice"] == {"up": 20, "down": 0}
    assert chain["dice"] < engine
    assert res["engine_vs_oracle"] == round(engine / orc["dice"], 3)
    assert res["chain_minus_engine"] == round(chain["dice"] - engine, 4)
    a = report["summary"]["anchors"]
    assert a["structures"] == 1 and a["mean_dice_oracle"] == orc["dice"] and a["mean_dice_chain"] == chain["dice"]
    md = (out / "eval.md").read_text()
    assert "| mr_breast_lesion/image.nrrd | label 1 | 143 |" in md and "Mean engine / mean oracle" in md


def test_chain_starts_from_the_prompt_box_and_runs_until_its_mask_is_empty(data_dir, model):
    """kidney_left of mr_abdomen (training volume): the chain's prompt slice is the oracle's, its slices are one
    run from there, and each side ends on an empty mask or at the volume's end."""
    d = data_dir / "mr_abdomen"
    image = read_image(d / "example_mr_sm.nii.gz")
    truth = array_of(read_image(d / "example_seg_mr.nii.gz")) == 3
    predictor = Session(model, array_of(image), spacing=image.GetSpacing()).predictor(2)
    k0 = int(truth.sum(axis=(1, 2)).argmax())
    chained, ends = anchors.chain(predictor, k0, tight_box(truth[k0]))
    orc = anchors.oracle(predictor, truth)
    assert np.array_equal(chained[k0], orc[k0]) and chained[k0].any()
    ks = np.nonzero(chained.any(axis=(1, 2)))[0]
    assert (ks[0], ks[-1]) == (ends["down"], ends["up"]) and list(ks) == list(range(ks[0], ks[-1] + 1))
    for k, d in ((ends["up"], 1), (ends["down"], -1)):
        assert not 0 <= k + d < truth.shape[0] or not chained[k + d].any()
    assert not orc[~truth.any(axis=(1, 2))].any()
