"""The receiver's sink writer: one thread feeding one sink, with group commit.

Every accepted body becomes a `ReceivedPayload` submitted here; the request is answered only
once the batch holding it is durable, so a sink failure is a ``503`` to each of its senders.
Each request learns the id its record was stored under: its own, or the first id of the same
body stored before (the sink's `write_batch` answer). The receiver hands records over from its
decrypt threads (`hand_over`) and gets the answers of a whole batch back on its event loop in
one wake-up (`request_crypto.receiver._threads`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import Sequence
from typing import Any

from ..errors import SinkUnavailableError
from ._threads import Outcome, Waiter, settle_soon
from .config import DEFAULT_MAX_BATCH
from .observability import ReceiverMetrics
from .sinks import ReceivedPayload, Sink

__all__ = ["SinkWriter"]

logger = logging.getLogger("request_crypto.receiver")


class SinkWriter:
    """Feeds one sink from one thread, batching whatever is waiting into one `write_batch`.

    Under load, requests that arrive while a batch is being committed wait for the next batch,
    so a commit (and its fsync) is shared by many requests; each request still gets its answer
    only after the batch holding its record is durable.
    """

    _STOP = object()

    def __init__(
        self,
        sink: Sink,
        max_batch: int = DEFAULT_MAX_BATCH,
        metrics: ReceiverMetrics | None = None,
    ) -> None:
        self._sink = sink
        self._max_batch = max_batch
        self._metrics = metrics
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="request-crypto-sink", daemon=True)

    def start(self) -> None:
        """Start the writer thread (once, when the app starts)."""
        self._thread.start()

    @property
    def alive(self) -> bool:
        """False once closed or if the thread died: ``/healthz`` then answers 503."""
        return self._thread.is_alive() and not self._closed

    def submit(self, record: ReceivedPayload) -> concurrent.futures.Future[str]:
        """Queue a record; the future holds its stored id once its batch is stored."""
        future: concurrent.futures.Future[str] = concurrent.futures.Future()
        self._put(record, future)
        return future

    def hand_over(self, record: ReceivedPayload, waiter: Waiter, answer: object) -> None:
        """From any thread: queue a record; once its batch is written `waiter` gets
        ``(answer, stored id)``, the id None if the sink failed. `SinkUnavailableError` here
        once closed."""
        self._put(record, (waiter, answer))

    def _put(self, record: ReceivedPayload, waiter: object) -> None:
        with self._lock:
            if self._closed:
                raise SinkUnavailableError("the receiver is shutting down")
            self._queue.put((record, waiter))

    async def write(self, record: ReceivedPayload) -> str:
        """Store a record, wait until it is durable, return its stored id.

        `SinkUnavailableError` if it was not stored.
        """
        return await asyncio.wrap_future(self.submit(record))

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

    def _write(self, batch: list[tuple[ReceivedPayload, Any]]) -> None:
        # A record whose request was cancelled meanwhile is still written: it was decrypted
        # and accepted; only its answer is lost (the sender will retry, and a sink keeping
        # idempotency keys answers the retry with this record's id).
        records = [record for record, _ in batch]
        started = time.perf_counter()
        try:
            ids = _stored_ids(records, self._sink.write_batch(records))
        except Exception as exc:
            self._observe(len(batch), started, failed=True)
            logger.error(
                "the sink failed to store a batch of %d payloads (%s: %s); answering 503",
                len(batch),
                type(exc).__name__,
                exc,
            )
            _answer(batch, [None] * len(batch), SinkUnavailableError("the sink failed"))
        else:
            self._observe(len(batch), started, failed=False)
            _answer(batch, ids, None)

    def _observe(self, size: int, started: float, *, failed: bool) -> None:
        if self._metrics is not None:
            self._metrics.observe_batch(size, time.perf_counter() - started, failed=failed)


def _stored_ids(records: Sequence[ReceivedPayload], ids: Sequence[str] | None) -> Sequence[str]:
    """The sink's answer checked: one id per record (None: each record's own id)."""
    if ids is None:
        return [record.id for record in records]
    if len(ids) != len(records) or not all(isinstance(i, str) for i in ids):
        raise TypeError(f"write_batch returned {len(ids)} ids for {len(records)} records")
    return ids


def _answer(
    batch: Sequence[tuple[ReceivedPayload, Any]],
    ids: Sequence[str | None],
    error: SinkUnavailableError | None,
) -> None:
    """Each record's waiter gets its stored id (or `error`); one loop wake-up per loop."""
    by_loop: dict[Any, list[Outcome]] = {}
    for (_, waiter), stored in zip(batch, ids, strict=True):
        if isinstance(waiter, concurrent.futures.Future):
            if waiter.set_running_or_notify_cancel():
                if error is not None:
                    waiter.set_exception(error)
                else:
                    waiter.set_result(stored)
            continue
        request, answer = waiter  # on failure: no id (None), so the request knows its record
        outcome: Outcome = (request.future, (answer, stored if error is None else None), None)
        by_loop.setdefault(request.loop, []).append(outcome)
    for loop, outcomes in by_loop.items():
        settle_soon(loop, outcomes)
