"""`slidesam serve`: the engine behind an HTTP API, for Slicer and CLI clients without torch.

`create_app(model, ...)` builds the FastAPI app; `slidesam serve` (server/cli.py) runs it on uvicorn.
The client is `SlideSAMLib.client.SlideSAMClient`; the wire format is `SlideSAMLib.wire`.
"""
from .app import create_app

__all__ = ["create_app"]
