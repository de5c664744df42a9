"""A plain-Python client for `slidesam serve` (standard library + numpy; no torch, no requests).

    from SlideSAMLib.client import SlideSAMClient
    client = SlideSAMClient("http://gpu-box:8765", api_key="...")
    client.version()                                   # checks the server's major version
    sid = client.upload(volume_kji, spacing, origin, direction)
    result = client.segment(sid, box=((40, 30, 60), (90, 80, 60)), progress=print)
    mask = result.volume_mask()                        # as the engine's PropagationResult
    client.close(sid)

Every failure is a one-line `SlideSAMError`: `ServerError` (unreachable, died mid-request,
internal failure) and its kinds `AuthError` (401), `SessionGone` (404/410), `VersionMismatch`
(409); a prompt or volume the server refuses raises `InputError`, as the local engine does.
"""
import http.client
import json
import logging
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from typing import Callable, Iterator, List, Optional

import numpy as np

from ._version import __version__
from .errors import InputError, SlideSAMError
from .contract import ROUTES, CancelFn, ContractSession, ProgressFn, RefineRequest, Request, RestartRequest, Result, SegmentRequest, SliceDoneFn, SliceRecord  # noqa: F401  (SliceRecord: re-exported)
from .wire import API_KEY_HEADER, CLIENT_VERSION_HEADER, decode_mask2d, encode_volume, version_major

log = logging.getLogger("slidesam.client")
DEFAULT_TIMEOUT_S = 120.0  # per socket operation; a running job sends a line at least every 0.5 s
MAX_SLICE_PIXELS = 1 << 26  # a streamed slice mask larger than 8192 x 8192 is refused (the result's masks have their own shape check)


class ServerError(SlideSAMError):
    """The server cannot be reached, stopped answering, or failed."""


class AuthError(ServerError):
    """The server wants an API key, or another one."""


class SessionGone(ServerError):
    """The session expired or is unknown to the server (closed, or the server restarted)."""


class VersionMismatch(ServerError):
    """Client and server differ in their major version."""


RemoteResult = Result  # the name before contract.py: one result type for local and remote runs


