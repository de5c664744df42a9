"""Refine by clicks through a real `slidesam serve` process: the same result as in this process, no encoder pass,
bad clicks answered in one line, and a server without the refine route named as too old in one line."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from scipy import ndimage

from SlideSAMLib import Session
from SlideSAMLib.client import ServerError
from SlideSAMLib.contract import InProcessSession, RefineRequest
from SlideSAMLib.errors import InputError

from server_testing import API_KEY, ROOT, ServerProcess, box_around, dice, free_port

MR_KIDNEY_RIGHT = 2  # labels_total_mr.json
PROMPT_K, REFINE_K = 5, 6
RANGE = (3, 7)  # five slices keep the CPU cost of a propagation low


def clicks_on(mask, truth, k):
    """An exclude click on the mask's part farthest outside the reference, an include click deepest inside it."""
    outside = ndimage.distance_transform_edt(~truth) * (mask & ~truth)
    ey, ex = np.unravel_index(outside.argmax(), mask.shape)
    iy, ix = np.unravel_index(ndimage.distance_transform_edt(truth).argmax(), mask.shape)
    assert outside.max() > 0 and mask[ey, ex] and mask[iy, ix]
    return [((float(ix), float(iy), float(k)), True), ((float(ex), float(ey), float(k)), False)]


@pytest.fixture(scope="module")
def case(main_server, local_model, mr):
    """The right kidney propagated over RANGE on the server and in this process, from the same box."""
    image, volume, labels = mr
    box = box_around(labels[PROMPT_K] == MR_KIDNEY_RIGHT, PROMPT_K)
    client = main_server.client()
    session_id = client.upload(volume, image.GetSpacing(), image.GetOrigin(), image.GetDirection(), modality="mr")
    remote = client.segment(session_id, box=box, slice_range=RANGE)
    local = InProcessSession(Session(local_model, volume, modality="mr", spacing=image.GetSpacing()))
    first = local.segment(box=box, slice_range=RANGE)
    assert first.slices == remote.slices
    yield client, session_id, local, first, labels
    client.close(session_id)


def test_refine_through_the_server_equals_the_local_refine(case):
    client, session_id, local, first, labels = case
    mask, truth = first.slice_masks[REFINE_K], labels[REFINE_K] == MR_KIDNEY_RIGHT
    clicks = clicks_on(mask, truth, REFINE_K)
    largest = max(int(m.sum()) for m in first.slice_masks.values())
    current = {s: m for s, m in first.slice_masks.items() if s != REFINE_K}  # a local refinement: the result's other slices go too
    remote = client.refine(session_id, REFINE_K, clicks, mask, axis=2, slice_range=RANGE, largest_area=largest, current=current)
    here = local.refine(REFINE_K, clicks, mask, axis=2, slice_range=RANGE, largest_area=largest, current=current)
    assert remote.prompt == here.prompt == "refine"
    assert remote.span == here.span and here.span[0] <= REFINE_K <= here.span[1]  # the slices to replace, named by the engine
    assert remote.slices == here.slices and REFINE_K in remote.slices
    assert all(np.array_equal(remote.slice_masks[s], here.slice_masks[s]) for s in here.slices)
    assert remote.stopped == here.stopped and [r.as_dict() for r in remote.info] == [i.as_dict() for i in here.info]
    assert remote.encoder_passes == here.encoder_passes == 0  # the first run encoded every window of RANGE
    (ix, iy, _), _ = clicks[0]
    (ex, ey, _), _ = clicks[1]
    corrected = remote.slice_masks[REFINE_K]
    assert corrected[int(iy), int(ix)] and not corrected[int(ey), int(ex)] and not np.array_equal(corrected, mask)


def test_refine_streams_each_slice_as_it_goes_the_same_locally_and_through_the_server(case):
    """What the web page and the Slicer module show while a refine runs: the corrected slice first, then each slice the
    result keeps, as it is accepted (Session.refine's slice_done), bit for bit the same through the server."""
    client, session_id, local, first, labels = case
    mask = first.slice_masks[REFINE_K]
    clicks = clicks_on(mask, labels[REFINE_K] == MR_KIDNEY_RIGHT, REFINE_K)
    current = {s: m for s, m in first.slice_masks.items() if s != REFINE_K}
    request = RefineRequest.of(mask, REFINE_K, clicks, axis=2, slice_range=RANGE, current=current)
    local_order, local_seen, remote_seen, events = [], {}, {}, []

    def local_done(k, m):
        local_order.append(k)
        local_seen[k] = np.array(m, bool)

    def remote_done(k, m):
        remote_seen[k] = m
        events.append(("slice", k))

    here = local.run(request, None, None, local_done)
    remote = client.run(session_id, request, lambda f, m: events.append(("progress", f)), None, remote_done)
    assert local_order[0] == REFINE_K and sorted(local_seen) == here.slices == remote.slices  # every slice it writes, no other
    np.testing.assert_array_equal(local_seen[REFINE_K], here.slice_masks[REFINE_K])  # the corrected slice, as written
    assert sorted(remote_seen) == sorted(local_seen) and all(np.array_equal(remote_seen[k], local_seen[k]) for k in local_seen)
    for k, m in local_seen.items():  # what is shown is what gets written, up to the merge with the next window (as a segment run)
        assert dice(m, here.slice_masks[k]) > 0.9, k
    kinds = [kind for kind, _ in events]
    assert kinds.index("slice") < len(kinds) - 1 - kinds[::-1].index("progress")  # streamed while it ran, not after it


