"""The receiver as an ASGI application (Starlette): decrypt, store, publish keys, follow rotation.

Routes:

- ``POST /v1/payloads``: the raw body is an ``elastic`` body or a ``jwe`` compact JWE. It is
  read with a running byte count (``413`` as soon as it passes the limit, or at once when
  ``Content-Length`` says so), decrypted on a worker thread, handed to the sink, and answered
  ``202 {"id", "kid", "format", "received_at"}`` only after the sink has made it durable.
- ``GET /.well-known/jwks.json``: the public key set, with ``Cache-Control`` and an ``ETag``.
- ``GET /healthz``: ``{"status": "ok", "keys": N}``, or ``503 {"status": "unavailable",
  "reason": ...}`` when the sink writer is down or the key file has failed to reload for
  longer than `key_reload_grace` seconds (so a load balancer takes the replica out).

Errors are JSON ``{"error": "..."}``: ``400`` malformed or undecryptable, ``422`` unknown kid,
``413`` too large, ``408`` (and the connection closed) when the body is too slow, ``503`` when
the sink failed, ``404``/``405`` as usual. Neither errors nor
logs ever carry payloads or key material.

Memory is bounded per process. A body of up to `SMALL_BODY` (256 KiB) is read as it arrives;
past that (or when ``Content-Length`` says it will get there) the request first waits for one
of `large_bodies` slots, which it holds until its body is decrypted. Meanwhile the client's
bytes wait in the socket (Uvicorn stops reading a request its app is not reading). A body is
copied once when its chunks are joined. So at most about ``connections x 2 x SMALL_BODY +
large_bodies x (2 x max_body + the decrypted payload)`` is in use; `request-crypto serve`
bounds the connections with ``--limit-concurrency``.

A body must arrive within `body_timeout` seconds, plus one second for every `min_body_rate`
bytes received (Apache's ``mod_reqtimeout`` rule: a fast sender of a large body gets the time
it needs, a stalled one holds its slot no longer than `body_timeout`). Time spent waiting for a
large-body slot does not count. The request head is timed by the server (`request-crypto
serve` uses `request_crypto.receiver.protocol`).

When built from a key-set *file*, the app polls it (inode, size, mtime) and, when it changes,
parses it on a worker thread and swaps in a new decryptor in one reference assignment:
requests in flight finish with the keys they started with. A file that does not parse, or
holds no private key, is logged and ignored; the old keys stay in use, and after
`key_reload_grace` seconds of that ``/healthz`` answers ``503`` until a reload succeeds.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import queue
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._json import dumps_utf8
from ..errors import (
    InternalSignal,
    InvalidArgumentError,
    MalformedBodyError,
    NoKeyFoundError,
    PayloadTooLargeError,
    RequestCryptoError,
    SinkUnavailableError,
)
from ..keyfile import read_jwks, require_private_keys
from ..keys.jwks import JWKSManager
from ..limits import Limits
from ..request import DecryptedRequest, RequestDecryptor
from .config import DEFAULT_MAX_BATCH, KeySetSource, ReceiverConfig, ReceiverSettings, format_size
from .sinks import ReceivedPayload, Sink, open_sink

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "SMALL_BODY",
    "KeySetSource",
    "SinkUnavailableError",
    "app_from_env",
    "create_app",
]

logger = logging.getLogger("request_crypto.receiver")


_LOG_SCOPE_KEY = "request_crypto.receiver.log"
_SAFE_LOG_VALUE = re.compile(r"[A-Za-z0-9._:/@+=-]{1,128}")
#: Bodies up to this size are read without waiting; larger ones take a `large_bodies` slot.
SMALL_BODY = 256 * 1024
#: Who needs the private set, in the "holds no private keys" error.
_NEEDED_BY = "a receiver"


class _BodyTooLarge(InternalSignal):
    """The body passed the limit while it was read (answered 413)."""


class _BodyTooSlow(InternalSignal):
    """The body fell behind its pace while it was read (answered 408)."""


@dataclass(frozen=True)
class _BodyPace:
    """A body's deadline: `timeout` seconds from its start plus 1 s per `min_rate` bytes."""

    timeout: float
    min_rate: int

    def describe(self) -> str:
        return f"{self.timeout:g} s plus 1 s per {format_size(self.min_rate)} sent"


# ---------------------------------------------------------------------------------------------
# Keys: one immutable generation, swapped as a whole on reload


