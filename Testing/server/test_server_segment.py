"""Segmenting real scans through a real server: same masks as the local engine, restarts, cancel, 4 clients at once."""
import threading

import numpy as np
import pytest

from SlideSAMLib import Session, array_of, read_image

from server_testing import CT, CT_SEG, box_around, dice

MR_KIDNEY_RIGHT = 2  # labels_total_mr.json
MR_KIDNEY_LEFT = 3
MR_LIVER = 5
CT_KIDNEY_RIGHT = 2  # labels_total.json
PROMPT_K = 5
RANGE = (3, 7)  # five slices keep the CPU cost of a propagation low


def same_result(remote, local):
    assert remote.axis == local.axis and remote.slices == local.slices
    assert all(np.array_equal(remote.slice_masks[s], local.slice_masks[s]) for s in local.slices)
    assert np.array_equal(remote.volume_mask(), local.volume_mask())
    assert remote.stopped == local.stopped and remote.cancelled == local.cancelled
    assert remote.prompt == local.prompt and remote.prompt in ("box", "click-search", "restart")
    assert remote.encoder_passes == local.encoder_passes
    # the server runs the local engine's encoder (the same default), so every score is equal, not close
    assert [r.as_dict() for r in remote.info] == [i.as_dict() for i in local.info]


@pytest.fixture(scope="module")
def kidney_case(main_server, local_model, mr):
    """One MR session on the server and its local twin, both prompted with the same kidney box."""
    image, volume, labels = mr
    box = box_around(labels[PROMPT_K] == MR_KIDNEY_RIGHT, PROMPT_K)
    client = main_server.client()
    session_id = client.upload(volume, image.GetSpacing(), image.GetOrigin(), image.GetDirection(), modality="mr")
    fractions = []
    remote = client.segment(session_id, box=box, slice_range=RANGE, progress=lambda f, m: fractions.append(f))
    local_session = Session(local_model, volume, modality="mr", spacing=image.GetSpacing())
    local = local_session.segment(box=box, slice_range=RANGE)
    yield client, session_id, local_session, remote, local, fractions
    client.close(session_id)


def test_server_masks_equal_local_masks(kidney_case, mr, main_server):
    client, session_id, _, remote, local, fractions = kidney_case
    _, volume, labels = mr
    same_result(remote, local)
    assert remote.slices == list(range(RANGE[0], RANGE[1] + 1))
    assert remote.volume_mask().shape == volume.shape
    lo, hi = RANGE
    assert dice(remote.volume_mask()[lo : hi + 1], labels[lo : hi + 1] == MR_KIDNEY_RIGHT) > 0.8
    assert fractions and fractions == sorted(fractions)  # progress streamed, in order
    assert remote.model == client.version()["model"] and remote.summary()["slices_written"] == hi - lo + 1
    info = client.session_info(session_id)
    assert info["shape_kji"] == list(volume.shape) and info["modality"] == "mr" and info["spacing"] == [3.0, 3.0, 3.0]
    assert info["cached_bytes"] > 0


def test_restart_and_new_prompts_reuse_embeddings(kidney_case, mr):
    client, session_id, local_session, _, _, _ = kidney_case
    _, _, labels = mr
    corrected = labels[PROMPT_K] == MR_KIDNEY_RIGHT  # the annotator's corrected slice
    remote = client.restart(session_id, corrected, PROMPT_K, axis=2, direction="up", slice_range=RANGE)
    local = local_session.restart(corrected, PROMPT_K, axis=2, direction="up", slice_range=RANGE)
    same_result(remote, local)
    assert remote.encoder_passes == 0  # windows 5..7 were encoded by the first prompt
    assert np.array_equal(remote.slice_masks[PROMPT_K], corrected) and min(remote.slices) == PROMPT_K
    again = client.segment(session_id, box=box_around(labels[6] == MR_KIDNEY_RIGHT, 6), slice_range=(5, 7))
    assert again.encoder_passes == 0 and again.slices


def test_a_click_through_the_server_equals_the_local_click(kidney_case, mr, local_model):
    """The embedded model's click search runs on the server exactly as locally (its disc and ring are in mm: the
    local twin needs the same spacing the upload carried)."""
    from SlideSAMLib.training.prompts import deepest_point

    client, session_id, _, _, _, _ = kidney_case
    image, volume, labels = mr
    x, y = deepest_point(labels[PROMPT_K] == MR_KIDNEY_LEFT)
    click = [((x, y, PROMPT_K), True)]
    remote = client.segment(session_id, points=click, slice_range=RANGE)
    local_session = Session(local_model, volume, modality="mr", spacing=image.GetSpacing())
    local_session.segment(points=click, slice_range=RANGE)  # encodes the windows, as the server's first prompt did
    local = local_session.segment(points=click, slice_range=RANGE)
    same_result(remote, local)
    lo, hi = RANGE
    assert dice(remote.volume_mask()[lo : hi + 1], labels[lo : hi + 1] == MR_KIDNEY_LEFT) > 0.7


