"""`ReceiverHttpToolsProtocol`: Uvicorn's httptools protocol with serve's slow-client deadlines.

The same deadlines and ``TCP_NODELAY`` as `request_crypto.receiver.protocol` (read its
docstring), on httptools' C parser, which costs less CPU per request than h11. httptools keeps
no limit on a request head, so this protocol does: more than `HEAD_LIMIT` bytes without the
head's end get ``431`` and the connection closed (h11 refuses such heads by itself).

Separate from `protocol` because it imports httptools, which is optional.
"""

from __future__ import annotations

from typing import Any, Literal

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .protocol import HEAD_LIMIT, Phase, SlowClientDeadlines

__all__ = ["ReceiverHttpToolsProtocol"]

_HEAD_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"connection: close\r\ncontent-length: 0\r\n\r\n"
)


class ReceiverHttpToolsProtocol(SlowClientDeadlines, HttpToolsProtocol):
    """`HttpToolsProtocol` plus a head deadline and size limit, a bounded drain, TCP_NODELAY."""

    def __init__(self, *args: Any, **arguments: Any) -> None:
        super().__init__(*args, **arguments)  # the deadlines' keywords, then Uvicorn's
        #: Where the parser is in the request it reads (it may be ahead of the app's cycle).
        self._reading: Literal["idle", "head", "body"] = "idle"
        self._head_bytes = 0

    def data_received(self, data: bytes) -> None:
        if self._reading != "body":
            self._head_bytes += len(data)  # may count a body's first bytes: still a bound
        super().data_received(data)
        if self._reading == "head" and self._head_bytes > HEAD_LIMIT:
            if not self.transport.is_closing():
                self.refuse_and_close(_HEAD_TOO_LARGE, "a request head over %d bytes", HEAD_LIMIT)
            return
        self.follow()

    def on_message_begin(self) -> None:
        """The parser saw a request's first byte: its head is arriving."""
        super().on_message_begin()
        self._reading = "head"

    def on_headers_complete(self) -> None:
        """The head is whole: a body (if any) follows."""
        self._reading = "body"
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        """The request is whole: the next bytes start a new head."""
        self._reading = "idle"
        self._head_bytes = 0
        super().on_message_complete()

    def waiting_for(self) -> Phase | None:
        if self._reading == "body":
            return "drain"
        if self._reading == "head":
            return "head"
        # Idle between requests is Uvicorn's keep-alive timer's; before the first, ours.
        return None if self.timeout_keep_alive_task is not None else "head"