@dataclass(frozen=True)
class _KeyGeneration:
    decryptor: RequestDecryptor
    well_known: bytes
    etag: str
    count: int


def _generation(decryptor: RequestDecryptor) -> _KeyGeneration:
    body = json.dumps(decryptor.get_well_knowns(), separators=(",", ":")).encode("utf-8")
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    return _KeyGeneration(decryptor, body, etag, len(decryptor.keys))


def _decryptor(jwks: Mapping[str, Any] | JWKSManager, max_body: int) -> RequestDecryptor:
    # Only the body size is the receiver's own; every other limit is the library's default.
    return RequestDecryptor(jwks, limits=Limits(max_body_size=max_body))


def _load_decryptor(path: Path, max_body: int) -> RequestDecryptor:
    decryptor = _decryptor(read_jwks(path), max_body)
    require_private_keys(decryptor.keys, path, _NEEDED_BY)
    return decryptor


def _file_signature(path: Path) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


# ---------------------------------------------------------------------------------------------
# The sink writer: one thread, group commit


class _SinkWriter:
    """Feeds one sink from one thread, batching whatever is waiting into one `write_batch`.

    Under load, requests that arrive while a batch is being committed wait for the next batch,
    so a commit (and its fsync) is shared by many requests; each request still gets its answer
    only after the batch holding its record is durable.
    """

    _STOP = object()

    def __init__(self, sink: Sink, max_batch: int = DEFAULT_MAX_BATCH) -> None:
        self._sink = sink
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="request-crypto-sink", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._closed

    def submit(self, record: ReceivedPayload) -> concurrent.futures.Future[None]:
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        with self._lock:
            if self._closed:
                raise SinkUnavailableError("the receiver is shutting down")
            self._queue.put((record, future))
        return future

    async def write(self, record: ReceivedPayload) -> None:
        await asyncio.wrap_future(self.submit(record))

    def close(self, timeout: float | None = None) -> None:
        """Stop taking records, write every record already taken, and stop the thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(self._STOP)
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        stop = False
        while not stop:
            item = self._queue.get()
            if item is self._STOP:
                break
            batch = [item]
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is self._STOP:
                    stop = True
                    break
                batch.append(item)
            self._write(batch)

    def _write(self, batch: list[tuple[ReceivedPayload, concurrent.futures.Future[None]]]) -> None:
        # A record whose request was cancelled meanwhile is still written: it was decrypted
        # and accepted; only its answer is lost (the sender will retry, at least once).
        futures = [f for _, f in batch if f.set_running_or_notify_cancel()]
        try:
            self._sink.write_batch([record for record, _ in batch])
        except Exception as exc:
            logger.error(
                "the sink failed to store a batch of %d payloads (%s: %s); answering 503",
                len(batch),
                type(exc).__name__,
                exc,
            )
            for future in futures:
                future.set_exception(SinkUnavailableError("the sink failed"))
        else:
            for future in futures:
                future.set_result(None)


# ---------------------------------------------------------------------------------------------
# Logging: one line per request


def _log_value(value: object) -> str:
    text = str(value)
    if _SAFE_LOG_VALUE.fullmatch(text):
        return text
    return json.dumps(text[:128])  # quoted and escaped: no line breaks, no spoofed fields


class _AccessLog:
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


def _log_fields(request: Request) -> MutableMapping[str, object]:
    fields = request.scope.get(_LOG_SCOPE_KEY)
    return fields if isinstance(fields, dict) else {}


# ---------------------------------------------------------------------------------------------
# The application


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _decrypt(decryptor: RequestDecryptor, body: bytes) -> tuple[DecryptedRequest, str]:
    """Runs on a worker thread: decrypt, then serialize the payload once for the sink."""
    decrypted = decryptor.decrypt_request(body)
    try:
        payload_json = dumps_utf8(decrypted.payload).decode("utf-8")
    except InvalidArgumentError:
        # e.g. a number like 1e999, which parses to infinity and has no JSON form.
        raise MalformedBodyError("the decrypted payload holds a number out of range") from None
    return decrypted, payload_json


def _declared_length(request: Request) -> int | None:
    declared = request.headers.get("content-length")
    if declared is None or not (declared.isascii() and declared.isdigit()):
        return None
    return int(declared) if len(declared) <= 18 else 10**18


async def _read_body(
    request: Request, limit: int, take_slot: Callable[[], Awaitable[None]], pace: _BodyPace
) -> tuple[bytes, int]:
    """The body, surrounding whitespace removed, and how many bytes were sent.

    Counted while reading: fails as soon as it passes `limit` (at once when Content-Length
    says it will). A body that passes SMALL_BODY awaits `take_slot()` before reading on; the
    wait does not count against `pace` (`_BodyTooSlow` when the body falls behind it).
    """
    declared = _declared_length(request)
    if declared is not None and declared > limit:
        raise _BodyTooLarge()
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
            raise _BodyTooLarge()
        if size > SMALL_BODY and not large:
            large = True
            waited = time.monotonic()
            await take_slot()
            start += time.monotonic() - waited
        if chunk:
            chunks.append(chunk)
    return _joined(chunks), size


async def _next_chunk(stream: AsyncIterator[bytes], budget: float) -> bytes | None:
    """The body's next chunk, None at its end; `_BodyTooSlow` if it takes over `budget` s."""
    with anyio.move_on_after(budget):
        try:
            return await stream.__anext__()
        except StopAsyncIteration:
            return None
    raise _BodyTooSlow()


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


