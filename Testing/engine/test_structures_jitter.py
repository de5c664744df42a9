"""`--structures` checks and box jitter: one implementation each, shared by `slidesam train` and `slidesam eval`."""
import json

import numpy as np
import pytest

from SlideSAMLib.cli import main
from SlideSAMLib.errors import InputError
from SlideSAMLib.structures import check_structure_names, parse_structures, resolve_structures


@pytest.fixture
def mr(data_dir):
    d = data_dir / "mr_abdomen"
    return d / "example_mr_sm.nii.gz", d / "example_seg_mr.nii.gz", d / "labels_total_mr.json"


def _error(capsys, argv) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("slidesam: error:"), err
    return err


def test_train_and_eval_name_every_unknown_structure_and_every_valid_one(capsys, tmp_path, mr):
    valid = sorted(json.loads(mr[2].read_text()).values())
    ask = ["--structures", "liver,livr,lungz"]
    train = _error(capsys, ["train", "--pair", *map(str, mr), *ask, "-o", str(tmp_path / "a")])
    evaluation = _error(capsys, ["eval", "--case", *map(str, mr), *ask, "-o", str(tmp_path / "e")])
    assert train == evaluation  # one check, one message
    assert "unknown structures 'livr', 'lungz'" in train and "did you mean liver" in train
    listed = train.split("valid names are ")[1].split(" (or label numbers)")[0].split(", ")
    assert listed == valid and len(valid) > 8
    assert not (tmp_path / "a").exists() and not (tmp_path / "e").exists()


def test_without_a_name_map_only_numbers_pass():
    check_structure_names(["3", " 5 "], [])
    with pytest.raises(InputError, match="'liver': no label-name map was given, so --structures takes label numbers only; or add"):
        check_structure_names(["liver"], [], map_hint="add NAMES.json")


def test_resolve_and_parse():
    names = {1: "spleen", 5: "liver", 7: "pancreas"}
    assert parse_structures(" liver, 7,,") == ["liver", "7"] and parse_structures("") is None and parse_structures(None) is None
    assert resolve_structures(["liver", "7", "liver", "9", "stomach"], names, [1, 5, 7]) == [5, 7]
    assert resolve_structures(None, names, [1, 5]) == [1, 5]


def test_one_jitter_for_training_and_eval():
    """Both callers draw the same boxes from the same seed as before the merge (values from main 50b03c0)."""
    from SlideSAMLib.evaluation.evaluate import jittered
    from SlideSAMLib.training.prompts import jitter_box, jittered_box

    m = np.zeros((40, 50), bool)
    m[10:22, 5:30] = True
    rng = np.random.default_rng(7)
    assert jittered((5.0, 10.0, 29.0, 21.0), rng, (40, 50)) == pytest.approx((5.001137891855671, 10.276339622195335, 28.74642248378995, 20.176202549149522), abs=1e-12)
    rng = np.random.default_rng(7)
    assert jittered_box(m, rng) == pytest.approx((3.8000175954685007, 6.671589991732153, 28.86891470853627, 23.790635203020777), abs=1e-12)
    rng = np.random.default_rng(7)
    assert jittered_box(m, rng, margin=6.0) == pytest.approx((3.19968502564605, 4.9244831009396295, 28.879445317667418, 25.43309203978631), abs=1e-12)
    rng = np.random.default_rng(3)
    assert jittered((47.0, 0.0, 49.0, 2.0), rng, (40, 50)) == pytest.approx((47.3, 0.0, 49.0, 1.9148345590808105), abs=1e-12)
    # eval's jitter is the shared one without growth; the training one is the shared one on the tight box
    a, b = np.random.default_rng(11), np.random.default_rng(11)
    assert jittered((5.0, 10.0, 29.0, 21.0), a, (40, 50)) == jitter_box((5.0, 10.0, 29.0, 21.0), (40, 50), b, 0.05, 0.1, 0.0)
    boxes = [jitter_box((47.0, 0.0, 49.0, 2.0), (40, 50), np.random.default_rng(s)) for s in range(200)]
    assert all(0 <= x0 and x1 <= 49 and 0 <= y0 and y1 <= 39 and x1 - x0 >= 0.99 and y1 - y0 >= 0.99 for x0, y0, x1, y1 in boxes)
