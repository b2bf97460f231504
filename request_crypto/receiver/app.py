"""The receiver as an ASGI application (Starlette): decrypt, store, publish keys, follow rotation.

Routes:

- ``POST /v1/payloads``: the raw body is an ``elastic`` body or a ``jwe`` compact JWE. It is
  read with a running byte count (``413`` as soon as it passes the limit, or at once when
  ``Content-Length`` says so), decrypted on a worker thread, handed to the sink, and answered
  ``202 {"id", "kid", "format", "received_at"}`` only after the sink has made it durable. A
  body stored before (a retry; same bytes, same SHA-256) is answered with its *first* id by
  sinks that keep idempotency keys (SQLite, PostgreSQL) and is not stored again.
- ``GET /.well-known/jwks.json``: the public key set, with ``Cache-Control`` and an ``ETag``.
- ``GET /healthz``: ``{"status": "ok", "keys": N}``, or ``503 {"status": "unavailable",
  "reason": ...}`` when the sink writer is down or the key file has failed to reload for
  longer than `key_reload_grace` seconds (liveness).
- ``GET /readyz``: the same, and the sink answers now (`SupportsReady`, e.g. PostgreSQL):
  ``{"status": "ready", "keys": N}`` or ``503`` (readiness: a load balancer's health check).
- ``GET /metrics``: Prometheus metrics (`request_crypto.receiver.observability`).

Signed bodies (``verify_with``): a bad, unknown or missing signature (with
``require_signature``) or refused claims get ``401``; the very same signed body again is a
retry, answered ``202`` with the first id and stored once; its `jti` in a different body is a
replay, ``409``, nothing stored (`request_crypto.receiver.replay`).

Errors are JSON ``{"error": "..."}``: ``400`` malformed or undecryptable, ``422`` unknown kid,
``413`` too large, ``408`` (and the connection closed) when the body is too slow, ``503`` with
``Retry-After`` when the sink failed (nothing of that body counts as stored), ``404``/``405``
as usual. Neither errors nor
logs ever carry payloads or key material.

Memory is bounded per process. A body of up to `SMALL_BODY` (256 KiB) is read as it arrives;
past that (or when ``Content-Length`` says it will get there) the request first waits for one
of `large_bodies` slots, which it holds until it is answered. Meanwhile the client's
bytes wait in the socket (Uvicorn stops reading a request its app is not reading). A body is
copied once when its chunks are joined. So at most about ``connections x 2 x SMALL_BODY +
large_bodies x (2 x max_body + the decrypted payload)`` is in use; `request-crypto serve`
bounds the connections with ``--limit-concurrency``.

A body must arrive within `body_timeout` seconds, plus one second for every `min_body_rate`
bytes received (Apache's ``mod_reqtimeout`` rule: a fast sender of a large body gets the time
it needs, a stalled one holds its slot no longer than `body_timeout`). Time spent waiting for a
large-body slot does not count. The request head is timed by the server (`request-crypto
serve` uses `request_crypto.receiver.protocol`).

When built from key-set *files* (alone, or merged with key-source URIs), the app polls each
file (inode, size, mtime) and, when one changes, parses it on a worker thread and swaps in a
new decryptor in one reference assignment: requests in flight finish with the keys they
started with. A file that does not parse, holds no private key or changed kind is logged and
ignored; the old keys stay in use, and after `key_reload_grace` seconds of that ``/healthz``
answers ``503`` until a reload succeeds.

``POST /v1/payloads`` is the busy route, so it skips Starlette's middleware stack and router
(`ReceiverApp`), and each body makes one hop off the event loop: a decrypt thread decrypts it,
builds its record and hands it to the sink writer; the thread that writes its batch (this one
when the sink is idle: a leader commit, `_writer`) answers the request once the batch is
stored (`_threads`). Every other request is routed as usual.

Here: the routes and the state behind them. Reading bodies, refusals and the access log are in
`_http`; the key generations and the key-file reload in `_keys`; the sink writer in `_writer`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
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
from starlette.types import Receive, Scope, Send

from .._json import dumps_utf8
from ..errors import (
    InvalidArgumentError,
    KeySourceError,
    MalformedBodyError,
    SinkUnavailableError,
)
from ..keys.jwks import JWKManager
from ..request import DecryptedRequest, RequestDecryptor
from ._http import (
    SMALL_BODY,
    AccessLog,
    BodyPace,
    BodyTooLarge,
    BodyTooSlow,
    Refused,
    declared_length,
    http_error,
    log_fields,
    log_request,
    read_body,
    refusal,
    send_json,
    start_log,
)
from ._keys import KeyGeneration, WatchedKeys, loaded_keys, verification_options
from ._stamps import new_id, utc_now
from ._threads import Waiter, WorkerThreads
from ._writer import SinkWriter
from .config import KeySetSource, ReceiverConfig, ReceiverSettings, format_size
from .observability import METRICS_CONTENT_TYPE, ReceiverMetrics
from .replay import replayed_id, signer_fields
from .sinks import ReceivedPayload, Sink, SupportsReady, idempotency_key, open_sink

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = [
    "PAYLOADS_PATH",
    "SMALL_BODY",
    "KeySetSource",
    "ReceiverApp",
    "SinkUnavailableError",
    "app_from_env",
    "create_app",
]

logger = logging.getLogger("request_crypto.receiver")
PAYLOADS_PATH = "/v1/payloads"
#: Seconds a sender is told to wait after a 503 (the sink or the replica not ready).
RETRY_AFTER = "1"


def _decrypt(decryptor: RequestDecryptor, body: bytes) -> tuple[DecryptedRequest, str]:
    """Runs on a worker thread: decrypt, then serialize the payload once for the sink."""
    decrypted = decryptor.decrypt_request(body)
    try:
        payload_json = dumps_utf8(decrypted.payload).decode("utf-8")
    except InvalidArgumentError:
        # Not expected: a parsed payload is JSON (1e999 is refused by the parse). Kept so that
        # a value with no JSON form could never reach the sink.
        raise MalformedBodyError("the decrypted payload has no JSON form to store") from None
    return decrypted, payload_json


class _Receiver:
    """The state behind one app: current keys, the sink writer, the key-file watcher."""

    def __init__(self, config: ReceiverConfig) -> None:
        jwks, sink, max_body = config.jwks, config.sink, config.max_body
        self.config = config
        self.metrics = ReceiverMetrics()
        self.body_pace = BodyPace(config.body_timeout, config.min_body_rate)
        self.max_body = max_body
        self.jwks_max_age = config.jwks_max_age
        self.max_batch = config.max_batch
        self.decrypt_threads = config.decrypt_threads or max(2, os.cpu_count() or 1)
        self.large_bodies = config.large_bodies or 2 * self.decrypt_threads
        #: Bodies answered 202, and refused (any error), for the line logged at shutdown.
        self.accepted = 0
        self.refused = 0
        #: The key files (watched) and key sources; None for a set given loaded (never reloaded).
        self.key_file: WatchedKeys | None = None
        self._loaded: KeyGeneration | None = None
        verify = verification_options(
            config.verify_with,
            require_signature=config.require_signature,
            issuer=config.issuer,
            audience=config.audience,
            leeway=config.leeway,
        )
        if isinstance(jwks, (Path, str, tuple)):  # files and key-source URIs, merged by kid
            self.key_file = WatchedKeys(
                jwks if isinstance(jwks, tuple) else (jwks,),
                max_body,
                config.key_reload_grace,
                metrics=self.metrics,
                password_file=config.password_file,
                verify=verify,
            )
        else:
            assert not isinstance(jwks, os.PathLike)  # ReceiverConfig made every path a Path
            self._loaded = loaded_keys(jwks, max_body, verify)
            self.metrics.keys_reloaded(self._loaded.count)
        watched = self.key_file is not None and self.key_file.files
        self.reload_interval = config.reload_interval if watched else None
        self.sink_spec = sink
        self.sink: Sink | None = None
        self.writer: SinkWriter | None = None
        self.workers: WorkerThreads | None = None
        self.large_body_slots: anyio.Semaphore | None = None

    # -- lifespan ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        # One thread more than decrypt at once: at most one of them writes to the sink at a
        # time (`SinkWriter`'s leader), so a slow sink never takes a decrypt thread away.
        self.workers = WorkerThreads(self.decrypt_threads + 1, "request-crypto-decrypt")
        self.workers.start()
        self.large_body_slots = anyio.Semaphore(self.large_bodies)
        owned = isinstance(self.sink_spec, str)
        if isinstance(self.sink_spec, str):
            self.sink = await anyio.to_thread.run_sync(open_sink, self.sink_spec)
        else:
            self.sink = self.sink_spec
        self.writer = SinkWriter(self.sink, self.max_batch, self.metrics)
        try:
            async with anyio.create_task_group() as tasks:
                if self.key_file is not None and self.reload_interval:
                    tasks.start_soon(self.key_file.watch, self.reload_interval)
                try:
                    yield
                finally:
                    tasks.cancel_scope.cancel()
        finally:
            writer, sink = self.writer, self.sink
            self.workers.close()
            await anyio.to_thread.run_sync(writer.close)
            if owned:
                await anyio.to_thread.run_sync(sink.close)
            logger.info(
                "request-crypto receiver stopped: %d bodies accepted, %d refused",
                self.accepted,
                self.refused,
            )

    @property
    def keys(self) -> KeyGeneration:
        """The keys in use now: read once per request, which keeps them to its end."""
        if self.key_file is not None:
            return self.key_file.keys
        assert self._loaded is not None
        return self._loaded

    def unhealthy(self) -> str | None:
        """Why this replica should be taken out of a load balancer, or None if it is fine."""
        if self.writer is None or not self.writer.alive:
            return "the sink writer is stopped"
        return self.key_file.unhealthy() if self.key_file is not None else None

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

    async def key_source_problem(self) -> KeySourceError | None:
        """Ask an HSM or KMS key source if it answers (on a thread: it blocks); keys in memory
        always do. The error names the failing source (its URI, no secret)."""
        source = self.keys.decryptor.source
        if isinstance(source, JWKManager):
            return None
        try:
            await anyio.to_thread.run_sync(source.health)
        except KeySourceError as exc:
            return exc
        return None

    async def healthz(self, request: Request) -> Response:
        reason = self.unhealthy()
        keys = self.keys
        headers = None
        problem = await self.key_source_problem() if reason is None else None
        if problem is not None:
            reason = str(problem)
            headers = {"Retry-After": str(getattr(problem, "retry_after", 30))}
        if reason is not None:
            return JSONResponse(
                {"status": "unavailable", "reason": reason, "keys": keys.count}, 503, headers
            )
        return JSONResponse({"status": "ok", "keys": keys.count})

    async def readyz(self, request: Request) -> Response:
        """Readiness: keys loaded, the writer running, and the sink answering now."""
        reason = self.unhealthy()
        sink = self.sink
        ready = not isinstance(sink, SupportsReady) or await anyio.to_thread.run_sync(sink.ready)
        if reason is None and not ready:
            reason = "the sink does not answer"
        problem = await self.key_source_problem() if reason is None else None
        if problem is not None:
            reason = str(problem)
        if reason is not None:
            return JSONResponse(
                {"status": "unavailable", "reason": reason, "keys": self.keys.count},
                503,
                headers={"Retry-After": RETRY_AFTER},
            )
        return JSONResponse({"status": "ready", "keys": self.keys.count})

    async def metrics_page(self, request: Request) -> Response:
        """The Prometheus text exposition (`ReceiverMetrics`)."""
        self.metrics.keys_loaded.set(self.keys.count)
        return Response(self.metrics.render(), media_type=METRICS_CONTENT_TYPE)

    async def receive(self, scope: Scope, receive: Receive, send: Send) -> int:
        """``POST /v1/payloads``, as plain ASGI (the fast path and the routed one both call
        it); answers, and returns the status it answered for the log line."""
        fields = log_fields(scope)
        try:
            record, stored_id = await self._accept(scope, receive, fields)
        except Refused as refused:
            self.refused += 1
            fields["error"] = refused.tag
            format_ = fields.get("format")
            self.metrics.observe_request(
                refused.status, format_ if isinstance(format_, str) else None
            )
            await send_json(send, refused.status, {"error": refused.message}, refused.headers)
            return refused.status
        self.accepted += 1
        self.metrics.observe_request(202, record.format)
        answer = {
            "id": stored_id,
            "kid": record.kid,
            "format": record.format,
            "received_at": record.received_at,
        }
        await send_json(send, 202, answer)
        return 202

    async def _accept(
        self, scope: Scope, receive: Receive, fields: MutableMapping[str, object]
    ) -> tuple[ReceivedPayload, str]:
        """Read, decrypt and store one body: its record and the id it is stored under (the
        first id of the same body stored before); every refusal is a `Refused`.

        One hop off the event loop per body: a decrypt thread decrypts, builds the record and
        hands it to the sink writer; the thread writing its batch answers this request once
        it is stored.
        """
        writer, workers, slots = self.writer, self.workers, self.large_body_slots
        if writer is None or workers is None or slots is None:
            raise Refused(
                503,
                "not-started",
                "the receiver is not started (no ASGI lifespan)",
                headers={"Retry-After": RETRY_AFTER},
            )
        held = False  # a large body's slot, held until its answer

        async def take_slot() -> None:
            nonlocal held
            await slots.acquire()
            held = True

        try:
            try:
                body, size = await read_body(
                    receive,
                    declared_length(scope["headers"]),
                    self.max_body,
                    take_slot,
                    self.body_pace,
                )
            except BodyTooSlow:
                raise Refused(
                    408,
                    "body-timeout",
                    f"the body arrived too slowly (allowed: {self.body_pace.describe()})",
                    headers={"Connection": "close"},  # the rest of the body is not read
                ) from None
            except BodyTooLarge:
                raise Refused(
                    413, "too-large", f"the body is over the limit of {format_size(self.max_body)}"
                ) from None
            except ClientDisconnect:
                raise Refused(400, "client-disconnected", "the client disconnected") from None
            fields["size"] = size
            keys = self.keys  # the generation this request uses, even if a reload happens now
            opened = workers.run(self._open, keys.decryptor, body, size, writer)
            del body
            record: ReceivedPayload
            stored: str | None
            try:
                record, stored = await opened
            except SinkUnavailableError as exc:  # the writer is closed: shutting down
                raise _sink_refusal(exc) from None
            except Exception as exc:
                raise refusal(exc, fields) from None
        finally:
            if held:
                slots.release()
        fields.update(kid=record.kid, format=record.format, id=record.id)
        if stored is None:
            raise _sink_refusal(SinkUnavailableError("the sink failed"))
        first = replayed_id(stored)
        if first is not None:
            raise Refused(
                409,
                "replay",
                "this signed token (its jti) was already used in another body: a replay is "
                "refused; senders sign each body anew",
            )
        if stored != record.id:  # the same body was stored before: answer its first id
            fields["id"] = stored
        return record, stored

    def _open(
        self,
        decryptor: RequestDecryptor,
        body: bytes,
        size: int,
        writer: SinkWriter,
        waiter: Waiter,
    ) -> None:
        """On a decrypt thread: `_decrypt` (timed into the histogram), the record, and on to
        the sink writer (written here if it is idle), which settles `waiter` with ``(record,
        stored id or None)``."""
        started = time.perf_counter()
        try:
            decrypted, payload_json = _decrypt(decryptor, body)
        finally:
            self.metrics.decrypt_seconds.observe(time.perf_counter() - started)
        record = ReceivedPayload(
            id=new_id(),
            received_at=utc_now(),
            kid=decrypted.kid,
            format=decrypted.format.value,
            size=size,
            payload=decrypted.payload,
            payload_json=payload_json,
            metadata=decrypted.metadata,
            idempotency_key=idempotency_key(body),
            **signer_fields(decrypted.signer),
        )
        writer.hand_over(record, waiter, record)


def _sink_refusal(exc: SinkUnavailableError) -> Refused:
    return Refused(
        503,
        "sink",
        f"the payload could not be stored ({exc}); retry later",
        headers={"Retry-After": RETRY_AFTER},
    )


class _PayloadRoute:
    """``POST /v1/payloads`` as a Starlette endpoint (the routed path, behind `AccessLog`)."""

    def __init__(self, receiver: _Receiver) -> None:
        self.receiver = receiver

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.receiver.receive(scope, receive, send)


class ReceiverApp(Starlette):
    """The receiver's Starlette app, with a fast path for its one busy route.

    ``POST /v1/payloads`` (no root path) goes straight to the handler and the access log,
    past Starlette's middleware stack and router (~0.1 ms of CPU per request); every other
    request takes the routed path. Both reach the same handler (`_Receiver.receive`);
    `fast_path` False routes every request (the tests compare the two).
    """

    fast_path = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.fast_path
            and scope["type"] == "http"
            and scope["path"] == PAYLOADS_PATH
            and scope["method"] == "POST"
            and not scope.get("root_path")
        ):
            start = time.perf_counter()
            fields = start_log(scope)
            status = 500
            try:
                status = await self.state.receiver.receive(scope, receive, send)
            finally:
                log_request(fields, status, start)
            return
        await super().__call__(scope, receive, send)


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
        Route("/readyz", receiver.readyz, methods=["GET"]),
        Route("/metrics", receiver.metrics_page, methods=["GET"]),
        Route(PAYLOADS_PATH, _PayloadRoute(receiver), methods=["POST"]),
    ]
    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        HTTPException: http_error
    }
    app = ReceiverApp(
        routes=routes,
        middleware=[Middleware(AccessLog)],
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
