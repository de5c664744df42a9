"""A shared EmbeddingCache never hands a session embeddings of another session, model or encoder.

The Slicer logic and the server share one cache across sessions. Keyed by id(session), a new Session that
CPython placed at a freed session's address read that session's windows: another volume's (or another
model's) embeddings, silently."""
import numpy as np

from SlideSAMLib import EmbeddingCache, Session, array_of, load_model
from SlideSAMLib.predictor import WindowPredictor

K = 60
SPACING = (3.0, 3.0, 3.0)  # example_ct's


def test_a_new_session_at_a_reused_address_encodes_its_own_volume(model, ct_image):
    cache = EmbeddingCache()
    volume = array_of(ct_image)
    flipped = np.ascontiguousarray(volume[:, ::-1])  # another volume, made before the first session is freed
    first = Session(model, volume, cache=cache, spacing=SPACING)
    first.predictor(2).encode([K])
    address = id(first)
    del first  # CPython gives the freed address to the next object of its size: here the next Session
    second = Session(model, flipped, cache=cache, spacing=SPACING)
    print("address reused:", id(second) == address)
    assert not second.predictor(2).is_encoded(K)
    second.predictor(2).encode([K])
    assert second.encoder_passes == 1 and len(cache) == 2


def test_another_encoder_or_model_does_not_read_the_embeddings(ct_image):
    cache = EmbeddingCache()
    volume = array_of(ct_image)
    model = load_model(device="cpu", encoder="torch")
    session = Session(model, volume, cache=cache, spacing=SPACING)
    session.predictor(2).encode([K])
    assert session.predictor(2).is_encoded(K)
    # the same weights on another encoder backend: ONNX Runtime's embeddings are not PyTorch's
    model.use_encoder("onnx")
    assert not session.predictor(2).is_encoded(K)
    model.use_encoder("torch")
    assert session.predictor(2).is_encoded(K)
    # the same owner and volume with another loaded model (as after the Slicer module's model changes)
    other = load_model(device="cpu", encoder="torch")
    assert not WindowPredictor(other, volume, 2, cache=cache, cache_owner=session.cache_owner).is_encoded(K)
