"""The receiver's HTTP edge: reading a body against its limits, refusals, the access log.

A body is read with a running byte count (`BodyTooLarge` as soon as it passes the limit, or at
once when ``Content-Length`` says so) and a pace (`BodyTooSlow`, Apache's ``mod_reqtimeout``
rule). Every error answer is a `Refused` (status, log tag, message), JSON ``{"error": ...}``;
messages never quote the body or keys. `AccessLog` writes one line per request.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass

import anyio
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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

__all__ = [
    "SMALL_BODY",
    "AccessLog",
    "BodyPace",
    "BodyTooLarge",
    "BodyTooSlow",
    "Refused",
    "error_response",
    "http_error",
    "log_fields",
    "read_body",
    "refusal",
]

logger = logging.getLogger("request_crypto.receiver")

_LOG_SCOPE_KEY = "request_crypto.receiver.log"
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


def _declared_length(request: Request) -> int | None:
    declared = request.headers.get("content-length")
    if declared is None or not (declared.isascii() and declared.isdigit()):
        return None
    return int(declared) if len(declared) <= 18 else 10**18


async def read_body(
    request: Request, limit: int, take_slot: Callable[[], Awaitable[None]], pace: BodyPace
) -> tuple[bytes, int]:
    """The body, surrounding whitespace removed, and how many bytes were sent.

    Counted while reading: fails as soon as it passes `limit` (at once when Content-Length
    says it will). A body that passes SMALL_BODY awaits `take_slot()` before reading on; the
    wait does not count against `pace` (`BodyTooSlow` when the body falls behind it).
    """
    declared = _declared_length(request)
    if declared is not None and declared > limit:
        raise BodyTooLarge()
    start = time.monotonic()
    large = declared is not None and declared > SMALL_BODY
    if large:
        await take_slot()
        start = time.monotonic()
    chunks: list[bytes] = []
    size = 0
    stream = request.stream()
    while True:
        budget = start + pace.timeout + size / pace.min_rate - time.monotonic()
        chunk = await _next_chunk(stream, budget)
        if chunk is None:
            break
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge()
        if size > SMALL_BODY and not large:
            large = True
            waited = time.monotonic()
            await take_slot()
            start += time.monotonic() - waited
        if chunk:
            chunks.append(chunk)
    return _joined(chunks), size


async def _next_chunk(stream: AsyncIterator[bytes], budget: float) -> bytes | None:
    """The body's next chunk, None at its end; `BodyTooSlow` if it takes over `budget` s."""
    with anyio.move_on_after(budget):
        try:
            return await stream.__anext__()
        except StopAsyncIteration:
            return None
    raise BodyTooSlow()


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


def _log_value(value: object) -> str:
    text = str(value)
    if _SAFE_LOG_VALUE.fullmatch(text):
        return text
    return json.dumps(text[:128])  # quoted and escaped: no line breaks, no spoofed fields


class AccessLog:
    """Pure ASGI middleware: one ``logfmt`` line per request on ``request_crypto.receiver``.

    Fields: method, path, status, kid, format, size (body bytes), duration_ms, id, error. The
    same fields are attached as ``record.request_crypto`` for structured (JSON) formatters.
    Never the body or the payload.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        fields: dict[str, object] = {"method": scope["method"], "path": scope["path"]}
        scope[_LOG_SCOPE_KEY] = fields
        status = 500

        async def send_and_watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_watch)
        finally:
            fields["status"] = status
            fields["duration_ms"] = round((time.perf_counter() - start) * 1000, 2)
            ordered = {
                key: fields[key]
                for key in (
                    "method",
                    "path",
                    "status",
                    "kid",
                    "format",
                    "size",
                    "duration_ms",
                    "id",
                    "error",
                )
                if key in fields
            }
            line = " ".join(f"{key}={_log_value(value)}" for key, value in ordered.items())
            level = logging.ERROR if status >= 500 else logging.INFO
            logger.log(level, "%s", line, extra={"request_crypto": ordered})


def log_fields(request: Request) -> MutableMapping[str, object]:
    fields = request.scope.get(_LOG_SCOPE_KEY)
    return fields if isinstance(fields, dict) else {}
