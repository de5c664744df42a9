"""Each slice streamed as the engine accepts it (`slice_done`), locally and through a real server: what the web
annotator shows while a run goes on (SlideSAMLib/web/preview.py)."""
import numpy as np

from SlideSAMLib import Session
from SlideSAMLib.contract import SegmentRequest

from server_testing import box_around, dice

MR_KIDNEY_RIGHT = 2  # labels_total_mr.json
PROMPT_K, RANGE = 5, (3, 7)  # five slices keep the CPU cost low


def test_slices_stream_while_running_the_same_locally_and_through_the_server(main_server, local_model, mr):
    image, volume, labels = mr
    box = box_around(labels[PROMPT_K] == MR_KIDNEY_RIGHT, PROMPT_K)
    local_seen, events = {}, []
    local = Session(local_model, volume, modality="mr", spacing=image.GetSpacing()).segment(
        box=box, slice_range=RANGE, slice_done=lambda k, m: local_seen.setdefault(k, m.copy()))
    client = main_server.client()
    session_id = client.upload(volume, image.GetSpacing(), image.GetOrigin(), image.GetDirection(), modality="mr")
    remote_seen = {}

    def slice_done(k, mask):
        remote_seen[k] = mask
        events.append(("slice", k))

    remote = client.run(session_id, SegmentRequest.of(box=box, slice_range=RANGE), lambda f, m: events.append(("progress", f)), None, slice_done)
    client.close(session_id)
    assert sorted(local_seen) == local.slices == list(range(RANGE[0], RANGE[1] + 1))  # the prompt slice and each accepted one
    assert sorted(remote_seen) == sorted(local_seen)
    assert all(np.array_equal(remote_seen[k], local_seen[k]) for k in local_seen)  # the same engine: bit for bit
    for k, mask in local_seen.items():  # what is shown is what gets written, up to the merge with the next window
        assert mask.shape == local.slice_masks[k].shape and dice(mask, local.slice_masks[k]) > 0.9, k
    assert remote.slices == local.slices
    kinds = [kind for kind, _ in events]
    assert kinds.index("slice") < len(kinds) - 1 - kinds[::-1].index("progress")  # streamed while it ran, not after it
