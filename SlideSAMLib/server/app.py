"""The HTTP API of `slidesam serve` (FastAPI): sessions, prompts, streamed progress, cancel.

Endpoints (the server also describes itself at /openapi.json and /docs):
  GET    /version                      server + model; the client checks the major version
  GET    /status                       sessions, cache use, model queue
  POST   /sessions                     body = wire.encode_volume(...) -> {"session": id, ...}
  GET    /sessions/{id}                shape, geometry, cached bytes, expiry
  DELETE /sessions/{id}                close it and free its embeddings
  POST   /sessions/{id}/segment        JSON prompt -> NDJSON stream (job, progress, slice, wait..., result | error)
  POST   /sessions/{id}/restart        JSON corrected slice -> NDJSON stream, as segment
  POST   /sessions/{id}/refine         JSON slice mask + clicks on it -> NDJSON stream, as segment (no "slice" lines)
  POST   /sessions/{id}/cancel         {"job": id} or {} (all running jobs of the session)
"""
import asyncio
import hmac
import json
import logging
import threading
from typing import Callable, Optional

from fastapi import FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import APIKeyHeader
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers

from .._version import __version__
from ..checkpoint import SlideSAMModel
from ..contract import CancelRequest, RefineRequest, RestartRequest, Result, SegmentRequest, largest_slice_pixels
from ..errors import SlideSAMError
from ..wire import API_KEY_HEADER, CLIENT_VERSION_HEADER, TooLarge, WireError, decode_volume, encode_mask2d, version_major
from .scheduler import FairLock, shared_model
from .sessions import SessionEntry, SessionStore, StoreError

log = logging.getLogger("slidesam.server")

API_LEVEL = 1
HEARTBEAT_S = 0.5  # a "wait" line this often while a job makes no progress (lets clients cancel and notice a dead server)
EARLY_ERROR_S = 0.5  # a prompt the engine rejects at once is answered with a 4xx status instead of a stream
DRAIN_FACTOR = 4  # an oversize upload is read (and discarded) up to this many times the limit, so the 413 reaches the client


# -- request bodies: SlideSAMLib.contract's dataclasses (FastAPI validates JSON into them) --------------


