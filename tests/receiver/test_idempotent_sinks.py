"""The sinks' exactly-once rule (one row per idempotency key, the first id answered) and the
PostgreSQL sink against a real, throwaway cluster (the `postgres` fixture)."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest

from request_crypto._json import dumps_utf8
from request_crypto.errors import SinkUnavailableError
from request_crypto.receiver import (
    ReceivedPayload,
    SinkURLError,
    SQLiteSink,
    describe_sink,
    open_sink,
)
from request_crypto.receiver.pgtesting import PostgresCluster
from request_crypto.receiver.postgres import MIGRATIONS, PostgresSink, jsonb_can_hold
from request_crypto.receiver.replay import replayed_id, replayed_marker
from request_crypto.receiver.sinks import JSONLSink, SupportsReady, idempotency_key
from tests.receiver.helpers import record


def pg_rows(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT id, idempotency_key, coalesce(payload::text, payload_raw) FROM payloads"
        ).fetchall()


def sqlite_rows(path: Path) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute("SELECT id, idempotency_key, payload FROM payloads").fetchall()


# ---------------------------------------------------------------------------------------------
# SQLite


def test_idempotency_key_is_the_bodys_sha256() -> None:
    assert idempotency_key(b"abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


def test_sqlite_stores_a_retried_body_once_and_returns_the_first_id(tmp_path: Path) -> None:
    sink = SQLiteSink(tmp_path / "p.db")
    first = record({"n": 1}, body=b"body-1")
    unkeyed = record({"x": 0})
    assert sink.write_batch([first, unkeyed]) == [first.id, unkeyed.id]
    # Again in a later batch, twice in one batch, and through a second sink (a second worker).
    again = [record({"n": 1}, body=b"body-1"), record({"n": 1}, body=b"body-1")]
    assert sink.write_batch([*again, record({"n": 2}, body=b"body-2")])[:2] == [first.id] * 2
    other = SQLiteSink(tmp_path / "p.db")
    assert other.write_batch([record({"n": 1}, body=b"body-1")]) == [first.id]
    sink.close()
    other.close()
    rows = sqlite_rows(tmp_path / "p.db")
    assert len(rows) == 3
    assert [r[0] for r in rows if r[1] == idempotency_key(b"body-1")] == [first.id]


def test_sqlite_a_new_body_twice_in_one_batch_is_stored_once(tmp_path: Path) -> None:
    sink = SQLiteSink(tmp_path / "p.db")
    twice = [record({"n": 3}, body=b"body-3"), record({"n": 3}, body=b"body-3")]
    assert sink.write_batch(twice) == [twice[0].id] * 2
    sink.close()
    assert [r[0] for r in sqlite_rows(tmp_path / "p.db")] == [twice[0].id]


def test_sqlite_answers_retries_while_another_process_holds_the_write_lock(tmp_path: Path) -> None:
    """A batch of retries only is answered from a read: it waits for no writer (WAL readers
    never do), where a write transaction would wait out the busy timeout and fail."""
    sink = SQLiteSink(tmp_path / "p.db", busy_timeout=0.2)
    first = record({"n": 1}, body=b"body-1")
    assert sink.write_batch([first]) == [first.id]
    with contextlib.closing(sqlite3.connect(tmp_path / "p.db", isolation_level=None)) as writer:
        writer.execute("BEGIN IMMEDIATE")  # another worker process, mid-batch
        retries = [record({"n": 1}, body=b"body-1"), record({"n": 1}, body=b"body-1")]
        assert sink.write_batch(retries) == [first.id] * 2
        with pytest.raises(sqlite3.OperationalError, match="locked"):  # a new body must wait
            sink.write_batch([record({"n": 2}, body=b"body-2")])
        writer.execute("ROLLBACK")
    sink.close()
    assert len(sqlite_rows(tmp_path / "p.db")) == 1


def test_sqlite_records_without_a_key_are_each_stored(tmp_path: Path) -> None:
    sink = SQLiteSink(tmp_path / "p.db")
    records = [record({"same": True}), record({"same": True})]
    assert sink.write_batch(records) == [r.id for r in records]
    sink.close()
    assert len(sqlite_rows(tmp_path / "p.db")) == 2


def test_sqlite_file_of_the_first_schema_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with contextlib.closing(sqlite3.connect(path)) as db:  # the sink's table before keys
        db.execute(
            "CREATE TABLE payloads (id TEXT PRIMARY KEY, received_at TEXT NOT NULL,"
            " kid TEXT NOT NULL, format TEXT NOT NULL, payload TEXT NOT NULL)"
        )
        db.execute("INSERT INTO payloads VALUES ('old-1', 't', 'k', 'elastic', '{}')")
        db.commit()
    path.chmod(0o600)
    sink = SQLiteSink(path)
    first = record({"n": 1}, body=b"b")
    assert sink.write_batch([first]) == [first.id]
    assert sink.write_batch([record({"n": 1}, body=b"b")]) == [first.id]
    sink.close()
    SQLiteSink(path).close()  # opening a migrated file again changes nothing
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (1,)
        columns = [row[1] for row in db.execute("PRAGMA table_info(payloads)")]
        rows = db.execute("SELECT id, idempotency_key FROM payloads ORDER BY id").fetchall()
    assert columns[-4:] == ["idempotency_key", "signer_kid", "signer_iss", "jti"]
    assert rows == sorted([("old-1", None), (first.id, idempotency_key(b"b"))])


def test_jsonl_sink_returns_each_records_own_id(tmp_path: Path) -> None:
    sink = JSONLSink(tmp_path / "p.jsonl")
    records = [record(1, body=b"same"), record(1, body=b"same")]
    assert sink.write_batch(records) == [r.id for r in records]  # at least once: no lookup
    sink.close()


# ---------------------------------------------------------------------------------------------
# PostgreSQL


def test_postgres_sink_creates_its_schema_once_even_when_replicas_start_together(
    postgres_url: str,
) -> None:
    with ThreadPoolExecutor(max_workers=3) as pool:
        sinks = list(pool.map(lambda _: PostgresSink(postgres_url), range(3)))
    assert all(isinstance(s, SupportsReady) and s.ready() for s in sinks)
    for sink in sinks:
        sink.close()
    PostgresSink(postgres_url).close()
    with psycopg.connect(postgres_url) as conn:
        versions = conn.execute(
            "SELECT version FROM request_crypto_schema ORDER BY version"
        ).fetchall()
        indexes = {
            row[0]
            for row in conn.execute("SELECT indexdef FROM pg_indexes WHERE tablename='payloads'")
        }
        types = dict(
            conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns"
                " WHERE table_name = 'payloads'"
            ).fetchall()
        )
    assert versions == [(n,) for n in range(1, len(MIGRATIONS) + 1)]  # each step once
    assert any("UNIQUE" in i and "(idempotency_key)" in i for i in indexes)
    assert any("(received_at)" in i for i in indexes)
    assert types["payload"] == "jsonb"
    assert types["received_at"] == "timestamp with time zone"
    assert {"signer_kid", "signer_iss", "jti"} <= set(types)


def test_postgres_sink_stores_a_batch_as_jsonb(postgres_url: str) -> None:
    sink = open_sink(postgres_url)
    assert isinstance(sink, PostgresSink)
    records = [record({"a": "ü", "n": [1, 2.5, None]}, body=b"1"), record("text", body=b"2")]
    assert sink.write_batch(records) == [r.id for r in records]
    sink.close()
    with psycopg.connect(postgres_url) as conn:
        stored = dict(conn.execute("SELECT id, payload FROM payloads").fetchall())
    assert stored == {records[0].id: {"a": "ü", "n": [1, 2.5, None]}, records[1].id: "text"}


def test_postgres_retried_body_gets_the_first_id_on_any_replica(postgres_url: str) -> None:
    one, two = PostgresSink(postgres_url), PostgresSink(postgres_url)
    first = record({"n": 1}, body=b"body-1")
    assert one.write_batch([first]) == [first.id]
    retried = [record({"n": 1}, body=b"body-1"), record({"n": 1}, body=b"body-1")]
    fresh = record({"n": 2}, body=b"body-2")
    assert two.write_batch([*retried, fresh]) == [first.id, first.id, fresh.id]
    assert one.write_batch([record({"n": 2}, body=b"body-2")]) == [fresh.id]
    one.close()
    two.close()
    rows = pg_rows(postgres_url)
    assert sorted(r[0] for r in rows) == sorted([first.id, fresh.id])


def test_postgres_replicas_racing_on_the_same_bodies_store_each_once(postgres_url: str) -> None:
    bodies = [f"body-{i}".encode() for i in range(300)]
    sinks = [PostgresSink(postgres_url) for _ in range(3)]
    answers: dict[bytes, set[str]] = {body: set() for body in bodies}
    lock = threading.Lock()

    def feed(which: int) -> None:
        mine = bodies if which != 1 else bodies[::-1]  # opposite orders: no deadlock either
        for start in range(0, len(mine), 25):
            chunk = mine[start : start + 25]
            ids = sinks[which].write_batch([record({"b": b.decode()}, body=b) for b in chunk])
            with lock:
                for body, stored in zip(chunk, ids, strict=True):
                    answers[body].add(stored)

    with ThreadPoolExecutor(max_workers=3) as pool:
        list(pool.map(feed, range(3)))
    for sink in sinks:
        sink.close()
    rows = pg_rows(postgres_url)
    assert len(rows) == len(bodies)
    by_key = {key: row_id for row_id, key, _ in rows}
    for body, ids in answers.items():
        assert ids == {by_key[idempotency_key(body)]}  # every replica answered the stored id


def test_postgres_jti_in_another_body_is_a_replay_and_not_stored(postgres_url: str) -> None:
    one, two = PostgresSink(postgres_url), PostgresSink(postgres_url)
    first = record({"n": 1}, body=b"signed-1", jti="jti-1")
    assert one.write_batch([first]) == [first.id]
    other = record({"n": 2}, body=b"signed-2", jti="jti-1")
    fresh = record({"n": 3}, body=b"signed-3", jti="jti-3")
    assert two.write_batch([other, fresh]) == [replayed_marker(first.id), fresh.id]
    # In one batch too: the batch's first body keeps the jti.
    a, b = (record({"n": n}, body=f"same-batch-{n}".encode(), jti="jti-4") for n in (4, 5))
    assert one.write_batch([a, b]) == [a.id, replayed_marker(a.id)]
    one.close()
    two.close()
    assert sorted(r[0] for r in pg_rows(postgres_url)) == sorted([first.id, fresh.id, a.id])


def test_postgres_same_signed_body_again_gets_its_first_id(postgres_url: str) -> None:
    one, two = PostgresSink(postgres_url), PostgresSink(postgres_url)
    first = record({"n": 1}, body=b"signed-1", jti="jti-1")
    assert one.write_batch([first]) == [first.id]
    again = record({"n": 1}, body=b"signed-1", jti="jti-1")
    assert two.write_batch([again]) == [first.id]
    one.close()
    two.close()
    assert [r[0] for r in pg_rows(postgres_url)] == [first.id]


def test_postgres_expired_replay_entry_is_replaced(postgres_url: str) -> None:
    sink = PostgresSink(postgres_url)
    old = record({"n": 1}, body=b"signed-1", jti="jti-1", exp=time.time() - 1)
    assert sink.write_batch([old]) == [old.id]
    new = record({"n": 2}, body=b"signed-2", jti="jti-1")
    assert sink.write_batch([new]) == [new.id]
    late = record({"n": 3}, body=b"signed-3", jti="jti-1")
    assert sink.write_batch([late]) == [replayed_marker(new.id)]  # the new entry holds it
    sink.close()
    with psycopg.connect(postgres_url) as conn:
        held = conn.execute("SELECT body_key, id FROM replays WHERE jti = 'jti-1'").fetchall()
    assert held == [(new.idempotency_key, new.id)]
    assert sorted(r[0] for r in pg_rows(postgres_url)) == sorted([old.id, new.id])


def test_postgres_replicas_racing_on_one_jti_from_different_bodies_store_one(
    postgres_url: str,
) -> None:
    sinks = [PostgresSink(postgres_url) for _ in range(4)]
    for round_ in range(10):
        jti = f"race-{round_}"
        records = [
            record({"r": round_, "s": s}, body=f"{jti}-{s}".encode(), jti=jti) for s in range(4)
        ]
        start = threading.Barrier(len(sinks))

        def write(
            which: int,
            records: list[ReceivedPayload] = records,
            start: threading.Barrier = start,
        ) -> str:
            start.wait(timeout=60)
            return sinks[which].write_batch([records[which]])[0]

        with ThreadPoolExecutor(max_workers=len(sinks)) as pool:
            answers = list(pool.map(write, range(len(sinks))))
        stored = [a for a in answers if replayed_id(a) is None]
        assert len(stored) == 1, answers
        assert {replayed_id(a) for a in answers if a not in stored} == set(stored)
    for sink in sinks:
        sink.close()
    assert len(pg_rows(postgres_url)) == 10


def test_postgres_payload_jsonb_cannot_hold_is_kept_as_text(postgres_url: str) -> None:
    assert not jsonb_can_hold(dumps_utf8("a\x00b").decode())
    assert not jsonb_can_hold(dumps_utf8("\ud800").decode())
    assert jsonb_can_hold(dumps_utf8("😀 \\u0041").decode())
    sink = PostgresSink(postgres_url)
    records = [record("a\x00b", body=b"1"), record("\ud800", body=b"2"), record({"ok": 1})]
    assert sink.write_batch(records) == [r.id for r in records]
    sink.close()
    stored = {row[0]: json.loads(row[2]) for row in pg_rows(postgres_url)}
    assert stored == {r.id: r.payload for r in records}


def test_postgres_down_means_sink_unavailable_then_the_pool_reconnects(
    postgres: PostgresCluster, postgres_url: str
) -> None:
    sink = PostgresSink(postgres_url, wait_timeout=4.0)
    sink.write_batch([record(0, body=b"before")])
    postgres.stop()
    try:
        with pytest.raises(SinkUnavailableError, match="PostgreSQL") as caught:
            sink.write_batch([record(1, body=b"during")])
        assert "during" not in str(caught.value)
        assert not sink.ready()
    finally:
        postgres.start()
    # The connection the pool held died with the server: the first batch after the restart
    # is retried on a new one and stored, with no error for the sender.
    stored = sink.write_batch([record(1, body=b"after")])
    assert sink.ready()
    sink.close()
    rows = pg_rows(postgres_url)
    assert {r[1] for r in rows} == {idempotency_key(b"before"), idempotency_key(b"after")}
    assert stored[0] in {r[0] for r in rows}


def test_postgres_sink_that_cannot_connect_at_start_says_where(postgres: PostgresCluster) -> None:
    url = f"postgresql://someone:secret@127.0.0.1:{postgres.port}/no_such_database"
    with pytest.raises(SinkUnavailableError) as caught:
        PostgresSink(url, connect_timeout=2.0)
    message = str(caught.value)
    assert "no_such_database" in message
    assert "secret" not in message
    assert (
        describe_sink(url) == f"PostgreSQL database no_such_database at 127.0.0.1:{postgres.port}"
    )


def test_postgres_url_without_psycopg_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if the extra were not installed
    monkeypatch.delitem(sys.modules, "request_crypto.receiver.postgres")
    with pytest.raises(SinkURLError, match=r"request_crypto\[postgres\]"):
        open_sink("postgresql://u@127.0.0.1:1/db")