@pytest.mark.parametrize("clicks, message", [
    ([], "no refinement click"),
    ([((20.0, 20.0, REFINE_K + 1), True)], "not on slice"),
    ([((-30.0, 20.0, REFINE_K), False)], "outside the volume"),
])
def test_bad_clicks_are_refused_in_one_line(case, clicks, message):
    client, session_id, _, first, _ = case
    with pytest.raises(InputError, match=message) as caught:
        client.refine(session_id, REFINE_K, clicks, first.slice_masks[REFINE_K], axis=2, slice_range=RANGE)
    assert "\n" not in str(caught.value)
    assert client.session_info(session_id)["running_jobs"] == []


@pytest.mark.parametrize("which, message", [
    ("one more than the volume", "current holds {n1} slices, the volume has {n} along k: send at most one mask per slice"),
    ("past the last slice", "current names slice {n}, outside the volume [(]0..{last} along k[)]"),
    ("a negative index", "current names slice -1, not a slice index"),
])
def test_a_current_that_does_not_fit_the_volume_is_refused_in_one_line(case, which, message):
    client, session_id, _, first, _ = case
    mask = first.slice_masks[REFINE_K]
    n = client.session_info(session_id)["shape_kji"][0]  # slices along k
    current = {"one more than the volume": {s: mask for s in range(n + 1)}, "past the last slice": {n: mask}, "a negative index": {-1: mask}}[which]
    with pytest.raises(InputError, match=message.format(n=n, n1=n + 1, last=n - 1)) as caught:
        client.refine(session_id, REFINE_K, [((20.0, 20.0, REFINE_K), True)], mask, axis=2, slice_range=RANGE, current=current)
    assert "\n" not in str(caught.value)
    assert client.session_info(session_id)["running_jobs"] == []


def test_without_current_the_span_runs_to_where_the_structure_ends(case):
    client, session_id, local, first, labels = case
    mask = first.slice_masks[REFINE_K]
    clicks = clicks_on(mask, labels[REFINE_K] == MR_KIDNEY_RIGHT, REFINE_K)
    remote = client.refine(session_id, REFINE_K, clicks, mask, axis=2, slice_range=RANGE)
    here = local.refine(REFINE_K, clicks, mask, axis=2, slice_range=RANGE)
    assert remote.span == here.span and remote.stopped == here.stopped and remote.slices == here.slices
    assert all(np.array_equal(remote.slice_masks[s], here.slice_masks[s]) for s in here.slices)


def test_a_malformed_request_is_refused_before_it_is_sent():
    with pytest.raises(InputError, match="slice axis 3"):
        RefineRequest.of(np.ones((4, 4), bool), 1, [((1, 1, 1), True)], axis=3)
    with pytest.raises(InputError, match="largest_area"):
        RefineRequest.of(np.ones((4, 4), bool), 1, [((1, 1, 1), True)], largest_area=-1)


OLD_SERVER = textwrap.dedent("""
    # A real server process whose app lacks the refine route, as every SlideSAM before it did.
    import sys, uvicorn
    from SlideSAMLib import load_model
    from SlideSAMLib.server.app import create_app
    app = create_app(load_model(device="cpu"), api_key=sys.argv[2])
    app.router.routes[:] = [r for r in app.router.routes if not getattr(r, "path", "").endswith("/refine")]
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
""")


class OldServer(ServerProcess):
    """ServerProcess's waiting, client and stopping, for the process above."""

    def __init__(self, tmp_dir):  # noqa: super().__init__ would start a `slidesam serve`
        self.port, self.api_key = free_port(), API_KEY
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp_dir / f"old-server-{self.port}.log"
        self._log = open(self.log_path, "wb")
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen([sys.executable, "-c", OLD_SERVER, str(self.port), API_KEY], cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT)


def test_a_server_without_refine_says_so_in_one_line(tmp_path, mr):
    image, volume, labels = mr
    server = OldServer(tmp_path).wait_ready()
    try:
        client = server.client()
        session_id = client.upload(volume, image.GetSpacing(), image.GetOrigin(), image.GetDirection(), modality="mr")
        with pytest.raises(ServerError, match="does not know 'refine' requests .*update the server") as caught:
            client.refine(session_id, REFINE_K, [((20.0, 20.0, REFINE_K), True)], labels[REFINE_K] == MR_KIDNEY_RIGHT)
        assert "\n" not in str(caught.value)
        assert client.session_info(session_id)["session"] == session_id  # the session is still there: only the route is missing
    finally:
        server.stop()
