"""Session expiry, the global embedding budget (oldest evicted first), and a server killed mid-request."""
import threading
import time

import numpy as np
import pytest

from SlideSAMLib.client import ServerError, SessionGone

from server_testing import ServerProcess, box_around

WINDOW_BYTES = 256 * 64 * 64 * 2  # one LiteMedSAM window embedding in float16


@pytest.fixture(scope="module")
def small_cache_server(tmp_path_factory):
    """Room for two windows' embeddings across all sessions."""
    server = ServerProcess(tmp_path_factory.mktemp("server"), "--cache-mb", "5", "--session-ttl", "600")
    try:
        yield server.wait_ready()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def short_ttl_server(tmp_path_factory):
    server = ServerProcess(tmp_path_factory.mktemp("server"), "--session-ttl", "2")
    try:
        yield server.wait_ready()
    finally:
        server.stop()


def test_embedding_budget_is_global_and_evicts_the_oldest_session_first(small_cache_server, mr):
    image, volume, labels = mr
    crop = volume[3:5]  # two slices: two windows per session
    box = box_around(labels[3] == 2, 0)
    client = small_cache_server.client()
    a, b = (client.upload(crop, image.GetSpacing(), modality="mr") for _ in range(2))
    first_a = client.segment(a, box=box, direction="up")
    assert first_a.encoder_passes >= 1 and client.session_info(a)["cached_bytes"] == 2 * WINDOW_BYTES
    assert client.segment(b, box=box, direction="up").encoder_passes == first_a.encoder_passes
    status = client.status()
    assert status["cache_bytes"] <= status["cache_limit_bytes"] < 3 * WINDOW_BYTES
    assert client.session_info(a)["cached_bytes"] == 0  # the older session lost its windows
    assert client.session_info(b)["cached_bytes"] == 2 * WINDOW_BYTES
    assert client.segment(b, box=box, direction="up").encoder_passes == 0  # the newer one kept them
    again_a = client.segment(a, box=box, direction="up")
    assert again_a.encoder_passes == first_a.encoder_passes  # re-encoded on demand, same answer
    assert np.array_equal(again_a.volume_mask(), first_a.volume_mask())
    client.close(a)
    assert client.session_info(b)["cached_bytes"] == 0 and client.status()["cache_bytes"] == 0  # a's windows freed on close
    client.close(b)


def test_expired_session_is_reported_not_crashed_on(short_ttl_server, mr):
    image, volume, _ = mr
    client = short_ttl_server.client()
    session_id = client.upload(volume[:3], image.GetSpacing())
    assert client.session_info(session_id)["expires_in_s"] <= 2
    for _ in range(100):  # bounded: the reaper runs every 0.5 s
        if client.status()["sessions"] == 0:
            break
        time.sleep(0.2)
    with pytest.raises(SessionGone, match="expired.*upload the volume again"):
        client.segment(session_id, box=((10, 10, 1), (40, 40, 1)))
    with pytest.raises(SessionGone, match="expired"):
        client.session_info(session_id)
    assert client.version()["server"] == "slidesam" and client.status()["sessions"] == 0


def test_server_killed_mid_request_gives_one_clear_error(short_ttl_server, mr):
    image, volume, labels = mr
    client = short_ttl_server.client()
    session_id = client.upload(volume, image.GetSpacing(), modality="mr")
    started, outcome = threading.Event(), {}

    def annotate():
        try:
            outcome["result"] = client.segment(session_id, box=box_around(labels[5] == 2, 5), progress=lambda f, m: started.set())
        except ServerError as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=annotate)
    worker.start()
    assert started.wait(timeout=600), "no progress from the server"
    short_ttl_server.kill()
    worker.join(timeout=120)
    assert not worker.is_alive() and "result" not in outcome
    message = str(outcome["error"])
    assert "closed the connection mid-request" in message and "\n" not in message
    with pytest.raises(ServerError, match="connection refused"):
        client.version()
