"""`Session.refine` with a model whose loader declares point prompts: the clicks go to the decoder.

The model: an adapter written by the project's own `slidesam train --point-fraction 1` (two steps on mr_abdomen's
spleen, a training volume) on the embedded LiteMedSAM weights. Its loader reads `point_trained: true` from the
adapter's manifest and declares `supports_points` (the test machine holds no SAM or Slide-SAM file, only LiteMedSAM's). Two
steps teach the decoder little about clicks, so this tests the mechanism (the clicks reach the decoder, the
corrected slice is the decoder's answer, nothing is re-encoded, propagation runs both ways from the slice),
not how well a point-trained decoder follows them.
"""
import numpy as np
import pytest

from SlideSAMLib import Session, array_of, load_model, read_image
from SlideSAMLib.cli import main
from SlideSAMLib.propagation import box_of
from SlideSAMLib.training.prompts import deepest_point, tight_box


@pytest.fixture(scope="module")
def point_model(data_dir, tmp_path_factory):
    d = data_dir / "mr_abdomen"
    out = tmp_path_factory.mktemp("point_adapter") / "adapter"
    code = main(["train", "--pair", str(d / "example_mr_sm.nii.gz"), str(d / "example_seg_mr.nii.gz"), str(d / "labels_total_mr.json"),
                 "--structures", "spleen", "--steps", "2", "--batch-size", "1", "--point-fraction", "1.0", "--device", "cpu",
                 "--quiet", "-o", str(out)])
    assert code == 0
    return load_model(out, device="cpu", encoder="torch")


def test_point_capable_refine_decodes_the_clicks_and_encodes_nothing(point_model, data_dir, monkeypatch):
    import SlideSAMLib.session as session_module

    assert point_model.kind == "adapter" and point_model.supports_points  # declared by the loader, from the manifest
    d = data_dir / "mr_breast_lesion"  # training folder: a 143-voxel lesion on slices 8-10 of 21
    image, truth = read_image(d / "image.nrrd"), array_of(read_image(d / "label.nrrd")) == 1
    session = Session(point_model, array_of(image), spacing=image.GetSpacing())
    k = int(truth.sum(axis=(1, 2)).argmax())
    x0, y0, x1, y1 = tight_box(truth[k])
    result = session.segment(box=((x0, y0, k), (x1, y1, k)), axis=2)
    assert k - 1 in result.slice_masks and k + 1 in result.slice_masks
    mask = result.slice_masks[k]
    predictor = session.predictor(2)
    cached = {s for s in range(predictor.n_slices) if predictor.is_encoded(s)}

    def no_box_only_path(*args, **kwargs):
        raise AssertionError("a point-capable model's refinement went through the box-only click edit")

    monkeypatch.setattr(session_module, "edit_mask", no_box_only_path)
    monkeypatch.setattr(session_module, "ClickSearch", no_box_only_path)
    windows = []
    encode = point_model.encode
    monkeypatch.setattr(point_model, "encode", lambda x: (windows.append(int(x.shape[0])), encode(x))[1])
    decoded = []
    predict = predictor.predict
    monkeypatch.setattr(predictor, "predict", lambda s, **kw: (decoded.append((s, kw)), predict(s, **kw))[1])

    add = deepest_point(truth[k] & ~mask)  # include: the lesion's pixel the box's mask missed most deeply
    keep = deepest_point(mask)
    ys, xs = np.nonzero(mask)
    far = int(np.argmax((xs - keep[0]) ** 2 + (ys - keep[1]) ** 2))
    cut = (int(xs[far]), int(ys[far]))  # exclude: the mask pixel farthest from its centre
    clicks = [((add[0], add[1], k), True), ((cut[0], cut[1], k), False)]
    refined = session.refine(k, clicks, mask, axis=2)

    # The clicks reached the decoder on slice k, with their labels, beside the box of the mask and the include click.
    (first_k, first), *_ = decoded
    assert first_k == k and first["points"] == [(float(add[0]), float(add[1]), True), (float(cut[0]), float(cut[1]), False)]
    b = box_of(mask)
    assert first["box"] == (min(b[0], add[0]), min(b[1], add[1]), max(b[2], add[0]), max(b[3], add[1]))
    # The corrected slice is that decoder answer, kept as it is; it is not what the box alone gives.
    monkeypatch.setattr(predictor, "predict", predict)
    answer = (predictor.predict(k, box=first["box"], points=first["points"]).logits[1] > 0).numpy()
    box_alone = (predictor.predict(k, box=first["box"]).logits[1] > 0).numpy()
    assert np.array_equal(refined.slice_masks[k], answer) and not np.array_equal(answer, box_alone)
    assert not np.array_equal(refined.slice_masks[k], mask)
    # Re-propagated both ways from slice k, on the windows the segment had encoded: none encoded again.
    assert min(refined.slice_masks) < k < max(refined.slice_masks) and refined.prompt == "refine"
    assert set(refined.stopped) == {"up", "down"}
    assert windows == [] and refined.encoder_passes == 0
    assert {s for s in range(predictor.n_slices) if predictor.is_encoded(s)} == cached
