"""The receiver service: an ASGI app that decrypts bodies, stores payloads, follows rotation.

Needs the ``server`` extra (``pip install 'request_crypto[server]'``) for `create_app`;
the sinks and settings (`Sink`, `ReceivedPayload`, `open_sink`, `parse_size`, the sealed
`ArchiveSink`) import without it.

    from request_crypto.receiver import create_app
    app = create_app("private_jwks.json", sink="sqlite:///payloads.db")
    # uvicorn.run(app, host="127.0.0.1", port=8787)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .archive import ArchiveSink
from .config import ReceiverConfig, format_size, parse_size
from .sinks import (
    DEFAULT_SINK,
    JSONLSink,
    ReceivedPayload,
    Sink,
    SinkURLError,
    SQLiteSink,
    StdoutSink,
    describe_sink,
    open_sink,
    parse_sink_url,
)

if TYPE_CHECKING:
    from .app import KeySetSource, app_from_env, create_app

__all__ = [
    "DEFAULT_SINK",
    "ArchiveSink",
    "JSONLSink",
    "KeySetSource",
    "ReceivedPayload",
    "ReceiverConfig",
    "SQLiteSink",
    "Sink",
    "SinkURLError",
    "StdoutSink",
    "app_from_env",
    "create_app",
    "describe_sink",
    "format_size",
    "open_sink",
    "parse_sink_url",
    "parse_size",
]

_SERVER_NAMES = {"create_app", "app_from_env", "KeySetSource"}


def __getattr__(name: str) -> Any:
    # The ASGI app needs starlette (the `server` extra); import it only when asked for.
    if name in _SERVER_NAMES:
        from . import app  # noqa: PLC0415

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
