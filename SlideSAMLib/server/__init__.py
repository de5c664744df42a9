"""`slidesam serve`: the engine behind an HTTP API, for Slicer and CLI clients without torch.

`create_app(model, ...)` builds the FastAPI app; `slidesam serve` (server/cli.py) runs it on uvicorn.
The client is `SlideSAMLib.client.SlideSAMClient`; the wire format is `SlideSAMLib.wire`.
`create_app` is imported on first use: importing this package (as `slidesam --help` does, for the
`serve` options) must not import FastAPI or torch.
"""

__all__ = ["create_app"]


def __getattr__(name):
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module 'SlideSAMLib.server' has no attribute '{name}'")