def test_cancel_stops_at_the_next_window(kidney_case, mr):
    client, session_id, _, _, _, _ = kidney_case
    _, _, labels = mr
    box = box_around(labels[PROMPT_K] == MR_KIDNEY_RIGHT, PROMPT_K)
    seen = []
    result = client.segment(session_id, box=box, direction="down", progress=lambda f, m: seen.append(m), cancel=lambda: bool(seen))
    assert result.cancelled and result.stopped.get("down") == "cancelled"
    assert 0 not in result.slices and PROMPT_K in result.slices  # stopped well before the volume's end
    # The session is free again at once.
    assert client.segment(session_id, box=box, slice_range=(5, 6)).slices == [5, 6]


def test_four_concurrent_clients_get_their_own_correct_results(main_server, local_model, mr):
    """Three MR prompts and one CT prompt, each on its own client and session, all at once."""
    image, volume, labels = mr
    mr_crop, mr_labels = volume[3:6], labels[3:6]
    ct_image = read_image(CT)
    ct_crop, ct_labels = array_of(ct_image)[78:81], array_of(read_image(CT_SEG))[78:81]
    cases = [
        ("mr", mr_crop, "mr", box_around(mr_labels[1] == MR_KIDNEY_RIGHT, 1), mr_labels == MR_KIDNEY_RIGHT),
        ("mr", mr_crop, "mr", box_around(mr_labels[1] == MR_KIDNEY_LEFT, 1), mr_labels == MR_KIDNEY_LEFT),
        ("mr", mr_crop, "mr", box_around(mr_labels[1] == MR_LIVER, 1), mr_labels == MR_LIVER),
        ("ct", ct_crop, "ct", box_around(ct_labels[1] == CT_KIDNEY_RIGHT, 1), ct_labels == CT_KIDNEY_RIGHT),
    ]
    results, errors = [None] * len(cases), []
    barrier = threading.Barrier(len(cases), timeout=120)

    def annotator(n):
        _, crop, modality, box, _ = cases[n]
        try:
            client = main_server.client()
            session_id = client.upload(crop, (3.0, 3.0, 3.0), modality=modality)
            barrier.wait()  # all four prompts reach the server together
            results[n] = client.segment(session_id, box=box)
            client.close(session_id)
        except Exception as exc:  # reported below with the case number
            errors.append((n, exc))

    threads = [threading.Thread(target=annotator, args=(n,)) for n in range(len(cases))]
    for t in threads:
        t.start()
    local_sessions = {name: Session(local_model, crop, modality=name, spacing=(3.0, 3.0, 3.0)) for name, crop in (("mr", mr_crop), ("ct", ct_crop))}
    expected = [local_sessions[name].segment(box=box) for name, _, _, box, _ in cases]
    for t in threads:
        t.join(timeout=900)
    assert not any(t.is_alive() for t in threads) and not errors, errors
    for n, (remote, local) in enumerate(zip(results, expected)):
        assert np.array_equal(remote.volume_mask(), local.volume_mask()), f"client {n} differs from the local engine"
        assert dice(remote.volume_mask(), cases[n][4]) > 0.7, f"client {n} missed its organ"
    masks = [r.volume_mask() for r in results[:3]]
    assert all(dice(masks[a], masks[b]) < 0.1 for a in range(3) for b in range(a + 1, 3))  # three organs, three answers
    assert main_server.client().status()["running_jobs"] == 0


def test_segment_via_server_is_the_cli_path(main_server, mr):
    from types import SimpleNamespace

    from SlideSAMLib.client import segment_via_server
    from SlideSAMLib.errors import InputError

    image, _, labels = mr
    args = SimpleNamespace(server=main_server.url, api_key=main_server.api_key, checkpoint=None, modality="mr", direction="both", slice_range=(5, 6))
    before = main_server.client().status()["sessions"]
    result = segment_via_server(args, image, box_around(labels[5] == MR_KIDNEY_RIGHT, 5), [], 2)
    assert result.slices == [5, 6] and dice(result.volume_mask()[5:7], labels[5:7] == MR_KIDNEY_RIGHT) > 0.8
    assert main_server.client().status()["sessions"] == before  # its session was closed
    with pytest.raises(InputError, match="--checkpoint and --server"):
        segment_via_server(SimpleNamespace(**{**vars(args), "checkpoint": "model.pth"}), image, None, [], 2)


def test_a_client_that_hangs_up_stops_its_job(main_server, mr):
    import http.client
    import json
    import time

    from SlideSAMLib import wire

    image, volume, labels = mr
    client = main_server.client()
    session_id = client.upload(volume, image.GetSpacing(), modality="mr")
    connection = http.client.HTTPConnection("127.0.0.1", main_server.port, timeout=300)
    body = json.dumps({"box": box_around(labels[5] == MR_KIDNEY_RIGHT, 5)})
    connection.request("POST", f"/sessions/{session_id}/segment", body, {"Content-Type": "application/json", wire.API_KEY_HEADER: main_server.api_key})
    response = connection.getresponse()
    while json.loads(response.readline()).get("type") != "progress":
        pass
    connection.close()  # the annotator closed Slicer mid-propagation
    for _ in range(600):  # bounded wait for the job to notice
        if not client.session_info(session_id)["running_jobs"]:
            break
        time.sleep(0.2)
    info = client.session_info(session_id)
    assert not info["running_jobs"]
    # Left running, it would encode the kidney's 14 windows; cancelled, it stops a window or two after the hang-up.
    print("encoder passes after hang-up:", info["encoder_passes"])
    assert info["encoder_passes"] <= 6
    client.close(session_id)
