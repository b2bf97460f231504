"""The receiver's HTTP edge: reading a body against its limits, refusals, the access log.

A body is read with a running byte count (`BodyTooLarge` as soon as it passes the limit, or at
once when ``Content-Length`` says so) and a pace (`BodyTooSlow`, Apache's ``mod_reqtimeout``
rule). Every error answer is a `Refused` (status, log tag, message), JSON ``{"error": ...}``;
messages never quote the body or keys. `AccessLog` writes one line per request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._json import dumps_utf8
from ..errors import (
    ClaimsError,
    InternalSignal,
    KeySetUnavailableError,
    KeySourceError,
    KeySourceUnavailableError,
    MalformedBodyError,
    NoKeyFoundError,
    PayloadTooLargeError,
    RequestCryptoError,
    SignatureError,
    UnsignedBodyError,
)
from .config import format_size
from .observability import RequestLineHandler

__all__ = [
    "SMALL_BODY",
    "AccessLog",
    "BodyPace",
    "BodyTooLarge",
    "BodyTooSlow",
    "Refused",
    "declared_length",
    "error_response",
    "http_error",
    "log_fields",
    "log_request",
    "read_body",
    "refusal",
    "send_json",
    "start_log",
]

logger = logging.getLogger("request_crypto.receiver")

_LOG_SCOPE_KEY = "request_crypto.receiver.log"
_JSON_TYPE = (b"content-type", b"application/json")
_SAFE_LOG_VALUE = re.compile(r"[A-Za-z0-9._:/@+=-]{1,128}")
#: Bodies up to this size are read without waiting; larger ones take a `large_bodies` slot.
SMALL_BODY = 256 * 1024


class BodyTooLarge(InternalSignal):
    """The body passed the limit while it was read (answered 413)."""


class BodyTooSlow(InternalSignal):
    """The body fell behind its pace while it was read (answered 408)."""


@dataclass(frozen=True)
class BodyPace:
    """A body's deadline: `timeout` seconds from its start plus 1 s per `min_rate` bytes."""

    timeout: float
    min_rate: int

    def describe(self) -> str:
        return f"{self.timeout:g} s plus 1 s per {format_size(self.min_rate)} sent"


# ---------------------------------------------------------------------------------------------
# Reading a body


