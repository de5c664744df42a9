"""Security, limits, version handshake and malformed requests against a real `slidesam serve` process."""
import json
import urllib.error
import urllib.request

import numpy as np
import pytest

from SlideSAMLib import wire
from SlideSAMLib.client import AuthError, ServerError, SessionGone, SlideSAMClient, VersionMismatch
from SlideSAMLib.errors import InputError
from SlideSAMLib.server.cli import check_options, is_loopback

from server_testing import API_KEY


def raw(server, method, path, body=None, headers=None, key=API_KEY):
    """(status, parsed JSON body) of one plain HTTP request, whatever the status."""
    headers = dict(headers or {})
    if key:
        headers[wire.API_KEY_HEADER] = key
    request = urllib.request.Request(server.url + path, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def test_version_and_openapi(main_server):
    info = main_server.client().version()
    assert info["server"] == "slidesam" and info["version"] and "LiteMedSAM" in info["model"]
    status, spec = raw(main_server, "GET", "/openapi.json")
    assert status == 200 and "/sessions/{session_id}/segment" in spec["paths"]
    assert wire.API_KEY_HEADER in json.dumps(spec["components"]["securitySchemes"])


def test_api_key_is_required_on_every_request(main_server):
    for key in (None, "wrong-key-0123456789", API_KEY[:-1]):
        with pytest.raises(AuthError, match="API key"):
            SlideSAMClient(main_server.url, api_key=key).version()
    for path in ("/version", "/status", "/openapi.json", "/sessions/anything"):
        status, body = raw(main_server, "GET", path, key="wrong-key-0123456789")
        assert status == 401 and "API key" in body["detail"]
    status, _ = raw(main_server, "GET", "/version", key=None, headers={"Authorization": f"Bearer {API_KEY}"})
    assert status == 200


def test_major_version_mismatch_is_refused_with_a_reason(main_server, monkeypatch):
    status, body = raw(main_server, "GET", "/version", headers={wire.CLIENT_VERSION_HEADER: "99.0.0"})
    assert status == 409 and "99.0.0" in body["detail"] and "same major version" in body["detail"]
    import SlideSAMLib.client as client_module

    monkeypatch.setattr(client_module, "__version__", "99.1.0")
    with pytest.raises(VersionMismatch, match="version mismatch"):
        main_server.client().version()


def test_oversize_upload_gets_413(main_server):
    noise = np.random.default_rng(0).integers(-1000, 1000, size=(20, 128, 128), dtype=np.int16)  # 0.66 MB raw, incompressible-ish
    big = np.concatenate([noise, noise[::-1]])  # 1.3 MB > the 1 MiB limit
    status, body = raw(main_server, "POST", "/sessions", body=wire.encode_volume(big, (1.0, 1.0, 1.0)), headers={"Content-Type": "application/octet-stream"})
    assert status == 413 and "--max-upload-mb" in body["detail"]
    with pytest.raises(InputError, match="limit"):
        main_server.client().upload(big, (1.0, 1.0, 1.0))
    # Small body, big array (highly compressible): refused on the uncompressed size.
    zeros = np.zeros((64, 128, 128), np.int16)
    status, body = raw(main_server, "POST", "/sessions", body=wire.encode_volume(zeros, (1.0, 1.0, 1.0)))
    assert status == 413 and "uncompressed" in body["detail"]


def test_malformed_requests_get_4xx_with_a_reason(main_server, mr):
    image, volume, _ = mr
    client = main_server.client()
    session = client.upload(volume[:4], image.GetSpacing(), image.GetOrigin(), image.GetDirection())
    cases = [
        ("POST", "/sessions", b"\x00garbage\xff" * 100, 400, "magic"),
        ("POST", "/sessions", wire.encode_volume(volume[:4], image.GetSpacing())[:-50], 400, "truncated"),
        ("POST", "/sessions", b"", 400, "magic"),
        ("POST", f"/sessions/{session}/segment", b"{not json", 422, "malformed request"),
        ("POST", f"/sessions/{session}/segment", b'{"box": "abc"}', 422, "box"),
        ("POST", f"/sessions/{session}/segment", b'{"box": [[1,2,3],[4,5,6]], "colour": 1}', 422, "colour"),
        ("POST", f"/sessions/{session}/segment", b'{"direction": "sideways", "box": [[1,2,1],[9,9,1]]}', 422, "direction"),
        ("POST", f"/sessions/{session}/segment", b"[]", 422, "malformed"),
        ("POST", f"/sessions/{session}/segment", b"{}", 422, "empty prompt"),
        ("POST", f"/sessions/{session}/segment", b'{"box": [[1,2,1],[900,9,1]]}', 422, "outside the volume"),
        ("POST", f"/sessions/{session}/segment", b'{"box": [[1,2,1],[NaN,9,1]]}', 422, "not an (i, j, k)"),
        ("POST", f"/sessions/{session}/segment", b'{"box": [[1,2,1],[9,9,3]]}', 422, "one slice"),
        ("POST", f"/sessions/{session}/segment", b'{"box": [[1,2,1],[9,9,1]], "slice_range": [0, 99]}', 422, "slice range"),
        ("POST", f"/sessions/{session}/restart", b'{"mask": {"shape": [2, 2], "bits": "!!"}, "slice_index": 1}', 400, "base64"),
        ("POST", f"/sessions/{session}/restart", json.dumps({"mask": wire.encode_mask2d(np.ones((5, 5), bool)), "slice_index": 1}).encode(), 422, "shape"),
        ("POST", f"/sessions/{session}/restart", json.dumps({"mask": wire.encode_mask2d(np.zeros(volume.shape[1:], bool)), "slice_index": 1}).encode(), 422, "empty"),
        ("POST", f"/sessions/{session}/cancel", b'{"job": 5}', 422, "job"),
        ("GET", "/sessions/no-such-session", None, 404, "no session"),
        ("PUT", "/version", b"", 405, ""),
    ]
    for method, path, body, expected, words in cases:
        status, answer = raw(main_server, method, path, body=body, headers={"Content-Type": "application/json"})
        assert status == expected, (path, body[:60] if body else body, answer)
        assert words.lower() in answer["detail"].lower(), (path, answer)
    # The same mistakes through the client: one-line errors of the engine's kinds.
    with pytest.raises(InputError, match="outside the volume"):
        client.segment(session, box=((1, 2, 1), (900, 9, 1)))
    with pytest.raises(SessionGone, match="no session"):
        client.segment("no-such-session", box=((1, 2, 1), (9, 9, 1)))
    client.close(session)
    with pytest.raises(SessionGone):
        client.session_info(session)
    assert client.version()["server"] == "slidesam"  # still serving


def test_connection_refused_is_one_clear_line():
    from server_testing import free_port

    with pytest.raises(ServerError, match="connection refused.*slidesam serve"):
        SlideSAMClient(f"http://127.0.0.1:{free_port()}").version()
    with pytest.raises(InputError, match="http"):
        SlideSAMClient("ftp://example.org")


def test_remote_bind_needs_a_key_or_the_flag():
    class Args:
        host, port, session_ttl, cache_mb, max_upload_mb, max_sessions, threads = "0.0.0.0", 8765, 60.0, 10.0, 10.0, 4, None
        allow_remote_without_key, parent_pid = False, None

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and not is_loopback("0.0.0.0")
    with pytest.raises(InputError, match="--allow-remote-without-key"):
        check_options(Args, "")
    check_options(Args, "a-long-enough-key")
    Args.allow_remote_without_key = True
    check_options(Args, "")
    with pytest.raises(InputError, match="shorter than 8"):
        check_options(Args, "short")
