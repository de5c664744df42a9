"""`slidesam web`: serve the browser annotator (trame-slicer) with the engine in its own process or on a server.

Imports nothing heavy until run: `slidesam --help` works without the web extra installed.
"""
import atexit
import os
import sys
import tempfile
from pathlib import Path

from ..errors import InputError
from ..server.cli import is_loopback, read_key_file  # light: no FastAPI, no torch

DEFAULT_PORT = 8080


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "web",
        help="annotate in the browser on real Slicer views (trame-slicer); needs its own environment from a source checkout (README, Web annotator)",
        description="Serve SlideSAM's web annotator: axial / sagittal / coronal / 3D Slicer views streamed to the browser, "
        "box and point prompts placed with the mouse, propagation in a separate engine process (or on --server).",
    )
    p.add_argument("image", nargs="?", help="volume to open at start (NIfTI, NRRD, ...); or upload one from the page")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port of the page (default {DEFAULT_PORT}; 0: any free port)")
    key = p.add_mutually_exclusive_group()
    key.add_argument("--api-key", help="key the page must present (open http://HOST:PORT/?secret=KEY); needed beyond loopback")
    key.add_argument("--api-key-file", help="read the page's key from this file (first line)")
    p.add_argument("--server", metavar="URL", help="use a running 'slidesam serve' (e.g. http://gpu-box:8765) instead of a local engine process")
    p.add_argument("--server-api-key-file", metavar="F", help="the --server's API key (first line of F; default $SLIDESAM_SERVER_API_KEY)")
    p.add_argument("--engine-python", metavar="PY", help="Python with SlideSAM's engine (torch) for the local engine process "
                   "(default $SLIDESAM_ENGINE_PYTHON, else this Python)")
    p.add_argument("--checkpoint", help="model for the local engine process (default: the embedded LiteMedSAM)")
    p.add_argument("--device", default=None, help="device of the local engine process: cpu, cuda, mps (default: best available)")
    p.set_defaults(func=run)


def _page_key(args) -> str:
    key = (args.api_key or "").strip() or (read_key_file(args.api_key_file) if args.api_key_file else "")
    if not is_loopback(args.host) and not key:
        raise InputError(f"binding to {args.host} exposes the annotator beyond this machine without a key: add --api-key-file FILE (or --api-key)")
    if key and len(key) < 8:
        raise InputError("the page's key is shorter than 8 characters: use a long random key (python -c 'import secrets; print(secrets.token_urlsafe(24))')")
    return key


def _server_key(args) -> str:
    if args.server_api_key_file:
        return read_key_file(args.server_api_key_file)
    return os.environ.get("SLIDESAM_SERVER_API_KEY", "").strip()


def connect_engine(args):
    """(SlideSAMLogic's model source, one-line description, stop function) of the engine the page uses.

    The engine is reached once here, so a wrong URL, key or engine Python fails before the page is served."""
    from ..client import SlideSAMClient

    if args.server:
        if args.checkpoint or args.engine_python:
            raise InputError("--server excludes --checkpoint / --engine-python: the server's own model is used")
        key = _server_key(args) or None
        info = SlideSAMClient(args.server, api_key=key).version()
        return {"server": args.server, "apiKey": key}, f"engine: server {args.server} ({info.get('model')} on {info.get('device')})", lambda: None
    from ..engine_process import LocalEngine

    python = args.engine_python or os.environ.get("SLIDESAM_ENGINE_PYTHON") or None
    engine = LocalEngine(python=python, checkpoint=args.checkpoint, device=args.device)
    info = engine.client().version()  # starts the engine process now (model load), not on the first Propagate
    return {"engine": engine}, f"engine: local process {engine.pid} ({info.get('model')} on {info.get('device')})", engine.stop


def run(args) -> int:
    if not 0 <= args.port < 65536:
        raise InputError(f"port {args.port} is not 0..65535")
    if args.image is not None and not Path(args.image).exists():
        raise InputError(f"image not found: {args.image}")
    key = _page_key(args)
    try:
        import trame_slicer  # noqa: F401
    except ImportError as exc:
        raise InputError(f"slidesam web needs trame-slicer ({exc}): install the 'web' extra's packages in its own environment from a source checkout (README, Web annotator)") from exc
    source, label, stop = connect_engine(args)
    atexit.register(stop)
    from .app import create_app

    server, _ = create_app(source, label, image=args.image)
    sys.argv = sys.argv[:1]  # trame parses sys.argv itself: give it only what is set here
    if key:
        handle, key_file = tempfile.mkstemp(prefix="slidesam-web-key-")
        os.write(handle, key.encode())
        os.close(handle)
        atexit.register(os.unlink, key_file)
        sys.argv += ["--authKeyFile", key_file]
    print(f"slidesam web: http://{args.host}:{args.port}/ ({label}; {'key required: add ?secret=KEY' if key else 'no key'})", file=sys.stderr, flush=True)
    try:
        server.start(host=args.host, port=args.port, open_browser=False, show_connection_info=False)
    finally:
        stop()
    return 0
