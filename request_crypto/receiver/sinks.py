"""Where accepted payloads go: a small protocol, three built-in sinks, and URLs to pick one.

The receiver hands every accepted payload to one writer thread, which groups whatever is waiting
into a batch and calls ``sink.write_batch(records)``. A sink must have made the whole batch
durable when that call returns, because each request's ``202`` is sent only afterwards; if it
raises, every request of the batch is answered ``503`` and nothing of it counts as accepted.
Calls never overlap (one writer thread per process), so a sink needs no locking of its own,
but with several worker processes each has its own sink instance.

Built in, chosen by URL (the path after ``scheme://`` starts with ``/``, as in SQLAlchemy:
``sqlite:///payloads.db`` is relative to the working directory, ``sqlite:////var/lib/x.db``
is absolute):

- ``sqlite:///PATH``: the default. One table ``payloads(id, received_at, kid, format,
  payload)``, WAL mode, ``synchronous=FULL``, one transaction per batch. Several worker
  processes may share one file.
- ``jsonl:///PATH``: one JSON object per line, appended; each batch is written, flushed and
  fsynced under an exclusive ``flock``, so several processes can share the file. A batch that
  fails halfway is cut off again, so the file never ends in a partial line.

Both files hold decrypted payloads: a new one is created with mode 0600 (SQLite gives its
``-wal`` and ``-shm`` files the database file's mode), whatever the umask. An existing file
keeps its mode.
- ``-``: one JSON object per line on standard output, flushed per batch.

Stdlib only: importing this module needs no server dependency.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol, runtime_checkable

from ..errors import InvalidArgumentError
from ..jwks import JWKMetadata

__all__ = [
    "DEFAULT_SINK",
    "JSONLSink",
    "ReceivedPayload",
    "SQLiteSink",
    "Sink",
    "SinkURLError",
    "StdoutSink",
    "describe_sink",
    "open_sink",
    "parse_sink_url",
]

DEFAULT_SINK = "sqlite:///payloads.db"
#: Sink files hold decrypted payloads: only their owner may read them.
PRIVATE_FILE_MODE = 0o600

_SCHEMA = """
CREATE TABLE IF NOT EXISTS payloads (
    id          TEXT PRIMARY KEY,
    received_at TEXT NOT NULL,
    kid         TEXT NOT NULL,
    format      TEXT NOT NULL,
    payload     TEXT NOT NULL
)
"""
_INDEX = "CREATE INDEX IF NOT EXISTS payloads_received_at ON payloads (received_at)"
_INSERT = "INSERT INTO payloads (id, received_at, kid, format, payload) VALUES (?, ?, ?, ?, ?)"


class SinkURLError(InvalidArgumentError):
    """A sink URL names no known sink or no path."""


@dataclass(frozen=True)
class ReceivedPayload:
    """One accepted payload, as the receiver hands it to a sink.

    `payload_json` is the payload serialized once, compactly (as JavaScript's JSON.stringify
    would write it); sinks store that text rather than serializing `payload` again.
    """

    id: str
    received_at: str
    kid: str
    format: str
    size: int
    payload: Any = field(repr=False)
    payload_json: str = field(repr=False)
    metadata: JWKMetadata = field(repr=False)

    def to_json_line(self) -> str:
        """The record as one line of JSON (``id, received_at, kid, format, payload``) + ``\\n``."""
        head = json.dumps(
            {
                "id": self.id,
                "received_at": self.received_at,
                "kid": self.kid,
                "format": self.format,
            },
            separators=(",", ":"),
            ensure_ascii=False,
        )
        return f'{head[:-1]},"payload":{self.payload_json}}}\n'


@runtime_checkable
class Sink(Protocol):
    """What the receiver needs from a place to put payloads.

    ``write_batch`` is called from one thread at a time with one or more records and must not
    return before they are durable (committed, fsynced, acknowledged by the queue...); raising
    rejects the whole batch. ``close`` is called once, after the last batch.
    """

    def write_batch(self, records: Sequence[ReceivedPayload]) -> None: ...

    def close(self) -> None: ...


class SQLiteSink:
    """Payloads in one SQLite table, WAL mode, one committed transaction per batch."""

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 30.0) -> None:
        self.path = Path(path)
        try:
            # Created 0600 before SQLite sees it: SQLite would create it 0644 (less the umask),
            # and creates the -wal and -shm files with the database file's mode.
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE))
        except OSError as exc:
            raise InvalidArgumentError(
                f"{self.path}: cannot open the SQLite file ({exc.strerror or exc})"
            ) from None
        try:
            # One writer thread uses the connection, but not the thread that opened it.
            self._db = sqlite3.connect(
                self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise InvalidArgumentError(
                f"{self.path}: cannot open the SQLite file ({exc})"
            ) from None
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit is on disk when write_batch returns, also across a power cut.
            self._db.execute("PRAGMA synchronous=FULL")
            with self._transaction():
                self._db.execute(_SCHEMA)
                self._db.execute(_INDEX)
        except sqlite3.Error as exc:
            self._db.close()
            raise InvalidArgumentError(
                f"{self.path}: cannot use it as the payload database ({exc})"
            ) from None

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        # BEGIN IMMEDIATE takes the write lock up front, so several processes queue on the
        # busy timeout instead of failing halfway through a batch.
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            # A failed COMMIT (I/O error, busy) can leave the transaction open, and every
            # later BEGIN would fail: roll back so the next batch starts clean.
            if self._db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
            raise

    def write_batch(self, records: Sequence[ReceivedPayload]) -> None:
        with self._transaction():
            self._db.executemany(
                _INSERT,
                [(r.id, r.received_at, r.kid, r.format, r.payload_json) for r in records],
            )

    def close(self) -> None:
        self._db.close()

    def __repr__(self) -> str:
        return f"SQLiteSink({str(self.path)!r})"


class JSONLSink:
    """Payloads appended as JSON lines; each batch written, flushed and fsynced under a lock."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, PRIVATE_FILE_MODE)
        except OSError as exc:
            raise InvalidArgumentError(
                f"{self.path}: cannot open for appending ({exc.strerror})"
            ) from None

    def write_batch(self, records: Sequence[ReceivedPayload]) -> None:
        data = "".join(r.to_json_line() for r in records).encode("utf-8")
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            end = os.fstat(self._fd).st_size  # stable: every writer holds the lock
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(self._fd, view) :]
                os.fsync(self._fd)
            except BaseException:
                # The batch is answered 503 and will be sent again: leave none of it behind.
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, end)
                raise
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        os.close(self._fd)

    def __repr__(self) -> str:
        return f"JSONLSink({str(self.path)!r})"


