"""The sink writer's leader commit: the thread that hands a record over to an idle writer
writes the batch itself, later arrivals join the next batch, and a slow sink never takes the
decrypt threads away."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from request_crypto import JWKManager, RequestEncryptor
from request_crypto.errors import SinkUnavailableError
from request_crypto.receiver import create_app
from request_crypto.receiver._threads import Waiter
from request_crypto.receiver._writer import SinkWriter
from request_crypto.receiver.sinks import ReceivedPayload
from request_crypto.receiver.testing import ReceiverThread
from tests.receiver.helpers import PAYLOADS, client, record, wait_for


class GatedSink:
    """Records each batch, the thread that wrote it, and overlapping calls; the first batch
    waits for `gate`; batches whose number is in `failing` raise."""

    def __init__(self, failing: frozenset[int] = frozenset()) -> None:
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.failing = failing
        self.batches: list[list[str]] = []
        self.threads: list[str] = []
        self.inside = 0
        self.overlaps = 0
        self.lock = threading.Lock()

    def write_batch(self, records: Sequence[ReceivedPayload]) -> None:
        with self.lock:
            self.inside += 1
            self.overlaps += self.inside > 1
            number = len(self.batches) + 1
            self.batches.append([r.id for r in records])
            self.threads.append(threading.current_thread().name)
        try:
            self.entered.set()
            if number == 1:
                assert self.gate.wait(60), "the test never opened the gate"
            if number in self.failing:
                raise OSError(f"batch {number} lost")
        finally:
            with self.lock:
                self.inside -= 1

    def close(self) -> None:
        pass


async def _hand_over_from(
    writer: SinkWriter, thread_name: str, records: list[ReceivedPayload]
) -> tuple[list[asyncio.Future[Any]], float]:
    """Hand `records` over from a new thread, one waiter each; the futures, and the seconds the
    thread spent handing them over."""
    loop = asyncio.get_running_loop()
    futures = [loop.create_future() for _ in records]
    spent = 0.0

    def hand() -> None:
        nonlocal spent
        start = time.monotonic()
        for rec, future in zip(records, futures, strict=True):
            writer.hand_over(rec, Waiter(loop, future), rec.id)
        spent = time.monotonic() - start

    thread = threading.Thread(target=hand, name=thread_name)
    thread.start()
    await asyncio.to_thread(thread.join)
    return futures, spent


def test_a_sink_failure_during_a_leader_commit_fails_exactly_that_batch() -> None:
    """The first thread writes batch 1 itself and, while it is held, records handed over by
    another thread wait (that thread returns at once) and become batch 2, written by the same
    leader; batch 2 fails: exactly its records get no id (503), the others theirs."""
    sink = GatedSink(failing=frozenset({2}))
    writer = SinkWriter(sink, max_batch=64)
    first, followers, last = record({"n": 0}), [record({"n": i}) for i in range(1, 5)], record({})

    async def scenario() -> tuple[Any, ...]:
        loop = asyncio.get_running_loop()
        leader_future = loop.create_future()
        leader = threading.Thread(
            target=writer.hand_over,
            args=(first, Waiter(loop, leader_future), "first"),
            name="leader",
        )
        leader.start()
        assert await asyncio.to_thread(sink.entered.wait, 60)
        futures, spent = await _hand_over_from(writer, "follower", followers)
        assert not any(f.done() for f in futures)  # queued behind the running commit
        sink.gate.set()
        await asyncio.to_thread(leader.join, 60)
        answers = [await f for f in [leader_future, *futures]]
        (after,), _ = await _hand_over_from(writer, "after", [last])
        return answers, await after, spent

    answers, after, spent = asyncio.run(scenario())
    assert spent < 30  # the follower did not wait for the held commit
    assert answers[0] == ("first", first.id)
    assert answers[1:] == [(r.id, None) for r in followers]  # batch 2 failed: no id, a 503
    assert sink.batches == [[first.id], [r.id for r in followers], [last.id]]
    assert sink.threads == ["leader", "leader", "after"]  # the leader wrote batches 1 and 2
    assert after == (last.id, last.id)
    assert sink.overlaps == 0


def test_many_threads_handing_over_store_each_record_once_without_overlap() -> None:
    """8 threads x 150 records: every record stored once and answered with its own id, the
    sink never called twice at a time, batches shared under contention."""
    sink = GatedSink()
    sink.gate.set()
    writer = SinkWriter(sink, max_batch=16)
    per_thread = [[record({"t": t, "i": i}) for i in range(150)] for t in range(8)]

    async def scenario() -> list[Any]:
        handed = await asyncio.gather(
            *(_hand_over_from(writer, f"t{t}", recs) for t, recs in enumerate(per_thread))
        )
        return [await f for futures, _ in handed for f in futures]

    answers = asyncio.run(scenario())
    records = [r for recs in per_thread for r in recs]
    assert answers == [(r.id, r.id) for r in records]
    stored = [i for batch in sink.batches for i in batch]
    assert sorted(stored) == sorted(r.id for r in records)  # each once
    assert sink.overlaps == 0
    assert max(len(b) for b in sink.batches) <= 16


def test_close_waits_for_the_running_commit_then_refuses() -> None:
    sink = GatedSink()
    writer = SinkWriter(sink)
    rec = record({"n": 1})

    async def scenario() -> Any:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        leader = threading.Thread(target=writer.hand_over, args=(rec, Waiter(loop, future), "kept"))
        leader.start()
        assert await asyncio.to_thread(sink.entered.wait, 60)
        closing = threading.Thread(target=writer.close)
        closing.start()
        await asyncio.sleep(0.2)
        assert closing.is_alive()  # waits for the batch being written
        assert not writer.alive
        with pytest.raises(SinkUnavailableError):
            writer.hand_over(record({"n": 2}), Waiter(loop, loop.create_future()), None)
        sink.gate.set()
        await asyncio.to_thread(closing.join, 60)
        await asyncio.to_thread(leader.join, 60)
        return await future

    assert asyncio.run(scenario()) == ("kept", rec.id)


def test_concurrent_posts_through_a_sink_failing_every_other_batch(keys: JWKManager) -> None:
    """Over HTTP: each body is 202 with its id if its batch was stored, 503 if not; the 503s
    are exactly the bodies of the failed batches."""
    sink = GatedSink(failing=frozenset(range(2, 400, 2)))
    sink.gate.set()
    encryptor = RequestEncryptor(keys.get_public_jwks(), format="jwe")
    bodies = [encryptor.encrypt("rx-a", {"i": i}) for i in range(96)]
    app = create_app(keys.get_private_jwks(), sink=sink)
    with ReceiverThread(app) as receiver:

        def send(chunk: list[str]) -> list[tuple[int, str | None]]:
            with client(receiver.url) as http:
                out = []
                for body in chunk:
                    answer = http.post(PAYLOADS, content=body)
                    out.append((answer.status_code, answer.json().get("id")))
                return out

        with ThreadPoolExecutor(max_workers=12) as pool:
            results = [r for rs in pool.map(send, [bodies[i::12] for i in range(12)]) for r in rs]
    stored = {i for n, batch in enumerate(sink.batches, 1) if n % 2 for i in batch}
    failed = [i for n, batch in enumerate(sink.batches, 1) if not n % 2 for i in batch]
    assert sorted(status for status, _ in results) == sorted(
        [202] * len(stored) + [503] * len(failed)
    )
    assert {i for status, i in results if status == 202} == stored
    assert sum(len(b) for b in sink.batches) == len(bodies)
    assert sink.overlaps == 0


def test_a_held_commit_leaves_the_decrypt_threads_free(keys: JWKManager) -> None:
    """With one decrypt thread and a sink holding the first batch, a second body is still
    decrypted meanwhile (the pool has a thread to spare for the leader) and joins batch 2."""
    sink = GatedSink()
    encryptor = RequestEncryptor(keys.get_public_jwks(), format="jwe")
    bodies = [encryptor.encrypt("rx-a", {"i": i}) for i in range(2)]
    app = create_app(keys.get_private_jwks(), sink=sink, decrypt_threads=1)
    metrics = app.state.receiver.metrics
    with ReceiverThread(app) as receiver, ThreadPoolExecutor(max_workers=2) as pool:

        def send(body: str) -> int:
            with client(receiver.url) as http:
                return http.post(PAYLOADS, content=body).status_code

        try:
            first = pool.submit(send, bodies[0])
            assert sink.entered.wait(60)
            second = pool.submit(send, bodies[1])
            wait_for(
                lambda: _decrypted(metrics) == 2,
                30,
                "the second body decrypted while the first batch is held",
            )
        finally:
            sink.gate.set()
        assert (first.result(60), second.result(60)) == (202, 202)
    assert [len(b) for b in sink.batches] == [1, 1]


def _decrypted(metrics: Any) -> int:
    """How many bodies the decrypt histogram has seen."""
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == "request_crypto_decrypt_seconds_count":
                return int(sample.value)
    return 0
