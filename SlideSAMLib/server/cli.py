"""`slidesam serve`: run the model behind the HTTP API (FastAPI on uvicorn)."""
import ipaddress
import logging
import os
import sys
from pathlib import Path

from ..errors import InputError
from ..onnx_encoder import ENCODER_BACKENDS, ENCODER_HELP

DEFAULT_PORT = 8765


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve the model over HTTP for Slicer / CLI clients (no torch needed on their side)",
        description="Serve SlideSAM over HTTP: sessions per uploaded volume, prompts, streamed progress. "
        "API description at http://HOST:PORT/docs and /openapi.json.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT})")
    key = p.add_mutually_exclusive_group()
    key.add_argument("--api-key", help="require this key on every request (prefer --api-key-file or SLIDESAM_API_KEY: a command line is visible to other users)")
    key.add_argument("--api-key-file", help="read the key from this file (first line)")
    p.add_argument("--allow-remote-without-key", action="store_true", help="allow binding beyond loopback without an API key (only on a trusted network)")
    p.add_argument("--checkpoint", help="model file or adapter folder (default: the embedded LiteMedSAM model)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N, mps (default: best available)")
    p.add_argument("--encoder", choices=ENCODER_BACKENDS, default=None, help=ENCODER_HELP)
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--session-ttl", type=float, default=3600.0, metavar="S", help="close sessions idle for S seconds (default 3600)")
    p.add_argument("--cache-mb", type=float, default=2048.0, metavar="MB", help="memory for cached embeddings across all sessions (default 2048)")
    p.add_argument("--max-sessions", type=int, default=32, help="open sessions at most (default 32)")
    p.add_argument("--max-upload-mb", type=float, default=1024.0, metavar="MB", help="largest volume upload, compressed and uncompressed (default 1024)")
    p.add_argument("--parent-pid", type=int, default=None, metavar="PID",
                   help="stop when process PID ends (the local engine passes Slicer's PID, so a crashed Slicer leaves no engine behind)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=run)


def read_api_key(args) -> str:
    """The key from --api-key, --api-key-file or $SLIDESAM_API_KEY (in that order); '' when none."""
    if getattr(args, "api_key", None):
        return args.api_key.strip()
    path = getattr(args, "api_key_file", None)
    if path:
        return read_key_file(path)
    return os.environ.get("SLIDESAM_API_KEY", "").strip()


def read_key_file(path: str) -> str:
    """The key on the first line of `path` (serve's and web's --api-key-file)."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise InputError(f"cannot read the API key file {path} ({exc.strerror}): give a readable file holding the key") from exc
    key = lines[0].strip() if lines else ""
    if not key:
        raise InputError(f"the API key file {path} is empty: put the key on its first line")
    return key


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


def check_options(args, api_key: str) -> None:
    if not 0 < args.port < 65536:
        raise InputError(f"port {args.port} is not 1..65535")
    if not is_loopback(args.host) and not api_key and not args.allow_remote_without_key:
        raise InputError(
            f"binding to {args.host} exposes the model beyond this machine without an API key: "
            "add --api-key-file FILE (or --api-key), or --allow-remote-without-key on a trusted network"
        )
    for name in ("session_ttl", "cache_mb", "max_upload_mb"):
        if getattr(args, name) <= 0:
            raise InputError(f"--{name.replace('_', '-')} must be positive")
    if args.threads is not None and args.threads < 1:
        raise InputError("--threads must be at least 1")
    if args.parent_pid is not None:
        from .parent import process_alive

        if args.parent_pid < 1 or not process_alive(args.parent_pid):
            raise InputError(f"--parent-pid {args.parent_pid} is not a running process: give the PID of the process that should own the server")
    if args.max_sessions < 1:
        raise InputError("--max-sessions must be at least 1")
    if len(api_key) < 8 and api_key:
        raise InputError("the API key is shorter than 8 characters: use a long random key (e.g. python -c 'import secrets; print(secrets.token_urlsafe(24))')")


def run(args) -> int:
    api_key = read_api_key(args)
    check_options(args, api_key)
    try:
        import uvicorn
    except ImportError as exc:
        raise InputError("slidesam serve needs FastAPI and uvicorn: pip install 'slidesam[server]'") from exc
    from .. import load_model
    from .app import create_app

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    model = load_model(args.checkpoint, device=args.device, encoder=args.encoder)
    app = create_app(
        model,
        api_key=api_key or None,
        session_ttl_s=args.session_ttl,
        cache_bytes=int(args.cache_mb * (1 << 20)),
        max_sessions=args.max_sessions,
        max_upload_bytes=int(args.max_upload_mb * (1 << 20)),
    )
    where = f"http://{'[' + args.host + ']' if ':' in args.host else args.host}:{args.port}"
    print(f"slidesam serve: {model.source} on {model.device}, listening on {where} ({'API key required' if api_key else 'no API key'}); API at {where}/docs", file=sys.stderr, flush=True)
    logging.getLogger("slidesam.server").setLevel(args.log_level.upper())
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=3))
    if args.parent_pid is not None:
        from .parent import watch_parent

        watch_parent(args.parent_pid, on_gone=lambda: setattr(server, "should_exit", True))  # uvicorn's graceful shutdown
    server.run()
    return 0