class _Receiver:
    """The state behind one app: current keys, the sink writer, the key-file watcher."""

    def __init__(self, config: ReceiverConfig) -> None:
        jwks, sink, max_body = config.jwks, config.sink, config.max_body
        self.config = config
        self.body_pace = _BodyPace(config.body_timeout, config.min_body_rate)
        self.key_reload_grace = config.key_reload_grace
        #: Since when (monotonic) the key file has failed to load, and why; None while it loads.
        self.key_file_failing: tuple[float, str] | None = None
        self.max_body = max_body
        self.jwks_max_age = config.jwks_max_age
        self.max_batch = config.max_batch
        self.decrypt_threads = config.decrypt_threads or max(2, os.cpu_count() or 1)
        self.large_bodies = config.large_bodies or 2 * self.decrypt_threads
        #: Bodies answered 202, and refused (any error), for the line logged at shutdown.
        self.accepted = 0
        self.refused = 0
        self.path: Path | None = None
        self._signature: tuple[int, int, int, int] | None = None
        if isinstance(jwks, (str, os.PathLike)):
            self.path = Path(jwks)
            self._signature = _file_signature(self.path)
            decryptor = _load_decryptor(self.path, max_body)
        else:
            decryptor = jwks if isinstance(jwks, RequestDecryptor) else _decryptor(jwks, max_body)
            require_private_keys(decryptor.keys, "the key set", _NEEDED_BY)
        self.keys = _generation(decryptor)
        self.reload_interval = config.reload_interval if self.path is not None else None
        self.sink_spec = sink
        self.sink: Sink | None = None
        self.writer: _SinkWriter | None = None
        self.limiter: anyio.CapacityLimiter | None = None
        self.large_body_slots: anyio.Semaphore | None = None

    # -- lifespan ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self.limiter = anyio.CapacityLimiter(self.decrypt_threads)
        self.large_body_slots = anyio.Semaphore(self.large_bodies)
        owned = isinstance(self.sink_spec, str)
        if isinstance(self.sink_spec, str):
            self.sink = await anyio.to_thread.run_sync(open_sink, self.sink_spec)
        else:
            self.sink = self.sink_spec
        self.writer = _SinkWriter(self.sink, self.max_batch)
        self.writer.start()
        try:
            async with anyio.create_task_group() as tasks:
                if self.reload_interval:
                    tasks.start_soon(self._watch, self.reload_interval)
                try:
                    yield
                finally:
                    tasks.cancel_scope.cancel()
        finally:
            writer, sink = self.writer, self.sink
            await anyio.to_thread.run_sync(writer.close)
            if owned:
                await anyio.to_thread.run_sync(sink.close)
            logger.info(
                "request-crypto receiver stopped: %d bodies accepted, %d refused",
                self.accepted,
                self.refused,
            )

    # -- key reload -------------------------------------------------------------------------

    async def _watch(self, interval: float) -> None:
        assert self.path is not None
        while True:
            await anyio.sleep(interval)
            try:
                await self.check_key_file()
            except Exception as exc:  # the watcher must outlive any surprise
                logger.error("watching key file %s failed (%s)", self.path, type(exc).__name__)

    async def check_key_file(self) -> bool:
        """Reload the key file if it changed since the last look; True if new keys are in use."""
        assert self.path is not None
        signature = _file_signature(self.path)
        if signature == self._signature:
            return False
        self._signature = signature
        if signature is None:
            logger.error(
                "key file %s is gone; keeping the %d keys in use", self.path, self.keys.count
            )
            self._key_file_failed("the key file is gone")
            return False
        try:
            decryptor = await anyio.to_thread.run_sync(_load_decryptor, self.path, self.max_body)
        except RequestCryptoError as exc:
            logger.error(
                "key file %s changed but cannot be used (%s); keeping the %d keys in use",
                self.path,
                exc,
                self.keys.count,
            )
            self._key_file_failed("the key file changed but cannot be used")
            return False
        except Exception as exc:  # never let the watcher die
            logger.error(
                "key file %s changed but loading it failed (%s); keeping the old keys",
                self.path,
                type(exc).__name__,
            )
            self._key_file_failed("the key file changed but loading it failed")
            return False
        self.key_file_failing = None
        self.keys = _generation(decryptor)  # one assignment: requests see old or new, whole
        logger.info(
            "key file %s reloaded: %d keys (%s)",
            self.path,
            self.keys.count,
            ", ".join(decryptor.keys.kids()),
        )
        return True

    def _key_file_failed(self, reason: str) -> None:
        # The failure's start stays the first one's: a second bad write does not reset it.
        since = self.key_file_failing[0] if self.key_file_failing else time.monotonic()
        self.key_file_failing = (since, reason)

    def unhealthy(self) -> str | None:
        """Why this replica should be taken out of a load balancer, or None if it is fine."""
        if self.writer is None or not self.writer.alive:
            return "the sink writer is stopped"
        failing = self.key_file_failing
        if failing is not None:
            since, reason = failing
            elapsed = time.monotonic() - since
            if elapsed > self.key_reload_grace:
                return (
                    f"{reason} (for {elapsed:.0f} s); serving the {self.keys.count} keys "
                    "loaded before"
                )
        return None

    # -- endpoints ----------------------------------------------------------------------------

    async def well_known(self, request: Request) -> Response:
        keys = self.keys
        headers = {
            "Cache-Control": f"public, max-age={self.jwks_max_age}",
            "ETag": keys.etag,
        }
        match = request.headers.get("if-none-match")
        if match is not None and keys.etag in {tag.strip() for tag in match.split(",")}:
            return Response(status_code=304, headers=headers)
        return Response(keys.well_known, media_type="application/json", headers=headers)

    async def healthz(self, request: Request) -> Response:
        reason = self.unhealthy()
        if reason is not None:
            return JSONResponse(
                {"status": "unavailable", "reason": reason, "keys": self.keys.count}, 503
            )
        return JSONResponse({"status": "ok", "keys": self.keys.count})

    async def receive(self, request: Request) -> Response:
        fields = _log_fields(request)
        try:
            record = await self._accept(request, fields)
        except _Refused as refused:
            self.refused += 1
            fields["error"] = refused.tag
            return _error(refused.status, refused.message, refused.headers)
        self.accepted += 1
        return JSONResponse(
            {
                "id": record.id,
                "kid": record.kid,
                "format": record.format,
                "received_at": record.received_at,
            },
            status_code=202,
        )

    async def _accept(
        self, request: Request, fields: MutableMapping[str, object]
    ) -> ReceivedPayload:
        """Read, decrypt and store one body; every refusal is a `_Refused`."""
        writer, limiter, slots = self.writer, self.limiter, self.large_body_slots
        if writer is None or limiter is None or slots is None:
            raise _Refused(503, "not-started", "the receiver is not started (no ASGI lifespan)")
        async with contextlib.AsyncExitStack() as held:  # a large body's slot, if it took one

            async def take_slot() -> None:
                await held.enter_async_context(slots)

            try:
                body, size = await _read_body(request, self.max_body, take_slot, self.body_pace)
            except _BodyTooSlow:
                raise _Refused(
                    408,
                    "body-timeout",
                    f"the body arrived too slowly (allowed: {self.body_pace.describe()})",
                    headers={"Connection": "close"},  # the rest of the body is not read
                ) from None
            except _BodyTooLarge:
                raise _Refused(
                    413, "too-large", f"the body is over the limit of {format_size(self.max_body)}"
                ) from None
            except ClientDisconnect:
                raise _Refused(400, "client-disconnected", "the client disconnected") from None
            fields["size"] = size
            keys = self.keys  # the generation this request uses, even if a reload happens now
            try:
                decrypted, payload_json = await anyio.to_thread.run_sync(
                    _decrypt, keys.decryptor, body, limiter=limiter
                )
            except Exception as exc:
                raise _refusal(exc, fields) from None
            del body
        record = ReceivedPayload(
            id=str(uuid.uuid4()),
            received_at=_now(),
            kid=decrypted.kid,
            format=decrypted.format.value,
            size=size,
            payload=decrypted.payload,
            payload_json=payload_json,
            metadata=decrypted.metadata,
        )
        fields.update(kid=record.kid, format=record.format, id=record.id)
        try:
            await writer.write(record)
        except SinkUnavailableError as exc:
            raise _Refused(
                503, "sink", f"the payload could not be stored ({exc}); retry later"
            ) from None
        return record