# -- security and version check, before any route ------------------------------------
class GuardMiddleware:
    """Pure ASGI (streams pass untouched): API key on every request, then the client's major version."""

    def __init__(self, app, api_key: Optional[str]):
        self.app = app
        self.api_key = api_key.encode() if api_key else None
        self.major = version_major(__version__)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        if self.api_key is not None:
            given = headers.get(API_KEY_HEADER, "")
            auth = headers.get("authorization", "")
            if not given and auth.lower().startswith("bearer "):
                given = auth[7:].strip()
            if not hmac.compare_digest(given.encode(), self.api_key):
                reason = "wrong API key" if given else "this server needs an API key"
                response = JSONResponse(
                    {"detail": f"{reason}: send it as the {API_KEY_HEADER} header (client api_key=..., slidesam segment --api-key, the Slicer module's API key field)"},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
                return await response(scope, receive, send)
        client_version = headers.get(CLIENT_VERSION_HEADER)
        if client_version is not None and version_major(client_version) != self.major:
            response = JSONResponse(
                {
                    "detail": f"version mismatch: client SlideSAM {client_version}, server SlideSAM {__version__}: "
                    f"install the same major version on both sides (pip install 'slidesam=={self.major}.*')",
                    "server_version": __version__,
                },
                status_code=409,
            )
            return await response(scope, receive, send)
        return await self.app(scope, receive, send)


def _one_line(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return (text or type(exc).__name__)[:300]


def _validation_reason(exc: RequestValidationError) -> str:
    errors = exc.errors()
    if not errors:
        return "malformed request"
    first = errors[0]
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return f"malformed request: {where}: {first.get('msg', 'invalid')}{more}"


# -- the app -------------------------------------------------------------------------------
def create_app(
    model: SlideSAMModel,
    api_key: Optional[str] = None,
    session_ttl_s: float = 3600.0,
    cache_bytes: int = 2 << 30,
    max_sessions: int = 32,
    max_upload_bytes: int = 1 << 30,
) -> FastAPI:
    """The server's ASGI app for one loaded model.  Run it with uvicorn (see server/cli.py)."""
    lock = FairLock()
    store = SessionStore(shared_model(model, lock), ttl_s=session_ttl_s, cache_bytes=cache_bytes, max_sessions=max_sessions)

    async def lifespan(app):
        store.start_reaper()
        yield
        store.shutdown()

    app = FastAPI(
        title="SlideSAM server",
        version=__version__,
        description=(
            "Three-slice SAM propagation as a service. Upload a volume once, then send prompts; masks come back per slice "
            f"as an NDJSON stream. When the server has an API key, send it in the {API_KEY_HEADER} header on every request."
        ),
        lifespan=lifespan,
    )
    app.add_middleware(GuardMiddleware, api_key=api_key)
    app.state.store, app.state.model_lock = store, lock
    # Documents the key in the OpenAPI description; GuardMiddleware does the checking.
    key_doc = [Security(APIKeyHeader(name=API_KEY_HEADER, auto_error=False))] if api_key else []

    @app.exception_handler(RequestValidationError)
    async def on_validation(request, exc):
        return JSONResponse({"detail": _validation_reason(exc)}, status_code=422)

    @app.exception_handler(StoreError)
    async def on_store(request, exc):
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(WireError)
    async def on_wire(request, exc):
        return JSONResponse({"detail": str(exc)}, status_code=413 if isinstance(exc, TooLarge) else 400)

    @app.exception_handler(SlideSAMError)
    async def on_engine(request, exc):
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.get("/version", dependencies=key_doc)
    def version():
        return {
            "server": "slidesam",
            "version": __version__,
            "api": API_LEVEL,
            "model": model.source,
            "model_kind": model.kind,
            "supports_points": model.supports_points,
            "device": str(model.device),
            "max_upload_bytes": max_upload_bytes,
        }

    @app.get("/status", dependencies=key_doc)
    def status():
        return {**store.stats(), "model_queue": lock.waiting, "model_calls": lock.grants}

    @app.post("/sessions", status_code=201, dependencies=key_doc)
    async def upload(request: Request):
        """Body: `SlideSAMLib.wire.encode_volume(volume_kji, spacing, origin, direction, modality)` bytes."""
        too_large = TooLarge(f"the upload is over the server's limit of {max_upload_bytes / 1e6:.1f} MB: crop the volume or start the server with a larger --max-upload-mb")
        declared = request.headers.get("content-length", "")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_upload_bytes:
                chunks = []  # keep reading only to let the client finish sending, then answer 413
                if size > DRAIN_FACTOR * max_upload_bytes:
                    break
            else:
                chunks.append(chunk)
        if size > max_upload_bytes or (declared.isdigit() and int(declared) > max_upload_bytes):
            raise too_large
        volume, geometry = await run_in_threadpool(decode_volume, b"".join(chunks), max_upload_bytes)
        entry = await run_in_threadpool(store.create, volume, {k: geometry[k] for k in ("spacing", "origin", "direction")}, geometry["modality"])
        return store.describe(entry)

    @app.get("/sessions/{session_id}", dependencies=key_doc)
    def describe(session_id: str):
        return store.describe(store.get(session_id))

    @app.delete("/sessions/{session_id}", dependencies=key_doc)
    def close(session_id: str):
        store.close(session_id)
        return {"closed": session_id}

    @app.post("/sessions/{session_id}/cancel", dependencies=key_doc)
    def cancel(session_id: str, body: CancelRequest = CancelRequest()):
        return {"cancelled": store.cancel(store.get(session_id), body.job)}

    @app.post("/sessions/{session_id}/segment", dependencies=key_doc)
    async def segment(session_id: str, body: SegmentRequest):
        entry = store.get(session_id)

        def work(progress, cancelled, slice_done):
            return entry.session.segment(progress=progress, cancel=cancelled, slice_done=slice_done, **body.session_kwargs())

        return await _run_job(store, entry, work, model.source)

    @app.post("/sessions/{session_id}/restart", dependencies=key_doc)
    async def restart(session_id: str, body: RestartRequest):
        entry = store.get(session_id)
        args, kwargs = body.session_args(largest_slice_pixels(entry.session.volume.shape))

        def work(progress, cancelled, slice_done):
            return entry.session.restart(*args, progress=progress, cancel=cancelled, slice_done=slice_done, **kwargs)

        return await _run_job(store, entry, work, model.source)

    @app.post("/sessions/{session_id}/refine", dependencies=key_doc)
    async def refine(session_id: str, body: RefineRequest):
        entry = store.get(session_id)

        def work(progress, cancelled, slice_done):
            return body.run_on(entry.session, progress, cancelled, model.source, slice_done)

        return await _run_job(store, entry, work, model.source)

    return app


def _result_json(result, model_source: str) -> dict:
    return Result.of(result, model_source).to_json()


def _line(event: dict) -> bytes:
    return (json.dumps(event, default=float) + "\n").encode()


async def _run_job(store: SessionStore, entry: SessionEntry, work: Callable, model_source: str):
    """Run `work(progress, cancelled, slice_done)` in a thread; answer 4xx if it fails at once, else stream its events."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()
    job = store.start_job(entry)

    def post(event):
        try:
            loop.call_soon_threadsafe(events.put_nowait, event)
        except RuntimeError:
            log.info("job %s finished after the server stopped serving it", job.id)  # the event loop is closed

    def progress(fraction: float, message: str) -> None:
        post({"type": "progress", "fraction": round(float(fraction), 4), "message": message})

    def slice_done(index: int, mask) -> None:  # each slice as it is accepted: clients show the run as it goes
        post({"type": "slice", "index": int(index), "mask": encode_mask2d(mask)})

    def runner():
        try:
            outcome = _result_json(work(progress, job.cancel.is_set, slice_done), model_source)
        except SlideSAMError as exc:
            outcome = {"type": "error", "status": 422, "message": _one_line(exc)}
        except Exception as exc:  # a model failure (e.g. GPU out of memory) must end the stream with a reason, not hang it
            log.exception("job %s on session %s failed", job.id, entry.id)
            outcome = {"type": "error", "status": 500, "message": f"the server failed while propagating ({type(exc).__name__}: {_one_line(exc)})"}
        finally:
            store.end_job(entry, job)  # before the client hears of the outcome: it may close or reuse the session at once
        post(outcome)
        post(None)

    threading.Thread(target=runner, name=f"slidesam-job-{job.id}", daemon=True).start()
    try:
        first = await asyncio.wait_for(events.get(), EARLY_ERROR_S)
    except asyncio.TimeoutError:
        first = {"type": "wait", "queued": True}
    if first.get("type") == "error":
        return JSONResponse({"detail": first["message"]}, status_code=first["status"])

    async def stream():
        done = False
        try:
            yield _line({"type": "job", "job": job.id, "session": entry.id})
            yield _line(first)
            if first.get("type") == "result":
                done = True
                return
            while True:
                try:
                    event = await asyncio.wait_for(events.get(), HEARTBEAT_S)
                except asyncio.TimeoutError:
                    yield _line({"type": "wait"})
                    continue
                if event is None:
                    done = True
                    return
                yield _line(event)
        finally:
            if not done:
                job.cancel.set()  # the client went away: stop at the next window

    return StreamingResponse(stream(), media_type="application/x-ndjson", headers={"X-SlideSAM-Job": job.id})
