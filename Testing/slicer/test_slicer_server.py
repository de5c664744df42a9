"""Model source "server": SlideSAMLogic as a thin client of a real `slidesam serve` process on loopback.

The logic in this process never loads a model; the server (same thread count) must give exactly
the masks the local engine gives, restarts reuse the server's session, a session the server
forgot is uploaded again, and a wrong key or a server killed mid-run leaves the segmentation as it was.
"""
import sys
from pathlib import Path

import numpy as np
import pytest
import slicer

import SlideSAM
from SlideSAMLib.client import AuthError, ServerError
from SlideSAMLib.errors import InputError
from SlideSAMSlicer.writer import read_segment
from slicer_data import dice

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
from server_testing import API_KEY, ServerProcess  # noqa: E402

SESSION_TTL_S = 3


@pytest.fixture(scope="module")
def server(tmp_path_factory, slidesam_model):  # the model fixture first: it sets the thread count the server copies
    process = ServerProcess(tmp_path_factory.mktemp("slicer-server"), "--session-ttl", str(SESSION_TTL_S), api_key=API_KEY)
    try:
        yield process.wait_ready()
    finally:
        process.stop()


@pytest.fixture(scope="module")
def remote_logic(server):
    logic = SlideSAM.SlideSAMLogic()
    logic.setModelSource(server=server.url, apiKey=API_KEY)
    return logic


@pytest.fixture(scope="module")
def local_masks(slidesam_model, ct, window):
    from SlideSAMLib import Session

    session = Session(slidesam_model, np.array(slicer.util.arrayFromVolume(ct.node)), spacing=ct.image.GetSpacing())
    return session.segment(box=ct.box_ijk, slice_range=window).volume_mask()


def test_connection_test_names_the_server_and_its_model(remote_logic):
    message = remote_logic.testConnection()
    assert message.startswith("connected: SlideSAM") and "LiteMedSAM" in message and "clicks by box search" in message


def test_server_result_equals_the_local_engine_and_restart_reuses_it(mrml, ct, window, remote_logic, local_masks):
    seg = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "via server")
    messages = []
    report = remote_logic.segment(ct.node, seg, "kidney_left", box=ct.box_ras, sliceRange=window, progress=lambda f, m: messages.append(m))
    result = read_segment(seg, report.segmentId, ct.node)
    assert remote_logic._model is None  # nothing was loaded in this process
    assert any("uploading" in m for m in messages)
    np.testing.assert_array_equal(result, local_masks)
    assert dice(result[window[0] : window[1] + 1], ct.reference[window[0] : window[1] + 1]) > 0.8

    corrected = ct.k + 1
    edited = result.copy()
    edited[corrected] = ct.reference[corrected]
    slicer.util.updateSegmentBinaryLabelmapFromArray(edited, seg, report.segmentId, ct.node)
    restart = remote_logic.restart(ct.node, seg, report.segmentId, corrected, axis=2, direction="up", sliceRange=window)
    after = read_segment(seg, report.segmentId, ct.node)
    np.testing.assert_array_equal(after[: corrected + 1], edited[: corrected + 1])
    assert restart.encoderPasses == 0  # the server still holds the volume's embeddings
    assert remote_logic.undo(seg)
    np.testing.assert_array_equal(read_segment(seg, report.segmentId, ct.node), edited)


def test_an_expired_server_session_is_uploaded_again(mrml, ct, window, remote_logic, local_masks):
    import time

    remote = remote_logic.session(ct.node)  # the volume's session from the earlier run
    assert remote.client.status()["sessions"] >= 1
    deadline = time.monotonic() + 60 * SESSION_TTL_S
    # Until the server's reaper has closed every idle session, ours included (no fixed sleep). /status does not
    # count as using a session; asking for the session itself would.
    while time.monotonic() < deadline:
        if remote.client.status()["sessions"] == 0:
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"the server kept an idle session for {60 * SESSION_TTL_S} s with a {SESSION_TTL_S} s TTL")
    seg = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "after expiry")
    messages = []
    report = remote_logic.segment(ct.node, seg, "again", box=ct.box_ras, sliceRange=window, progress=lambda f, m: messages.append(m))
    assert any("expired" in m for m in messages)
    np.testing.assert_array_equal(read_segment(seg, report.segmentId, ct.node), local_masks)


def test_wrong_key_is_one_line_and_changes_nothing(mrml, ct, window, server):
    logic = SlideSAM.SlideSAMLogic()
    logic.setModelSource(server=server.url, apiKey="not-the-key")
    seg = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "wrong key")
    with pytest.raises(AuthError, match="refused the API key"):
        logic.testConnection()
    with pytest.raises(AuthError):
        logic.segment(ct.node, seg, "kidney", box=ct.box_ras, sliceRange=window)
    assert seg.GetSegmentation().GetNumberOfSegments() == 0


def test_bad_url_is_refused_when_set():
    with pytest.raises(InputError, match="not an http"):
        SlideSAM.SlideSAMLogic().setModelSource(server="gpu-box:8765")


def test_server_killed_mid_run_leaves_the_segment_unchanged(mrml, ct, remote_logic, server):
    seg = mrml.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "server dies")
    seg.SetReferenceImageGeometryParameterFromVolumeNode(ct.node)
    sid = seg.GetSegmentation().AddEmptySegment("kidney", "kidney")
    before = ct.reference.copy()
    slicer.util.updateSegmentBinaryLabelmapFromArray(before, seg, sid, ct.node)

    def kill_on_first_slice(fraction, message):
        if fraction > 0 and server.proc.poll() is None:
            server.kill()

    with pytest.raises(ServerError, match="closed the connection|cannot reach|did not answer"):
        remote_logic.segment(ct.node, seg, sid, box=ct.box_ras, progress=kill_on_first_slice)  # the whole organ: long enough to be cut
    np.testing.assert_array_equal(read_segment(seg, sid, ct.node), before)
    assert not remote_logic.canUndo(seg)
