"""Uvicorn's h11 protocol with the deadlines slow clients need, and TCP_NODELAY on every socket.

Uvicorn closes a connection idle *between* requests (``timeout_keep_alive``) but waits for a
request head, and for a body nobody reads any more, as long as the client likes: a few hundred
clients trickling a byte a second fill ``--limit-concurrency`` and every sender gets ``503``.
`ReceiverH11Protocol` adds two deadlines per connection:

- head: a request head must be complete within `header_timeout` seconds of its first byte (of
  the connection's start, for the first request); else ``408`` and the connection is closed;
- drain: a body the app answered without reading (``413``, ``404``...) is read and discarded
  for at most `drain_timeout` seconds after the answer; then the connection is closed.

A body the app *does* read is timed by the app itself (`request_crypto.receiver.app`), which
knows when it is waiting for a large-body slot rather than for the client.

It also sets ``TCP_NODELAY`` on each accepted socket: a response goes out as two writes (head,
then body), and with Nagle's algorithm the second waits for the client's delayed ACK (~40 ms
on every keep-alive request). asyncio sets it only on sockets created with ``IPPROTO_TCP``.

Used by `request-crypto serve`; with plain Uvicorn pass ``http=ReceiverH11Protocol.configured(
...)`` to ``uvicorn.Config``. Needs the ``server`` extra.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
from typing import Any, Literal

import h11
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from .config import DEFAULT_BODY_TIMEOUT, DEFAULT_HEADER_TIMEOUT

__all__ = ["ReceiverH11Protocol", "set_nodelay"]

logger = logging.getLogger("request_crypto.receiver")

_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
)
_Phase = Literal["head", "drain"]


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    """Turn Nagle's algorithm off on a TCP transport's socket (a no-op for anything else)."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class ReceiverH11Protocol(H11Protocol):
    """`H11Protocol` plus a request-head deadline, a bounded drain, and ``TCP_NODELAY``."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        header_timeout: float = DEFAULT_HEADER_TIMEOUT,
        drain_timeout: float = DEFAULT_BODY_TIMEOUT,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.header_timeout = header_timeout
        self.drain_timeout = drain_timeout
        self._deadline: asyncio.TimerHandle | None = None
        self._phase: _Phase | None = None

    @classmethod
    def configured(
        cls, *, header_timeout: float, drain_timeout: float
    ) -> functools.partial[ReceiverH11Protocol]:
        """A protocol factory for ``uvicorn.Config(http=...)``; it pickles (``--workers``)."""
        return functools.partial(cls, header_timeout=header_timeout, drain_timeout=drain_timeout)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        set_nodelay(transport)
        self._follow()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._follow()

    def on_response_complete(self) -> None:
        """Re-arm the deadline for what the connection waits for next (see `_follow`)."""
        super().on_response_complete()
        self._follow()

    def _follow(self) -> None:
        """Arm, keep or drop the deadline for what the connection is waiting for now."""
        phase: _Phase | None = None
        if not self.transport.is_closing():
            answering = self.cycle is not None and not self.cycle.response_complete
            their_state = self.conn.their_state
            if their_state is h11.IDLE and not answering:
                # Idle between requests is Uvicorn's keep-alive timer's; a head started is ours.
                phase = None if self.timeout_keep_alive_task is not None else "head"
            elif their_state is h11.SEND_BODY and not answering:
                phase = "drain"
        if phase == self._phase:
            return  # a deadline runs from the phase's start, not from the latest byte
        self._disarm()
        if phase is not None:
            delay = self.header_timeout if phase == "head" else self.drain_timeout
            self._deadline = self.loop.call_later(delay, self._expired)
            self._phase = phase

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = None
        self._phase = None

    def _expired(self) -> None:
        phase = self._phase
        self._deadline = None
        self._phase = None
        if self.transport.is_closing():
            return
        client = "%s:%d" % self.client if self.client else "a client"  # noqa: UP031
        if phase == "head":
            logger.info(
                "closing a connection from %s: no complete request head within %g s",
                client,
                self.header_timeout,
            )
            self.transport.write(_TIMEOUT_RESPONSE)
        else:
            logger.info(
                "closing a connection from %s: an unread body still arriving %g s after",
                client,
                self.drain_timeout,
            )
        self.transport.close()
