"""An upload without the voxel spacing is refused (the stop rule and the box margin measure in mm): a real server
answers 400 naming the missing field and the fix; the client refuses before sending. Nothing assumes 1 mm."""
import json
import struct
import urllib.error
import urllib.request
import zlib

import numpy as np
import pytest

from SlideSAMLib import wire
from SlideSAMLib.errors import InputError

from server_testing import API_KEY


def _body_without_spacing(volume: np.ndarray) -> bytes:
    """What a hand-written client that forgets the spacing sends (origin and direction given)."""
    head = json.dumps({"dtype": volume.dtype.str, "shape": list(volume.shape), "origin": [0, 0, 0], "direction": [1, 0, 0, 0, 1, 0, 0, 0, 1]}).encode()
    return wire.VOLUME_MAGIC + struct.pack(">I", len(head)) + head + zlib.compress(volume.tobytes())


def _post(server, body: bytes):
    request = urllib.request.Request(server.url + "/sessions", data=body, method="POST",
                                     headers={wire.API_KEY_HEADER: API_KEY, "Content-Type": "application/octet-stream"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_server_refuses_an_upload_without_spacing(main_server, mr):
    image, volume, _ = mr
    sessions = main_server.client().status()["sessions"]
    status, body = _post(main_server, _body_without_spacing(volume[:4]))
    assert status == 400, body
    detail = body["detail"]
    assert len(detail.splitlines()) == 1 and '"spacing"' in detail and "mm" in detail and "send the image's voxel spacing" in detail
    assert main_server.client().status()["sessions"] == sessions  # no session was made
    # the same volume with its spacing is accepted, and the server keeps that spacing
    status, body = _post(main_server, wire.encode_volume(volume[:4], image.GetSpacing()))
    assert status == 201
    main_server.client().close(body["session"])


def test_client_refuses_to_send_without_spacing(main_server, mr):
    _, volume, _ = mr
    with pytest.raises(InputError, match=r"no voxel spacing.*pass spacing=\(i, j, k\) in mm"):
        main_server.client().upload(volume[:4])
    with pytest.raises(wire.WireError, match="no voxel spacing"):
        wire.encode_volume(volume[:4])