class StdoutSink:
    """Payloads as UTF-8 JSON lines on a binary stream (standard output by default).

    Each batch is one write followed by a flush.
    """

    def __init__(self, stream: IO[bytes] | None = None) -> None:
        self._stream = stream if stream is not None else sys.stdout.buffer

    def write_batch(self, records: Sequence[ReceivedPayload]) -> None:
        self._stream.write("".join(r.to_json_line() for r in records).encode("utf-8"))
        self._stream.flush()

    def close(self) -> None:
        self._stream.flush()

    def __repr__(self) -> str:
        return "StdoutSink()"


def parse_sink_url(url: str) -> tuple[str, Path | None]:
    """Split a sink URL into its kind (``sqlite``, ``jsonl``, ``stdout``) and path."""
    if url == "-":
        return "stdout", None
    for scheme in ("sqlite", "jsonl"):
        prefix = f"{scheme}://"
        if url.startswith(prefix):
            rest = url[len(prefix) :]
            if not rest.startswith("/") or len(rest) < 2:
                raise SinkURLError(
                    f"sink {url!r} has no path: write {scheme}:///relative/file or "
                    f"{scheme}:////absolute/file"
                )
            return scheme, Path(rest[1:])
    raise SinkURLError(
        f"sink {url!r} is unknown: use sqlite:///PATH.db, jsonl:///PATH.jsonl or - (stdout)"
    )


def open_sink(url: str) -> Sink:
    """Open the built-in sink a URL names (see the module docstring)."""
    kind, path = parse_sink_url(url)
    if kind == "sqlite":
        assert path is not None
        return SQLiteSink(path)
    if kind == "jsonl":
        assert path is not None
        return JSONLSink(path)
    return StdoutSink()


def describe_sink(url: str) -> str:
    """Where a sink URL puts payloads, for a person: ``SQLite file /abs/payloads.db``."""
    kind, path = parse_sink_url(url)
    if path is None:
        return "standard output (JSON lines)"
    where = path.resolve()
    return f"SQLite file {where}" if kind == "sqlite" else f"JSON-lines file {where}"