class SlideSAMClient:
    def __init__(self, url: str, api_key: Optional[str] = None, timeout: float = DEFAULT_TIMEOUT_S):
        parsed = urllib.parse.urlparse(url.strip())
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise InputError(f"server URL '{url}' is not an http:// or https:// address: give e.g. http://127.0.0.1:8765")
        self.url = url.strip().rstrip("/")
        self.api_key = api_key or None
        self.timeout = float(timeout)

    # -- plumbing -------------------------------------------------------------------------
    def _headers(self, content_type: Optional[str] = None) -> dict:
        headers = {CLIENT_VERSION_HEADER: __version__, "Accept": "application/json, application/x-ndjson"}
        if self.api_key:
            headers[API_KEY_HEADER] = self.api_key
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    def _open(self, method: str, path: str, body: Optional[bytes] = None, content_type: Optional[str] = None):
        request = urllib.request.Request(self.url + path, data=body, method=method, headers=self._headers(content_type))
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            raise self._http_error(exc.code, self._detail(exc)) from None
        except urllib.error.URLError as exc:
            raise self._connection_error(exc.reason) from None
        except (http.client.HTTPException, OSError) as exc:
            raise self._connection_error(exc) from None

    @staticmethod
    def _detail(exc: urllib.error.HTTPError) -> str:
        try:
            payload = json.loads(exc.read() or b"{}")
        except (ValueError, OSError, http.client.HTTPException):
            return exc.reason or f"HTTP {exc.code}"
        detail = payload.get("detail") if isinstance(payload, dict) else None
        if isinstance(detail, list):  # FastAPI's own validation format, should our handler be bypassed
            detail = "; ".join(str(d.get("msg", d)) for d in detail)
        return " ".join(str(detail or exc.reason or f"HTTP {exc.code}").split())

    def _http_error(self, status: int, detail: str) -> SlideSAMError:
        if status == 401:
            return AuthError(f"the server at {self.url} refused the API key ({detail})")
        if status in (404, 410) and "session" in detail:
            return SessionGone(detail)
        if status == 409:
            return VersionMismatch(detail)
        if status in (400, 413, 422):
            return InputError(detail)
        return ServerError(f"the server at {self.url} answered HTTP {status}: {detail}")

    def _connection_error(self, reason) -> ServerError:
        if isinstance(reason, ConnectionRefusedError):
            return ServerError(f"cannot reach the SlideSAM server at {self.url} (connection refused): start it with 'slidesam serve' or check the URL and port")
        if isinstance(reason, (socket.timeout, TimeoutError)):
            return ServerError(f"the SlideSAM server at {self.url} did not answer within {self.timeout:g} s: check that it is running and not overloaded")
        if isinstance(reason, (http.client.RemoteDisconnected, http.client.IncompleteRead, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
            return ServerError(f"the SlideSAM server at {self.url} closed the connection mid-request (it stopped or crashed): restart it and try again")
        if isinstance(reason, socket.gaierror):
            return ServerError(f"cannot resolve the server address in {self.url}: check the host name")
        return ServerError(f"cannot talk to the SlideSAM server at {self.url} ({type(reason).__name__}: {reason}): check the URL and that the server runs")

    def _json(self, method: str, path: str, payload=None) -> dict:
        body = json.dumps(payload).encode() if payload is not None else None
        with self._open(method, path, body, "application/json" if body is not None else None) as response:
            try:
                return json.loads(response.read())
            except (http.client.HTTPException, OSError) as exc:
                raise self._connection_error(exc) from None
            except ValueError:
                raise ServerError(f"the server at {self.url} answered {path} with something other than JSON: it may not be a SlideSAM server") from None

    def _events(self, response) -> Iterator[dict]:
        """The NDJSON lines of a job stream, as dicts; a broken stream raises ServerError."""
        try:
            for raw in response:
                if raw.strip():
                    yield json.loads(raw)
        except (http.client.HTTPException, OSError) as exc:
            raise self._connection_error(exc) from None
        except ValueError:
            raise ServerError(f"the server at {self.url} sent a malformed progress line: it may not be a SlideSAM server") from None

    def run(self, session_id: str, request: Request, progress: Optional[ProgressFn] = None, cancel: Optional[CancelFn] = None,
            slice_done: Optional[SliceDoneFn] = None) -> Result:
        """Run a SegmentRequest, RestartRequest or RefineRequest on the server's session; progress, cancel and slice_done as `Session.segment`."""
        path = ROUTES[type(request)]
        job, cancel_sent = "", False
        try:
            response = self._open("POST", f"/sessions/{session_id}/{path}", json.dumps(request.to_json()).encode(), "application/json")
        except ServerError as exc:
            if " HTTP 404: Not Found" in str(exc):  # FastAPI's answer to a route it lacks (a missing session says "no session ...")
                raise ServerError(f"the server at {self.url} does not know '{path}' requests (it runs an older SlideSAM): update the server, "
                                  f"pip install -U 'slidesam[server]' there") from None
            raise
        with response:
            if "json" in response.headers.get("Content-Type", "") and "ndjson" not in response.headers.get("Content-Type", ""):
                raise ServerError(f"the server at {self.url} answered a job with a plain JSON body: it may not be a SlideSAM server")
            for event in self._events(response):
                kind = event.get("type")
                if kind == "job":
                    job = event.get("job", "")
                elif kind == "progress" and progress is not None:
                    progress(float(event["fraction"]), str(event["message"]))
                elif kind == "slice" and slice_done is not None:
                    slice_done(int(event["index"]), decode_mask2d(event["mask"], MAX_SLICE_PIXELS))
                elif kind == "result":
                    return Result.from_json(event, job)
                elif kind == "error":
                    raise self._http_error(int(event.get("status", 500)), str(event.get("message", "")))
                if cancel is not None and not cancel_sent and job and cancel():
                    self.cancel(session_id, job)
                    cancel_sent = True  # keep reading: the server ends the job at the next window and sends what it has
        raise self._connection_error(http.client.IncompleteRead(b""))  # the stream ended before its result line

    # -- the API ----------------------------------------------------------------------------
    def version(self) -> dict:
        """The server's version and model; raises VersionMismatch when the major versions differ."""
        info = self._json("GET", "/version")
        if version_major(info.get("version", "")) != version_major(__version__):
            raise VersionMismatch(
                f"version mismatch: client SlideSAM {__version__}, server SlideSAM {info.get('version')}: install the same major version on both sides"
            )
        return info

    def status(self) -> dict:
        return self._json("GET", "/status")

    def upload(self, volume_zyx: np.ndarray, spacing=None, origin=None, direction=None, modality: str = "auto") -> str:
        """Send a numpy (k, j, i) volume and its geometry once; returns the session id for prompts."""
        try:
            body = encode_volume(volume_zyx, spacing, origin, direction, modality)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        with self._open("POST", "/sessions", body, "application/octet-stream") as response:
            return json.loads(response.read())["session"]

    def session_info(self, session_id: str) -> dict:
        return self._json("GET", f"/sessions/{session_id}")

    def segment(self, session_id: str, box=None, points=(), axis=None, direction="both", slice_range=None, progress=None, cancel=None) -> Result:
        """As `Session.segment` (voxel IJK prompts), run on the server."""
        return self.run(session_id, SegmentRequest.of(box, points, axis, direction, slice_range), progress, cancel)

    def restart(self, session_id: str, slice_mask, slice_index, axis=2, direction="up", slice_range=None, progress=None, cancel=None, largest_area=None) -> Result:
        """As `Session.restart`: propagate again from a corrected 2D mask, reusing the session's embeddings."""
        return self.run(session_id, RestartRequest.of(slice_mask, slice_index, axis, direction, slice_range, largest_area), progress, cancel)

    def refine(self, session_id: str, slice_index, points, slice_mask, axis=2, slice_range=None, largest_area=None, progress=None, cancel=None,
               current=None) -> Result:
        """As `Session.refine`: clicks correct a propagated slice, then it propagates both ways, reusing the session's embeddings;
        `result.span`: the slices the caller replaces."""
        return self.run(session_id, RefineRequest.of(slice_mask, slice_index, points, axis, slice_range, largest_area, current), progress, cancel)

    def cancel(self, session_id: str, job: Optional[str] = None) -> List[str]:
        """Stop the session's running job (or all of them) at its next window; returns the jobs told to stop."""
        return self._json("POST", f"/sessions/{session_id}/cancel", {"job": job})["cancelled"]

    def close(self, session_id: str) -> None:
        self._json("DELETE", f"/sessions/{session_id}")


class RemoteSession(ContractSession):
    """A volume held by the server, with the local `Session`'s `segment` / `restart` / `refine` calls (IJK voxel prompts).

    The Slicer module uses it for the panel's Model "SlideSAM server". The volume is uploaded on first use; when the
    server has forgotten the session (expired, or the server restarted) it is uploaded once more and the
    call repeated, and `progress` says so.
    """

    def __init__(self, client: SlideSAMClient, volume_zyx: np.ndarray, spacing=None, origin=None, direction=None, modality: str = "auto"):
        self.client = client
        self.volume = volume_zyx
        self._geometry = (spacing, origin, direction, modality)
        self.session_id: Optional[str] = None

    def _upload(self) -> str:
        spacing, origin, direction, modality = self._geometry
        self.session_id = self.client.upload(self.volume, spacing, origin, direction, modality=modality)
        return self.session_id

    def run(self, request: Request, progress: Optional[ProgressFn] = None, cancel: Optional[CancelFn] = None,
            slice_done: Optional[SliceDoneFn] = None) -> Result:
        """Run a contract request on the server (uploading the volume first, or again when the server forgot it)."""
        if self.session_id is None:
            if progress is not None:
                progress(0.0, f"uploading the volume to {self.client.url}")
            self._upload()
        try:
            return self.client.run(self.session_id, request, progress, cancel, slice_done)
        except SessionGone:
            if progress is not None:
                progress(0.0, "the server no longer holds this volume (session expired): uploading it again")
            return self.client.run(self._upload(), request, progress, cancel, slice_done)

    def close(self) -> None:
        """Free the server's copy now (it also expires on its own); a server that is gone is not an error here."""
        session_id, self.session_id = self.session_id, None
        if session_id is not None:
            try:
                self.client.close(session_id)
            except ServerError as exc:
                log.info("SlideSAM: could not close server session %s (%s)", session_id, exc)


def segment_via_server(args, image, box, points, axis, progress=None) -> Result:
    """`slidesam segment --server URL`: upload the image, propagate the prompt on the server, close the session."""
    from .imageio import array_of

    if getattr(args, "checkpoint", None):
        raise InputError("--checkpoint and --server exclude each other: the server's own model is used (start the server with --checkpoint)")
    api_key = getattr(args, "api_key", None) or os.environ.get("SLIDESAM_API_KEY") or None
    client = SlideSAMClient(args.server, api_key=api_key)
    client.version()
    session = RemoteSession(client, array_of(image), image.GetSpacing(), image.GetOrigin(), image.GetDirection(), modality=getattr(args, "modality", "auto"))
    try:
        return session.segment(box=box, points=points, axis=axis, direction=args.direction, slice_range=args.slice_range, progress=progress)
    finally:
        session.close()  # the result (or the error being raised) matters more than a session left to expire