def declared_length(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    """The ``Content-Length`` of an ASGI scope's headers; None when absent or not a number."""
    for name, value in headers:
        if name == b"content-length":
            if not (value.isascii() and value.isdigit()):
                return None
            return int(value) if len(value) <= 18 else 10**18
    return None


async def read_body(
    receive: Receive,
    declared: int | None,
    limit: int,
    take_slot: Callable[[], Awaitable[None]],
    pace: BodyPace,
) -> tuple[bytes, int]:
    """The body, surrounding whitespace removed, and how many bytes were sent.

    Read straight from the ASGI `receive` (`ClientDisconnect` if the client goes). Counted
    while reading: fails as soon as it passes `limit` (at once when `declared`, the
    Content-Length, says it will). A body that passes SMALL_BODY awaits `take_slot()` before
    reading on; the wait does not count against `pace` (`BodyTooSlow` when the body falls
    behind it). One `_PaceTimer` times the whole body, its deadline moved as bytes arrive.
    """
    if declared is not None and declared > limit:
        raise BodyTooLarge()
    large = declared is not None and declared > SMALL_BODY
    if large:
        await take_slot()
    chunks: list[bytes] = []
    size = 0
    start = time.monotonic()
    timer = _PaceTimer(start + pace.timeout)
    try:
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise ClientDisconnect()
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge()
            if size > SMALL_BODY and not large:
                large = True
                timer.deadline = math.inf  # waiting for a slot is not the client's time
                waited = time.monotonic()
                await take_slot()
                start += time.monotonic() - waited
            if chunk:
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
            timer.move(start + pace.timeout + size / pace.min_rate)
    except asyncio.CancelledError:
        if timer.expired and timer.withdraw():
            raise BodyTooSlow() from None
        raise
    finally:
        timer.stop()
    return _joined(chunks), size


class _PaceTimer:
    """A body's deadline: cancels the reading task once `deadline` (`time.monotonic`) passes.

    What ``anyio.CancelScope(deadline=...)`` did here, at a fraction of its cost (~1.5 us
    against ~9 us per body): one loop timer, armed once; moving the deadline later only
    stores it, and a timer that fires early re-arms itself for the rest. Its cancel is told
    from any other by `expired`, and withdrawn (`withdraw`) before `BodyTooSlow` is raised.
    """

    __slots__ = ("_handle", "_loop", "_task", "deadline", "expired")

    def __init__(self, deadline: float) -> None:
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None  # an ASGI app runs in a task
        self._task = task
        self.deadline = deadline
        self.expired = False
        self._handle: asyncio.TimerHandle | None = self._loop.call_later(
            deadline - time.monotonic(), self._fire
        )

    def move(self, deadline: float) -> None:
        """A new deadline; armed now if the timer slept while `deadline` was infinite."""
        self.deadline = deadline
        if self._handle is None and not self.expired:
            self._handle = self._loop.call_later(deadline - time.monotonic(), self._fire)

    def _fire(self) -> None:
        self._handle = None
        if self.deadline == math.inf:
            return  # waiting for a slot: `move` arms it again
        remaining = self.deadline - time.monotonic()
        if remaining > 0:  # moved since it was armed (or the loop's clock ran early)
            self._handle = self._loop.call_later(remaining, self._fire)
            return
        self.expired = True
        self._task.cancel()

    def withdraw(self) -> bool:
        """Take this timer's cancel back from the task (Python 3.11+ counts cancels); False
        when another cancel is pending as well, which then goes on."""
        if sys.version_info >= (3, 11):
            return self._task.uncancel() == 0
        return True

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


def _joined(chunks: Sequence[bytes]) -> bytes:
    """``b"".join(chunks).strip()``, copying the data once rather than three times."""
    first, last = 0, len(chunks)
    while first < last and chunks[first].isspace():
        first += 1
    while last > first and chunks[last - 1].isspace():
        last -= 1
    if first == last:
        return b""
    kept = list(chunks[first:last])
    kept[0] = kept[0].lstrip()
    kept[-1] = kept[-1].rstrip()
    return b"".join(kept)


# ---------------------------------------------------------------------------------------------
# Refusals


def error_response(
    status: int, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def send_json(
    send: Send, status: int, content: object, headers: Mapping[str, str] | None = None
) -> None:
    """Answer with JSON, as `JSONResponse` would (same bytes, same headers), minus its layers."""
    body = dumps_utf8(content)
    raw = [(b"content-length", b"%d" % len(body)), _JSON_TYPE]
    if headers:  # first, as Starlette puts them
        raw[:0] = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class Refused(InternalSignal):
    """A request answered with an error: status, a log tag, and the message for the sender."""

    def __init__(
        self, status: int, tag: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.tag = tag
        self.message = message
        self.headers = headers


#: Body failures answered with their own message, first match wins (subclasses first).
_REFUSALS: tuple[tuple[type[RequestCryptoError], int, str], ...] = (
    (PayloadTooLargeError, 413, "too-large"),
    (UnsignedBodyError, 401, "unsigned"),
    (SignatureError, 401, "signature"),
    (ClaimsError, 401, "claims"),
    (MalformedBodyError, 400, "malformed"),
    (RequestCryptoError, 400, "decryption"),
)


def refusal(exc: Exception, fields: MutableMapping[str, object]) -> Refused:
    """The answer to a body that failed to decrypt. Messages never quote the body or keys."""
    if isinstance(exc, NoKeyFoundError):
        if exc.kid is not None:
            fields["kid"] = exc.kid  # untrusted: the log quotes and escapes it
        return Refused(
            422,
            "unknown-kid",
            "no key found: the body is encrypted to a kid this receiver does not hold; "
            "fetch /.well-known/jwks.json",
        )
    if isinstance(exc, KeySourceError):  # the HSM/KMS, never the body: senders retry
        retry_after = exc.retry_after if isinstance(exc, KeySourceUnavailableError) else 30
        logger.error("key source failed: %s", exc)
        return Refused(
            503,
            "key-source",
            "the key source is unavailable; retry later",
            headers={"Retry-After": str(retry_after)},
        )
    if isinstance(exc, KeySetUnavailableError):
        logger.error("%s", exc)
        return Refused(
            503,
            "sender-keys",
            "the senders' keys are unavailable; retry later",
            headers={"Retry-After": "30"},
        )
    for kind, status, tag in _REFUSALS:
        if isinstance(exc, kind):
            return Refused(status, tag, str(exc))
    logger.error("decrypting a body failed unexpectedly (%s)", type(exc).__name__)
    return Refused(500, f"internal:{type(exc).__name__}", "internal error decrypting the body")


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    fields = log_fields(request)
    fields["error"] = "not-found" if exc.status_code == 404 else f"http-{exc.status_code}"
    return error_response(exc.status_code, str(exc.detail), exc.headers)


# ---------------------------------------------------------------------------------------------
# Logging: one line per request


#: Text values as logged, for those that repeat line after line (method, path, kid, format).
_LOGGED: dict[str, str] = {}
_LOGGED_MAX = 1024


def _log_value(value: object) -> str:
    if type(value) is int or type(value) is float:
        return str(value)  # digits, "-", ".", "e", "inf", "nan": nothing to escape
    text = str(value)
    logged = _LOGGED.get(text)
    if logged is None:
        # Quoted and escaped unless plainly safe: no line breaks, no spoofed fields.
        logged = text if _SAFE_LOG_VALUE.fullmatch(text) else json.dumps(text[:128])
        if len(text) <= 128:  # a hostile kid may be long: never kept
            if len(_LOGGED) >= _LOGGED_MAX:
                _LOGGED.clear()  # ids never repeat: start again rather than grow
            _LOGGED[text] = logged
    return logged


_LOG_ORDER = ("method", "path", "status", "kid", "format", "size", "duration_ms", "id", "error")


def log_request(fields: dict[str, object], status: int, start: float) -> None:
    """The one line of a request that ended with `status`, begun at `start` (perf_counter).

    Fields in `_LOG_ORDER`; also attached as ``record.request_crypto`` for JSON formatters.
    Nothing is formatted when the level is off.
    """
    level = logging.ERROR if status >= 500 else logging.INFO
    if not logger.isEnabledFor(level):
        return
    fields["status"] = status
    fields["duration_ms"] = round((time.perf_counter() - start) * 1000, 2)
    ordered = {key: fields[key] for key in _LOG_ORDER if key in fields}
    line = " ".join([f"{key}={_log_value(value)}" for key, value in ordered.items()])
    handler = _sole_handler(logger)
    if type(handler) is RequestLineHandler and handler.request_line(  # serve's own: no record
        level, logger.name, line, ordered
    ):
        return
    # Made and handled directly: `logger.log` would walk the stack for the caller's file and
    # line (findCaller), ~25% of this function's cost, to report this very place anyway.
    record = logger.makeRecord(
        logger.name,
        level,
        __file__,
        0,
        "%s",
        (line,),
        None,
        "log_request",
        {"request_crypto": ordered},
    )
    logger.handle(record)


def _sole_handler(origin: logging.Logger) -> logging.Handler | None:
    """The one handler a record logged on `origin` reaches, when nothing else decides about it
    (no filter on `origin`, one handler up the hierarchy as far as it propagates); else None.

    `log_config` puts serve's handler on ``request_crypto``, a parent of this module's logger.
    """
    if origin.filters:
        return None
    found = None
    logger: logging.Logger | None = origin
    while logger is not None:
        for handler in logger.handlers:
            if found is not None:
                return None
            found = handler
        if not logger.propagate:
            break
        logger = logger.parent
    return found


def start_log(scope: Scope) -> dict[str, object]:
    """A request's log fields, kept in its scope for the handlers to add to (`log_fields`)."""
    fields: dict[str, object] = {"method": scope["method"], "path": scope["path"]}
    scope[_LOG_SCOPE_KEY] = fields
    return fields


class AccessLog:
    """Pure ASGI middleware: one ``logfmt`` line per request on ``request_crypto.receiver``.

    Fields: method, path, status, kid, format, size (body bytes), duration_ms, id, error. The
    same fields are attached as ``record.request_crypto`` for structured (JSON) formatters.
    Never the body or the payload. (`log_request` writes it; the payload route's fast path
    calls it directly.)
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        fields = start_log(scope)
        status = 500

        async def send_and_watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_watch)
        finally:
            log_request(fields, status, start)


def log_fields(request: Request | Scope) -> MutableMapping[str, object]:
    """The log fields `AccessLog` (or the fast path) started for this request or scope."""
    scope = request.scope if isinstance(request, Request) else request
    fields = scope.get(_LOG_SCOPE_KEY)
    return fields if isinstance(fields, dict) else {}
