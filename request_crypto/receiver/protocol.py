"""Uvicorn's HTTP protocols with the deadlines slow clients need, and TCP_NODELAY on every socket.

Uvicorn closes a connection idle *between* requests (``timeout_keep_alive``) but waits for a
request head, and for a body nobody reads any more, as long as the client likes: a few hundred
clients trickling a byte a second fill ``--limit-concurrency`` and every sender gets ``503``.
`SlowClientDeadlines` adds two deadlines per connection:

- head: a request head must be complete within `header_timeout` seconds of its first byte (of
  the connection's start, for the first request); else ``408`` and the connection is closed;
- drain: a body the app answered without reading (``413``, ``404``...) is read and discarded
  for at most `drain_timeout` seconds after the answer; then the connection is closed.

A body the app *does* read is timed by the app itself (`request_crypto.receiver.app`), which
knows when it is waiting for a large-body slot rather than for the client.

It also sets ``TCP_NODELAY`` on each accepted socket: a response goes out as two writes (head,
then body), and with Nagle's algorithm the second waits for the client's delayed ACK (~40 ms
on every keep-alive request). asyncio sets it only on sockets created with ``IPPROTO_TCP``.

Two parsers carry it: `ReceiverH11Protocol` (h11, pure Python, always there) and
``ReceiverHttpToolsProtocol`` (`request_crypto.receiver.protocol_httptools`; httptools, a C
parser, ~0.15 ms less CPU per request, used when installed). The httptools one also bounds a
request head at `HEAD_LIMIT` bytes (``431``), as h11 does by itself. `http_protocol` picks one.

Used by `request-crypto serve`; with plain Uvicorn pass ``http=http_protocol("auto",
header_timeout=..., drain_timeout=...)`` to ``uvicorn.Config``. Needs the ``server`` extra.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.util
import logging
import socket
from typing import Any, Literal, cast

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .config import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_HEADER_TIMEOUT,
    HTTP_IMPLEMENTATIONS,
    ReceiverConfig,
)

__all__ = [
    "HEAD_LIMIT",
    "HTTP_IMPLEMENTATIONS",
    "ReceiverH11Protocol",
    "SlowClientDeadlines",
    "http_protocol",
    "protocol_for",
    "resolve_http",
    "set_nodelay",
]

logger = logging.getLogger("request_crypto.receiver")

#: The most bytes a request head may take (h11's own default limit, kept for httptools).
HEAD_LIMIT = 16 * 1024
_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
)
Phase = Literal["head", "drain"]


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    """Turn Nagle's algorithm off on a TCP transport's socket (a no-op for anything else)."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class SlowClientDeadlines:
    """The head and drain deadlines of one connection, for any parser.

    A protocol class mixes this in before Uvicorn's protocol, calls `follow` whenever what
    the connection waits for may have changed, and implements `waiting_for`.
    """

    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    client: tuple[str, int] | None
    cycle: Any  # Uvicorn's request-response cycle (h11's or httptools'), None between requests

    def __init__(
        self,
        *args: Any,
        header_timeout: float = DEFAULT_HEADER_TIMEOUT,
        drain_timeout: float = DEFAULT_BODY_TIMEOUT,
        **uvicorn_arguments: Any,
    ) -> None:
        """Uvicorn's protocol first (next in the MRO), then the deadlines."""
        super().__init__(*args, **uvicorn_arguments)
        self.header_timeout = header_timeout
        self.drain_timeout = drain_timeout
        self._deadline: asyncio.TimerHandle | None = None
        self._phase: Phase | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Uvicorn's, then ``TCP_NODELAY`` and the head deadline."""
        super().connection_made(transport)  # type: ignore[misc]  # Uvicorn's, next in the MRO
        set_nodelay(transport)
        self.follow()

    def connection_lost(self, exc: Exception | None) -> None:
        """No deadline outlives its connection; then Uvicorn's."""
        self.disarm()
        super().connection_lost(exc)  # type: ignore[misc]  # Uvicorn's, next in the MRO

    @classmethod
    def configured(cls, *, header_timeout: float, drain_timeout: float) -> functools.partial[Any]:
        """A protocol factory for ``uvicorn.Config(http=...)``; it pickles (``--workers``)."""
        return functools.partial(
            cast(Any, cls), header_timeout=header_timeout, drain_timeout=drain_timeout
        )

    def on_response_complete(self) -> None:
        """Re-arm the deadline for what the connection waits for next (see `follow`)."""
        super().on_response_complete()  # type: ignore[misc]  # Uvicorn's, next in the MRO
        self.follow()

    def waiting_for(self) -> Phase | None:
        """What the parser waits for from the client that a deadline covers (None: nothing);
        asked only while no response is under way."""
        raise NotImplementedError

    def follow(self) -> None:
        """Arm, keep or drop the deadline for what the connection is waiting for now.

        While a response is under way nothing is timed here: a body being read is the app's.
        """
        answering = self.cycle is not None and not self.cycle.response_complete
        phase = None if self.transport.is_closing() or answering else self.waiting_for()
        if phase == self._phase:
            return  # a deadline runs from the phase's start, not from the latest byte
        self.disarm()
        if phase is not None:
            delay = self.header_timeout if phase == "head" else self.drain_timeout
            self._deadline = self.loop.call_later(delay, self._expired)
            self._phase = phase

    def disarm(self) -> None:
        """Drop the running deadline, if any (on a phase change and when the connection goes)."""
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = None
        self._phase = None

    def refuse_and_close(self, response: bytes, why: str, *args: object) -> None:
        """Log why (at info: the client's doing), send `response` if any, close."""
        client = "%s:%d" % self.client if self.client else "a client"  # noqa: UP031
        logger.info("closing a connection from %s: " + why, client, *args)
        if response:
            self.transport.write(response)
        self.transport.close()

    def _expired(self) -> None:
        phase = self._phase
        self._deadline = None
        self._phase = None
        if self.transport.is_closing():
            return
        if phase == "head":
            self.refuse_and_close(
                _TIMEOUT_RESPONSE, "no complete request head within %g s", self.header_timeout
            )
        else:
            self.refuse_and_close(
                b"", "an unread body still arriving %g s after", self.drain_timeout
            )


