"""The server's shared model: the encoder `slidesam serve` was given (ONNX Runtime by default on CPU), every
network call through the fair lock. It once rebuilt the model without its encoder backend, so a server always ran
PyTorch while the local engine ran ONNX Runtime, and "server = local" held only within a tolerance."""
import pytest
import torch

from SlideSAMLib import Session, array_of, load_model, read_image
from SlideSAMLib.preprocess import window_to_input
from SlideSAMLib.server.scheduler import FairLock, shared_model

from server_testing import CT


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_shared_model_keeps_the_encoder_and_locks_each_encode(backend):
    model = load_model(device="cpu", encoder=backend)
    lock = FairLock()
    shared = shared_model(model, lock)
    assert shared.encoder_backend == backend and shared.embedding_identity == model.embedding_identity
    image = read_image(CT)
    predictor = Session(model, array_of(image), spacing=image.GetSpacing()).predictor(2)
    x = window_to_input(predictor.window(80), predictor.geometry, model.spec.preprocessing)[None]
    grants = lock.grants
    embedding = shared.encode(x)
    assert lock.grants == grants + 1  # the encode took its turn, whichever backend ran it
    assert torch.equal(embedding, model.encode(x))  # and it is the server's configured encoder's answer, exactly
    sparse, _ = shared.net.prompt_encoder(points=None, boxes=torch.tensor([[10.0, 10.0, 60.0, 60.0]]), masks=None)
    assert lock.grants == grants + 2 and sparse.shape[0] == 1