class _Refused(InternalSignal):
    """A request answered with an error: status, a log tag, and the message for the sender."""

    def __init__(
        self, status: int, tag: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.tag = tag
        self.message = message
        self.headers = headers


def _refusal(exc: Exception, fields: MutableMapping[str, object]) -> _Refused:
    """The answer to a body that failed to decrypt. Messages never quote the body or keys."""
    if isinstance(exc, NoKeyFoundError):
        if exc.kid is not None:
            fields["kid"] = exc.kid  # untrusted: the log quotes and escapes it
        return _Refused(
            422,
            "unknown-kid",
            "no key found: the body is encrypted to a kid this receiver does not hold; "
            "fetch /.well-known/jwks.json",
        )
    if isinstance(exc, PayloadTooLargeError):
        return _Refused(413, "too-large", str(exc))
    if isinstance(exc, MalformedBodyError):
        return _Refused(400, "malformed", str(exc))
    if isinstance(exc, RequestCryptoError):
        return _Refused(400, "decryption", str(exc))
    logger.error("decrypting a body failed unexpectedly (%s)", type(exc).__name__)
    return _Refused(500, f"internal:{type(exc).__name__}", "internal error decrypting the body")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    fields = _log_fields(request)
    fields["error"] = "not-found" if exc.status_code == 404 else f"http-{exc.status_code}"
    return _error(exc.status_code, str(exc.detail), exc.headers)


def create_app(
    config: ReceiverConfig | KeySetSource, /, **settings: Unpack[ReceiverSettings]
) -> Starlette:
    """Build the receiver's ASGI app from a `ReceiverConfig` (see it for every setting).

    The keyword form builds that config: ``create_app("private_jwks.json", sink=...)`` is
    ``create_app(ReceiverConfig(jwks="private_jwks.json", sink=...))``; keywords given with a
    config replace its values. The server's settings (`host`, `port`...) are not the app's.

    `jwks`: a key-set file is read now (a missing or invalid set fails here) and watched every
    `reload_interval` seconds; a loaded set is never reloaded. `sink`: a URL is opened when the
    app starts and closed when it stops; a `Sink` object stays the caller's to close.
    """
    if not isinstance(config, ReceiverConfig):
        config = ReceiverConfig(jwks=config, **settings)
    elif settings:
        config = dataclasses.replace(config, **settings)
    receiver = _Receiver(config)
    routes = [
        Route("/.well-known/jwks.json", receiver.well_known, methods=["GET"]),
        Route("/healthz", receiver.healthz, methods=["GET"]),
        Route("/v1/payloads", receiver.receive, methods=["POST"]),
    ]
    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        HTTPException: _http_error
    }
    app = Starlette(
        routes=routes,
        middleware=[Middleware(_AccessLog)],
        exception_handlers=handlers,
        lifespan=receiver.lifespan,
    )
    app.state.receiver = receiver
    return app


def app_from_env() -> Starlette:
    """The app for Uvicorn's ``--factory`` (and ``--workers``): `ReceiverConfig.from_env()`.

    Every setting travels as ``REQUEST_CRYPTO_RECEIVER_<SETTING>`` (``..._JWKS`` required);
    `request-crypto serve` sets them all from its options (`ReceiverConfig.to_env`).
    """
    return create_app(ReceiverConfig.from_env())