class ReceiverH11Protocol(SlowClientDeadlines, H11Protocol):
    """`H11Protocol` plus a request-head deadline, a bounded drain, and ``TCP_NODELAY``."""

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self.follow()

    def waiting_for(self) -> Phase | None:
        their_state = self.conn.their_state
        if their_state is h11.IDLE:
            # Idle between requests is Uvicorn's keep-alive timer's; a head started is ours.
            return None if self.timeout_keep_alive_task is not None else "head"
        return "drain" if their_state is h11.SEND_BODY else None


def resolve_http(http: str) -> str:
    """``auto`` made concrete: ``httptools`` when it is installed, else ``h11``."""
    if http not in HTTP_IMPLEMENTATIONS:
        raise ValueError(f"http {http!r}: use one of {', '.join(HTTP_IMPLEMENTATIONS)}")
    if http == "auto":
        return "httptools" if importlib.util.find_spec("httptools") is not None else "h11"
    return http


def http_protocol(
    http: str = "auto",
    *,
    header_timeout: float = DEFAULT_HEADER_TIMEOUT,
    drain_timeout: float = DEFAULT_BODY_TIMEOUT,
) -> functools.partial[Any]:
    """The protocol factory for ``uvicorn.Config(http=...)`` of implementation `http`."""
    cls: type[SlowClientDeadlines] = ReceiverH11Protocol
    if resolve_http(http) == "httptools":
        from .protocol_httptools import ReceiverHttpToolsProtocol  # noqa: PLC0415 (optional)

        cls = ReceiverHttpToolsProtocol
    return cls.configured(header_timeout=header_timeout, drain_timeout=drain_timeout)


def protocol_for(config: ReceiverConfig) -> functools.partial[Any]:
    """`serve`'s protocol factory: `config`'s parser, header timeout, and body timeout as the
    drain's."""
    return http_protocol(
        config.http, header_timeout=config.header_timeout, drain_timeout=config.body_timeout
    )
