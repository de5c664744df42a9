"""The wire format and the fair model lock, without a server."""
import struct
import sys
import subprocess
import threading
import time
import zlib

import numpy as np
import pytest

from SlideSAMLib import wire
from SlideSAMLib.server.scheduler import FairLock

from server_testing import ROOT


def test_volume_round_trip_keeps_voxels_and_geometry(mr):
    image, volume, _ = mr
    body = wire.encode_volume(volume, image.GetSpacing(), image.GetOrigin(), image.GetDirection(), modality="mr")
    assert len(body) < volume.nbytes  # compressed
    back, header = wire.decode_volume(body, max_array_bytes=volume.nbytes)
    assert back.dtype == volume.dtype and np.array_equal(back, volume)
    assert header["spacing"] == list(image.GetSpacing()) and header["origin"] == list(image.GetOrigin())
    assert header["direction"] == list(image.GetDirection()) and header["modality"] == "mr"


def test_big_endian_floats_arrive_native():
    volume = np.arange(24, dtype=">f4").reshape(2, 3, 4)
    back, _ = wire.decode_volume(wire.encode_volume(volume, (1.0, 1.0, 1.0)), 1 << 20)
    assert back.dtype == np.float32 and back.dtype.isnative and np.array_equal(back, volume)


def test_decompression_is_bounded_by_the_declared_size():
    """A small body claiming a small array but inflating to much more is refused without inflating it all."""
    head = b'{"dtype": "|u1", "shape": [1, 1, 16], "spacing": [1,1,1], "origin": [0,0,0], "direction": [1,0,0,0,1,0,0,0,1]}'
    bomb = zlib.compress(b"\0" * (64 << 20))
    body = wire.VOLUME_MAGIC + struct.pack(">I", len(head)) + head + bomb
    with pytest.raises(wire.WireError, match="or more"):
        wire.decode_volume(body, 1 << 20)


@pytest.mark.parametrize(
    "body, message",
    [
        (b"not a volume at all", "magic"),
        (wire.VOLUME_MAGIC + b"\0\0", "truncated"),
        (wire.VOLUME_MAGIC + struct.pack(">I", 5) + b"{nope", "not JSON"),
        (wire.VOLUME_MAGIC + struct.pack(">I", 2) + b"[]", "not a JSON object"),
        (wire.VOLUME_MAGIC + struct.pack(">I", 30) + b'{"dtype": "O", "shape": [1,1,1]}'[:30], "not JSON|voxel type"),
    ],
)
def test_malformed_bodies_are_named(body, message):
    with pytest.raises(wire.WireError, match=message):
        wire.decode_volume(body, 1 << 20)


def test_oversize_and_bad_headers():
    volume = np.zeros((4, 64, 64), np.int16)
    with pytest.raises(wire.TooLarge, match="limit"):
        wire.decode_volume(wire.encode_volume(volume, (1.0, 1.0, 1.0)), volume.nbytes - 1)
    good = wire.encode_volume(volume, (1.0, 1.0, 1.0))
    with pytest.raises(wire.WireError, match="truncated or corrupt"):
        wire.decode_volume(good[:-10], 1 << 20)
    with pytest.raises(wire.WireError, match="voxel type"):
        wire.encode_volume(np.zeros((2, 2, 2), complex), (1.0, 1.0, 1.0))
    with pytest.raises(wire.WireError, match="geometry"):
        wire.encode_volume(volume, spacing=(1, 0, 1))
    with pytest.raises(wire.WireError, match="NaN"):
        wire.decode_volume(wire.encode_volume(np.full((2, 2, 2), np.nan, np.float32), (1.0, 1.0, 1.0)), 1 << 20)


def test_masks_round_trip():
    rng = np.random.default_rng(0)
    masks = {k: rng.random((37, 53)) > 0.5 for k in (7, 3, 12)}
    slices, text = wire.encode_masks(masks)
    assert slices == [3, 7, 12]
    back = wire.decode_masks(slices, text, (37, 53))
    assert all(np.array_equal(back[k], masks[k]) for k in masks)
    m = masks[3]
    assert np.array_equal(wire.decode_mask2d(wire.encode_mask2d(m), m.size), m)
    with pytest.raises(wire.TooLarge):
        wire.decode_mask2d(wire.encode_mask2d(m), m.size - 1)
    with pytest.raises(wire.WireError, match="base64"):
        wire.decode_mask2d({"shape": [2, 2], "bits": "***"}, 100)


def test_client_imports_without_torch():
    code = "import sys, SlideSAMLib.client, SlideSAMLib.wire; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={"PYTHONPATH": str(ROOT)}).returncode == 0


def test_fair_lock_grants_in_arrival_order():
    lock = FairLock()
    order = []
    lock.acquire()
    threads = []
    for n in range(5):
        t = threading.Thread(target=lambda n=n: (lock.acquire(), order.append(n), lock.release()))
        t.start()
        threads.append(t)
        for _ in range(2000):  # wait (bounded) until this thread is queued before starting the next
            if lock.waiting == n + 1:
                break
            time.sleep(0.001)
        assert lock.waiting == n + 1
    lock.release()
    for t in threads:
        t.join(timeout=10)
    assert order == [0, 1, 2, 3, 4]
