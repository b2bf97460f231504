"""The receiver's sinks: plug-in, failing, JSONL, stdout and SQLite sinks, their files, and
sink URLs and sizes.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import sqlite3
import stat
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from request_crypto import JWKManager, RequestEncryptor
from request_crypto.errors import InvalidArgumentError
from request_crypto.keyfile import write_jwks
from request_crypto.receiver import (
    JSONLSink,
    Sink,
    SinkURLError,
    SQLiteSink,
    StdoutSink,
    create_app,
    open_sink,
    parse_sink_url,
    parse_size,
)
from request_crypto.receiver import sinks as sinks_module
from request_crypto.receiver.testing import ReceiverThread
from tests.receiver.helpers import (
    PAYLOADS,
    ListSink,
    client,
    record,
    stored_rows,
)

# ---------------------------------------------------------------------------------------------
# sinks


def test_plug_in_sink_gets_payload_and_metadata_before_the_answer(keys: JWKManager) -> None:
    sink = ListSink(delay=0.05)
    assert isinstance(sink, Sink)
    encryptor = RequestEncryptor(keys.get_public_jwks(), format="jwe")
    bodies = [encryptor.encrypt("rx-b", {"i": i}) for i in range(32)]
    app = create_app(keys.get_private_jwks(), sink=sink)
    with ReceiverThread(app) as receiver:
        seen_before_answer = []

        def send(body: str) -> None:
            with client(receiver.url) as http:
                response = http.post(PAYLOADS, content=body)
                assert response.status_code == 202
                answer_id = response.json()["id"]
                with sink.lock:
                    seen_before_answer.append(any(r.id == answer_id for r in sink.records))

        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(send, bodies))
    assert seen_before_answer == [True] * len(bodies)
    assert sorted(r.payload["i"] for r in sink.records) == list(range(32))
    record = sink.records[0]
    assert record.kid == "rx-b"
    assert record.format == "jwe"
    assert record.metadata.key["alg"] == "RSA-OAEP-256"
    assert record.metadata.header["kid"] == "rx-b"
    assert json.loads(record.payload_json) == record.payload
    # 32 concurrent requests against a 50 ms sink: commits were shared, not one per request
    assert len(sink.batches) < len(bodies)
    assert not sink.closed  # the caller owns a sink object


def test_failing_sink_answers_503_and_the_server_keeps_serving(
    keys: JWKManager, caplog: pytest.LogCaptureFixture
) -> None:
    sink = ListSink(fail=True)
    marker = f"marker-{uuid.uuid4()}"
    body = RequestEncryptor(keys.get_public_jwks(), format="jwe").encrypt("rx-a", {"m": marker})
    with (
        ReceiverThread(create_app(keys.get_private_jwks(), sink=sink)) as receiver,
        client(receiver.url) as http,
    ):
        response = http.post(PAYLOADS, content=body)
        assert response.status_code == 503
        assert "retry" in response.json()["error"]
        sink.fail = False
        assert http.post(PAYLOADS, content=body).status_code == 202
        assert http.get("/healthz").status_code == 200
    assert any("disk on fire" in r.getMessage() for r in caplog.records)
    assert all(marker not in r.getMessage() for r in caplog.records)


def test_jsonl_sink_through_the_server(tmp_path: Path, keys: JWKManager) -> None:
    out = tmp_path / "payloads.jsonl"
    encryptor = RequestEncryptor(keys.get_public_jwks())
    payloads = [{"i": i, "text": "line\nbreak ✓"} for i in range(5)]
    with (
        ReceiverThread(create_app(keys.get_private_jwks(), sink=f"jsonl:///{out}")) as receiver,
        client(receiver.url) as http,
    ):
        ids = [
            http.post(PAYLOADS, content=encryptor.encrypt("rx-a", p)).json()["id"] for p in payloads
        ]
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 5
    records = [json.loads(line) for line in lines]
    assert [r["id"] for r in records] == ids
    assert [r["payload"] for r in records] == payloads
    assert {r["format"] for r in records} == {"elastic"}
    assert set(records[0]) == {"id", "received_at", "kid", "format", "payload"}


def test_stdout_and_jsonl_sinks_write_json_lines(tmp_path: Path) -> None:
    stream = io.BytesIO()
    sink = StdoutSink(stream)
    records = [record({"a": "ü"}), record([1, None]), record("\ud800")]
    sink.write_batch(records)
    lines = stream.getvalue().decode("utf-8").splitlines()
    assert [json.loads(line)["payload"] for line in lines] == [{"a": "ü"}, [1, None], "\ud800"]

    path = tmp_path / "out.jsonl"
    jsonl = JSONLSink(path)
    jsonl.write_batch(records[:1])
    jsonl.write_batch(records[1:])
    jsonl.close()
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == [
        r.id for r in records
    ]
    assert (path.stat().st_mode & 0o777) == 0o600


def test_sink_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    """They hold decrypted payloads: the database, its -wal and -shm, and the JSON lines."""
    previous = os.umask(0o022)
    try:
        sqlite = open_sink(f"sqlite:///{tmp_path / 'p.db'}")
        jsonl = open_sink(f"jsonl:///{tmp_path / 'p.jsonl'}")
    finally:
        os.umask(previous)
    try:
        sqlite.write_batch([record({"a": 1})])
        jsonl.write_batch([record({"a": 1})])
        names = sorted(path.name for path in tmp_path.iterdir())
        assert names == ["p.db", "p.db-shm", "p.db-wal", "p.jsonl"]  # while the db is open
        assert {
            name: stat.S_IMODE((tmp_path / name).stat().st_mode) for name in names
        } == dict.fromkeys(names, 0o600)
    finally:
        sqlite.close()
        jsonl.close()


def test_sqlite_sink_writes_on_after_a_failed_commit(tmp_path: Path) -> None:
    """A COMMIT that fails leaves the transaction open: it is rolled back, the next batch works.

    A deferred foreign key is checked at COMMIT, and SQLite keeps the transaction open when
    that check fails: a trigger turns kid "bad" into such a violation.
    """
    db = tmp_path / "p.db"
    sink = SQLiteSink(db)
    with contextlib.closing(sqlite3.connect(db)) as setup:
        setup.executescript(
            """
            CREATE TABLE parent (id INTEGER PRIMARY KEY);
            CREATE TABLE child (
                parent INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED
            );
            CREATE TRIGGER bad_kid AFTER INSERT ON payloads WHEN NEW.kid = 'bad'
            BEGIN INSERT INTO child (parent) VALUES (42); END;
            """
        )
    sink._db.execute("PRAGMA foreign_keys = ON")
    good, bad = record({"n": 1}), replace(record({"n": 2}), kid="bad")
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
        sink.write_batch([good, bad])
    later = record({"n": 3})
    sink.write_batch([later])  # before the fix: "cannot start a transaction within a transaction"
    sink.close()
    assert list(stored_rows(db)) == [later.id]


class ShortWrites:
    """`os` for the sinks module, whose writes stop halfway and then fail: a full disk."""

    def __init__(self) -> None:
        self.writes = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def write(self, fd: int, data: bytes) -> int:
        self.writes += 1
        if self.writes > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return os.write(fd, bytes(data)[: len(data) // 2])


def test_jsonl_sink_cuts_off_a_batch_that_failed_halfway(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "p.jsonl"
    sink = JSONLSink(path)
    first, failed, later = (record({"n": n, "pad": "x" * 100}) for n in range(3))
    sink.write_batch([first])
    size = path.stat().st_size
    with monkeypatch.context() as patch:
        patch.setattr(sinks_module, "os", ShortWrites())
        with pytest.raises(OSError, match="No space"):
            sink.write_batch([failed])
    assert path.stat().st_size == size  # the half line is gone
    sink.write_batch([later])
    sink.close()
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == [
        first.id,
        later.id,
    ]


def test_sqlite_sink_shared_by_two_writers(tmp_path: Path) -> None:
    """Two sinks on one file (as two worker processes have), each fed by its own thread."""
    db = tmp_path / "shared.db"
    sinks = [open_sink(f"sqlite:///{db}"), open_sink(f"sqlite:///{db}")]
    records = [record({"i": i}) for i in range(400)]

    def feed(which: int) -> None:
        mine = records[which::2]
        for start in range(0, len(mine), 10):
            sinks[which].write_batch(mine[start : start + 10])

    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(feed, [0, 1]))
    for sink in sinks:
        sink.close()
    rows = stored_rows(db)
    assert set(rows) == {r.id for r in records}
    assert sorted(row["payload"]["i"] for row in rows.values()) == list(range(400))


def test_sink_urls_and_sizes() -> None:
    assert parse_sink_url("sqlite:///payloads.db") == ("sqlite", Path("payloads.db"))
    assert parse_sink_url("sqlite:////var/lib/p.db") == ("sqlite", Path("/var/lib/p.db"))
    assert parse_sink_url("jsonl:///out/p.jsonl") == ("jsonl", Path("out/p.jsonl"))
    assert parse_sink_url("-") == ("stdout", None)
    for bad in ("mysql://x/y", "sqlite://", "sqlite:///", "payloads.db", "jsonl:/x"):
        with pytest.raises(SinkURLError):
            parse_sink_url(bad)
    assert parse_size("1048576") == 1048576
    assert parse_size("64MiB") == 64 * 1024 * 1024
    assert parse_size("10MB") == 10_000_000
    assert parse_size("512 KiB") == 512 * 1024
    assert parse_size("1g") == 1024**3
    assert parse_size("1.5KiB") == 1536
    for bad in ("", "0", "-5", "ten", "5 parsecs", "MiB"):
        with pytest.raises(InvalidArgumentError):
            parse_size(bad)


def test_create_app_refuses_bad_settings(tmp_path: Path, keys: JWKManager) -> None:
    with pytest.raises(SinkURLError):
        create_app(keys.get_private_jwks(), sink="nope://")
    with pytest.raises(InvalidArgumentError, match="max_body"):
        create_app(keys.get_private_jwks(), sink="-", max_body=0)
    with pytest.raises(InvalidArgumentError, match="no private key"):
        create_app(keys.get_public_jwks(), sink="-")
    public_file = tmp_path / "public.json"
    write_jwks(public_file, keys.get_public_jwks())
    with pytest.raises(InvalidArgumentError, match="no private key"):
        create_app(public_file, sink="-")
