"""The receiver's sink writer: group commit, led by the decrypt thread that finds the sink idle.

Every accepted body becomes a `ReceivedPayload` handed over here from a decrypt thread
(`SinkWriter.hand_over`); the request is answered only once the batch holding it is durable,
so a sink failure is a ``503`` to each of its senders. Each request learns the id its record
was stored under: its own, or the first id of the same body stored before (the sink's
`write_batch` answer).

Leader commit: the thread handing a record over when no batch is being written writes it
itself, at once, and then every record that arrived meanwhile, a batch at a time, until none
is waiting; a thread arriving while a batch is written only queues its record and goes back to
decrypting. So there is no writer thread to wake per batch (the hand-off that cost the most
per body at low batch sizes), calls to the sink never overlap, and under load batches grow as
before. A slow sink (fsync, a database across a network) holds the leading thread, one thread
at a time: the receiver runs one decrypt thread more than it decrypts with (`app`), so the
others always decrypt. The answers of a whole batch reach each event loop in one wake-up
(`request_crypto.receiver._threads`).
"""

from __future__ import annotations

import logging
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

#: A record waiting for its batch, the request to answer and what that request gets with the id.
_Pending = tuple[ReceivedPayload, Waiter, object]


class SinkWriter:
    """Feeds one sink one batch at a time, written by whichever thread hands over to it idle.

    Under load, records handed over while a batch is being committed wait for the next batch,
    so a commit (and its fsync) is shared by many requests; each request still gets its answer
    only after the batch holding its record is durable.
    """

    def __init__(
        self,
        sink: Sink,
        max_batch: int = DEFAULT_MAX_BATCH,
        metrics: ReceiverMetrics | None = None,
    ) -> None:
        self._sink = sink
        self._max_batch = max_batch
        self._metrics = metrics
        self._pending: list[_Pending] = []
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)  # notified when a leader stops writing
        self._committing = False  # a thread is writing batches: it will take what is pending
        self._closed = False

    @property
    def alive(self) -> bool:
        """False once closed: ``/healthz`` then answers 503."""
        return not self._closed

    def hand_over(self, record: ReceivedPayload, waiter: Waiter, answer: object) -> None:
        """From a thread that may block on the sink: store `record`; once its batch is written
        `waiter` gets ``(answer, stored id)``, the id None if the sink failed.

        Writes the batch in this thread when no other is writing (and then whatever arrived
        meanwhile); otherwise returns at once. `SinkUnavailableError` once closed.
        """
        with self._lock:
            if self._closed:
                raise SinkUnavailableError("the receiver is shutting down")
            self._pending.append((record, waiter, answer))
            if self._committing:
                return  # the leader writes it with its next batch
            self._committing = True
        self._lead()

    def close(self, timeout: float | None = None) -> None:
        """Stop taking records and wait (up to `timeout` s) until those taken are written."""
        with self._lock:
            self._closed = True
            self._idle.wait_for(lambda: not self._committing, timeout)

    def _lead(self) -> None:
        """Write batches of what is pending until nothing is; then the next hand-over leads."""
        try:
            while True:
                with self._lock:
                    batch = self._pending[: self._max_batch]
                    del self._pending[: self._max_batch]
                    if not batch:
                        self._committing = False
                        self._idle.notify_all()
                        return
                self._write(batch)
        except BaseException:
            # Not an Exception of the sink's (`_write` answers those, then re-raises the rest):
            # what waits is failed too, so no request waits for a leader that is gone.
            with self._lock:
                stranded, self._pending = self._pending, []
                self._committing = False
                self._idle.notify_all()
            _answer(stranded, None)
            raise

    def _write(self, batch: list[_Pending]) -> None:
        # A record whose request was cancelled meanwhile is still written: it was decrypted
        # and accepted; only its answer is lost (the sender will retry, and a sink keeping
        # idempotency keys answers the retry with this record's id).
        records = [record for record, _, _ in batch]
        started = time.perf_counter()
        try:
            ids = _stored_ids(records, self._sink.write_batch(records))
        except BaseException as exc:
            self._observe(len(batch), started, failed=True)
            logger.error(
                "the sink failed to store a batch of %d payloads (%s: %s); answering 503",
                len(batch),
                type(exc).__name__,
                exc,
            )
            _answer(batch, None)
            if not isinstance(exc, Exception):
                raise  # e.g. SystemExit from a sink: its batch is answered, then it goes on
        else:
            self._observe(len(batch), started, failed=False)
            _answer(batch, ids)

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


def _answer(batch: Sequence[_Pending], ids: Sequence[str] | None) -> None:
    """Each request gets ``(answer, its stored id)``, the id None for all if the batch failed
    (`ids` None); one loop wake-up per loop."""
    by_loop: dict[Any, list[Outcome]] = {}
    for index, (_, waiter, answer) in enumerate(batch):
        outcome: Outcome = (waiter.future, (answer, None if ids is None else ids[index]), None)
        by_loop.setdefault(waiter.loop, []).append(outcome)
    for loop, outcomes in by_loop.items():
        settle_soon(loop, outcomes)
