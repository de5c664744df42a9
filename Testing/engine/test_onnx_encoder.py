"""The ONNX Runtime encoder (the CPU default): same embeddings and masks as PyTorch, exported once, refused clearly."""
import os

import numpy as np
import pytest
import torch

from SlideSAMLib import CheckpointError, Session, load_model
from SlideSAMLib.onnx_encoder import OnnxEncoder, weights_digest
from testdata import ORGANS, dice, tight_box


@pytest.fixture(scope="module")
def torch_model():
    return load_model(device="cpu", encoder="torch")


def test_cpu_default_is_onnx_runtime(model):
    assert model.encoder_backend == "onnx"


def real_window(session, model):
    from SlideSAMLib.preprocess import window_to_input

    predictor = session.predictor(2)
    return window_to_input(predictor.window(95), predictor.geometry, model.spec.preprocessing)[None]


def test_embeddings_match_pytorch_on_a_real_window(model, torch_model, ct_session):
    x = torch.cat([real_window(ct_session, model), real_window(ct_session, model).flip(-1)])  # a batch of two
    reference, fast = torch_model.encode(x), model.encode(x)
    assert fast.shape == reference.shape
    assert float((fast - reference).norm() / reference.norm()) < 1e-4


def test_masks_match_pytorch(model, torch_model, ct_image, ct_labels):
    from SlideSAMLib import array_of

    label = ct_labels == ORGANS["kidney_left"]
    box = tight_box(label)
    k = box[0][2]
    masks = {}
    for name, m in (("onnx", model), ("torch", torch_model)):
        masks[name] = Session(m, array_of(ct_image), spacing=ct_image.GetSpacing()).segment(box=box, slice_range=(k - 3, k + 3)).volume_mask()
    assert masks["torch"].any()
    assert dice(masks["onnx"], masks["torch"]) >= 0.999


def test_export_is_reused_and_follows_the_weights(tmp_path, monkeypatch, torch_model):
    monkeypatch.setenv("SLIDESAM_CACHE_DIR", str(tmp_path))
    encoder = torch_model.net.image_encoder
    first = OnnxEncoder(encoder, torch_model.spec.img_size, threads=1)
    stamp = first.path.stat().st_mtime_ns
    again = OnnxEncoder(encoder, torch_model.spec.img_size, threads=1)
    assert again.path == first.path and again.path.stat().st_mtime_ns == stamp
    assert [p.name for p in (tmp_path / "onnx").iterdir()] == [first.path.name]  # no temporary file left
    # the digest follows this encoder's own weights: equal for a copy, different after one value moves by 1e-3
    import copy

    changed = copy.deepcopy(encoder)
    assert weights_digest(changed) == weights_digest(encoder)
    with torch.no_grad():
        next(changed.parameters()).view(-1)[0] += 1e-3
    assert weights_digest(changed) != weights_digest(encoder)


def test_bad_backend_and_unwritable_cache(tmp_path, monkeypatch, caplog, ct_session):
    model = load_model(device="cpu", encoder="torch")
    with pytest.raises(CheckpointError, match="not one of auto, torch, onnx"):
        model.use_encoder("tensorrt")
    x = real_window(ct_session, model)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("SLIDESAM_CACHE_DIR", str(blocker))
    model.use_encoder("onnx")  # asked for explicitly: its failure is an error
    with pytest.raises(CheckpointError, match="SLIDESAM_CACHE_DIR"):
        model.encode(x)
    assert model.use_encoder("auto") == "onnx"  # asked for "auto": PyTorch takes over, with one warning
    with caplog.at_level("WARNING", logger="slidesam"):
        embedding = model.encode(x)
    assert model.encoder_backend == "torch" and embedding.shape[0] == 1
    assert any("ONNX Runtime encoder unavailable" in r.getMessage() for r in caplog.records)
