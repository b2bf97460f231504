"""Where accepted payloads go: a small protocol, three built-in sinks, and URLs to pick one.

The receiver hands every accepted payload to its sink writer, which groups whatever is waiting
into a batch and calls ``sink.write_batch(records)``. A sink must have made the whole batch
durable when that call returns, because each request's ``202`` is sent only afterwards; if it
raises, every request of the batch is answered ``503`` and nothing of it counts as accepted.
Calls never overlap (one batch at a time per process), so a sink needs no locking of its own,
but they come from whichever decrypt thread leads the commit, not always the same thread (no
thread-local state), and with several worker processes each has its own sink instance.

Built in, chosen by URL (the path after ``scheme://`` starts with ``/``, as in SQLAlchemy:
``sqlite:///payloads.db`` is relative to the working directory, ``sqlite:////var/lib/x.db``
is absolute):

- ``sqlite:///PATH``: the default. One table ``payloads(id, received_at, kid, format,
  payload, idempotency_key, signer_kid, signer_iss, jti)``, WAL mode, ``synchronous=FULL``,
  one transaction per batch. Several worker processes may share one file. The idempotency
  key is unique: a body stored again (a sender's retry) keeps its first row and id. The
  schema version is SQLite's ``user_version``; older files are migrated when opened. Signed
  bodies' ``jti``s live in a ``replays`` table of the same file (`replay`).
- ``postgresql://...``: PostgreSQL, for replicas on several machines
  (`request_crypto.receiver.postgres`; needs the ``postgres`` extra).
- ``jsonl:///PATH``: one JSON object per line, appended; each batch is written, flushed and
  fsynced under an exclusive ``flock``, so several processes can share the file. A batch that
  fails halfway is cut off again, so the file never ends in a partial line. Signed bodies'
  jtis go to ``PATH.replays.db`` beside it (`replay.FileReplays`): a signed body's retry is
  stored once, an unsigned one again.
- ``jsonl:///DIR/?seal=PUBLIC_SET[&max_file_size=16MiB]``: the same lines in sealed files
  that only the archive's private set opens, one or more complete files per batch
  (`request_crypto.receiver.archive`).

Both files hold decrypted payloads: a new one is created with mode 0600 (SQLite gives its
``-wal`` and ``-shm`` files the database file's mode), whatever the umask; 0600, not 0640,
because no group needs to read payloads that the receiver's user cannot hand on itself.
The receiver may write into a directory others can write to (``/tmp``, a shared volume),
so a file is opened without following a link anywhere in its path, and an existing file (or
SQLite's ``-wal``, ``-shm``, ``-journal`` next to it) is refused unless it is a regular file
with one link, owned by this process's user (or root), and not writable by group or others:
anyone who could change it could read or forge the payloads. Refusing is safer than a warning
nobody reads; an existing file readable by group or others is used, with a warning.
- ``-``: one JSON object per line on standard output, flushed per batch.

Every ``write_batch`` returns the id stored for each record: its own, or, when a record with
the same idempotency key was stored before, that first record's id, which the receiver
answers so a retried body gets the id it got the first time. The JSON-lines sinks cannot
look back in their files: they find a signed body's retry through its jti (`replay`) and
store it once, but store every copy of an unsigned body (at least once).

Stdlib only: importing this module needs no server dependency.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import sqlite3
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol, runtime_checkable
from urllib.parse import parse_qsl, urlsplit

from ..errors import InvalidArgumentError
from ..keys.source import JWKMetadata
from ..limits import format_size, parse_size
from ._sinkfiles import connect_private_sqlite, open_sink_file, sqlite_transaction
from .replay import REPLAY_SCHEMA, FileReplays, MemoryReplays, claim_sqlite, replayed_id

__all__ = [
    "DEFAULT_SINK",
    "JSONLSink",
    "ReceivedPayload",
    "SQLiteSink",
    "Sink",
    "SinkURLError",
    "StdoutSink",
    "SupportsReady",
    "describe_postgres_url",
    "describe_sink",
    "idempotency_key",
    "open_sink",
    "parse_sink_url",
    "stored_ids",
]

DEFAULT_SINK = "sqlite:///payloads.db"
#: The most plaintext bytes one sealed archive file holds (a larger batch is split).
DEFAULT_ARCHIVE_FILE_SIZE = 16 * 1024 * 1024
#: Where a JSON-lines file's signed-body jtis are kept: ``PATH`` + this, beside it.
REPLAYS_SUFFIX = ".replays.db"
#: URL prefixes of the PostgreSQL sink (libpq accepts both).
POSTGRES_SCHEMES = ("postgresql://", "postgres://")

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
#: Schema changes after the first table, in order; a file's ``user_version`` counts those applied.
_SQLITE_MIGRATIONS = (
    (
        "ALTER TABLE payloads ADD COLUMN idempotency_key TEXT",
        "ALTER TABLE payloads ADD COLUMN signer_kid TEXT",
        "ALTER TABLE payloads ADD COLUMN signer_iss TEXT",
        "ALTER TABLE payloads ADD COLUMN jti TEXT",
        "CREATE UNIQUE INDEX payloads_idempotency_key ON payloads (idempotency_key)",
    ),
)
#: The columns `ReceivedPayload.row` gives, as the database sinks name them.
ROW_COLUMNS = "id, received_at, kid, format, payload, idempotency_key, signer_kid, signer_iss, jti"
_INSERT = (
    f"INSERT INTO payloads ({ROW_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"  # noqa: S608
    " ON CONFLICT (idempotency_key) DO NOTHING"
)
_STORED_IDS = (
    "SELECT idempotency_key, id FROM payloads"
    " WHERE idempotency_key IN (SELECT value FROM json_each(?))"
)


def idempotency_key(body: bytes) -> str:
    """A body's idempotency key: the hex SHA-256 of its bytes, as received.

    The same body sent twice (a retry after a lost answer) has the same key, and the sinks
    that keep keys store it once. Two different encryptions of one payload differ (fresh
    AES keys and IVs), so a sender that means "again" resends the same bytes.
    """
    return hashlib.sha256(body).hexdigest()


def stored_ids(records: Sequence[ReceivedPayload], first_ids: dict[str, str]) -> list[str]:
    """Each record's stored id: the id first stored under its key (`first_ids`), or its own."""
    return [
        first_ids.get(r.idempotency_key, r.id) if r.idempotency_key is not None else r.id
        for r in records
    ]


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
    #: `idempotency_key(body)`, or a signed body's ``jti``; None: never deduplicated.
    idempotency_key: str | None = None
    #: Who signed the body (the signed-bodies feature), when it was signed.
    signer_kid: str | None = None
    signer_iss: str | None = None
    jti: str | None = None
    #: The signed token's `exp` (seconds since the epoch): how long its `jti` is remembered.
    jti_exp: float | None = None

    def row(self) -> tuple[str | None, ...]:
        """The stored columns, in `ROW_COLUMNS` order (what the database sinks insert)."""
        return (
            self.id,
            self.received_at,
            self.kid,
            self.format,
            self.payload_json,
            self.idempotency_key,
            self.signer_kid,
            self.signer_iss,
            self.jti,
        )

    def to_json_line(self) -> str:
        """The record as one line of JSON (``id, received_at, kid, format, payload``) + ``\\n``."""
        fields: dict[str, Any] = {
            "id": self.id,
            "received_at": self.received_at,
            "kid": self.kid,
            "format": self.format,
        }
        if self.signer_kid is not None:
            fields["signer"] = {"kid": self.signer_kid, "iss": self.signer_iss, "jti": self.jti}
        head = json.dumps(
            fields,
            separators=(",", ":"),
            ensure_ascii=False,
        )
        return f'{head[:-1]},"payload":{self.payload_json}}}\n'


@runtime_checkable
class Sink(Protocol):
    """What the receiver needs from a place to put payloads.

    ``write_batch`` is called by one thread at a time (not always the same) with one or more
    records and must not
    return before they are durable (committed, fsynced, acknowledged by the queue...); raising
    rejects the whole batch (raise `SinkUnavailableError` for "down, retry later"). It returns
    the id stored for each record, in order (see the module docstring), or None when every
    record was stored under its own id. ``close`` is called once, after the last batch.
    """

    def write_batch(self, records: Sequence[ReceivedPayload]) -> Sequence[str] | None:
        """Store `records` durably, all or none; return each record's stored id."""
        ...

    def close(self) -> None:
        """Release the sink's resources; no write follows."""
        ...


@runtime_checkable
class SupportsReady(Protocol):
    """A sink that can tell whether it could store a batch now (for ``/readyz``)."""

    def ready(self) -> bool:
        """True when the sink's backend answers now; quick, and never raises."""
        ...


class SQLiteSink:
    """Payloads in one SQLite table, WAL mode, one committed transaction per batch."""

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 30.0) -> None:
        self.path = Path(path)
        self._db = connect_private_sqlite(self.path, "payload database", busy_timeout)
        try:
            with self._transaction():
                self._db.execute(_SCHEMA)
                self._db.execute(_INDEX)
                version = self._db.execute("PRAGMA user_version").fetchone()[0]
                for step in _SQLITE_MIGRATIONS[version:]:
                    for statement in step:
                        self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {len(_SQLITE_MIGRATIONS)}")
                self._db.execute(REPLAY_SCHEMA)
        except sqlite3.Error as exc:
            self._db.close()
            raise InvalidArgumentError(
                f"{self.path}: cannot use it as the payload database ({exc})"
            ) from None

    def _transaction(self) -> contextlib.AbstractContextManager[None]:
        return sqlite_transaction(self._db)

    def write_batch(self, records: Sequence[ReceivedPayload]) -> list[str]:
        """Insert `records` in one transaction; a known idempotency key keeps its first row.

        A batch of retries only (every record unsigned and its key stored before) is answered
        from one read, without a write transaction: inserting would change nothing. A retry
        storm (senders resending bodies whose answers were lost) then costs one statement per
        batch rather than four.
        """
        keys = [r.idempotency_key for r in records if r.idempotency_key is not None]
        if len(keys) == len(records) and all(r.jti is None for r in records):
            first = dict(self._db.execute(_STORED_IDS, (json.dumps(keys),)))
            if len(first) == len(set(keys)):
                return stored_ids(records, first)
        with self._transaction():
            # Signed bodies' jtis. A retry (a claim naming its first id) is found, like an
            # unsigned one, by its unique idempotency key: the payloads table has the last word.
            replays = [
                claim if claim is not None and replayed_id(claim) is not None else None
                for claim in (claim_sqlite(self._db, r) for r in records)
            ]
            rows = [r.row() for r, replay in zip(records, replays, strict=True) if replay is None]
            inserted = self._db.executemany(_INSERT, rows).rowcount
            # Every row inserted: no key was known, each record keeps its own id.
            known = keys and inserted != len(rows)
            first = dict(self._db.execute(_STORED_IDS, (json.dumps(keys),))) if known else {}
        ids = stored_ids(records, first)
        return [replay or id_ for replay, id_ in zip(replays, ids, strict=True)]

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def __repr__(self) -> str:
        return f"SQLiteSink({str(self.path)!r})"


class JSONLSink:
    """Payloads appended as JSON lines; each batch written, flushed and fsynced under a lock.

    Signed bodies' jtis go to ``PATH.replays.db`` beside the file (`replay.FileReplays`), so
    a signed body's retry is answered with its first id and not appended again.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd = open_sink_file(self.path, os.O_WRONLY | os.O_APPEND, "for appending")
        self._replays = FileReplays(self.path.with_name(self.path.name + REPLAYS_SUFFIX))

    def write_batch(self, records: Sequence[ReceivedPayload]) -> list[str]:
        """Append `records` as JSON lines in one locked write, then fsync."""
        with self._replays.claiming(records) as replays:
            data = json_lines(records, replays).encode("utf-8")
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
        return own_ids(records, replays)

    def close(self) -> None:
        """Close the file (and the replays file)."""
        os.close(self._fd)
        self._replays.close()

    def __repr__(self) -> str:
        return f"JSONLSink({str(self.path)!r})"


def json_lines(records: Sequence[ReceivedPayload], replays: Sequence[str | None]) -> str:
    """The JSON lines of the records to store: those whose jti claim said nothing.

    `replays` holds each record's claim (`replay.claim_sqlite`): a retry's first id or a
    replay's marker, neither stored.
    """
    return "".join(
        r.to_json_line() for r, replay in zip(records, replays, strict=True) if not replay
    )


def own_ids(records: Sequence[ReceivedPayload], replays: Sequence[str | None]) -> list[str]:
    """What a JSON-lines sink returns: a record's claim (first id or marker), or its own id."""
    return [replay or r.id for r, replay in zip(records, replays, strict=True)]


class StdoutSink:
    """Payloads as UTF-8 JSON lines on a binary stream (standard output by default).

    Each batch is one write followed by a flush.
    """

    def __init__(self, stream: IO[bytes] | None = None) -> None:
        self._stream = stream if stream is not None else sys.stdout.buffer
        self._replays = MemoryReplays()

    def write_batch(self, records: Sequence[ReceivedPayload]) -> list[str]:
        """Write `records` as JSON lines and flush."""
        with self._replays.claiming(records) as replays:
            self._stream.write(json_lines(records, replays).encode("utf-8"))
            self._stream.flush()
        return own_ids(records, replays)

    def close(self) -> None:
        """Flush; standard output itself stays open."""
        self._stream.flush()

    def __repr__(self) -> str:
        return "StdoutSink()"


def parse_sink_url(url: str) -> tuple[str, Path | None]:
    """Split a sink URL into its kind (sqlite, jsonl, archive, postgresql, stdout) and path.

    ``archive`` is a ``jsonl`` URL with ``?seal=``; its path is the archive directory.
    """
    if url == "-":
        return "stdout", None
    if url.startswith(POSTGRES_SCHEMES):
        return "postgresql", None
    for scheme in ("sqlite", "jsonl"):
        prefix = f"{scheme}://"
        if url.startswith(prefix):
            rest, question, _query = url[len(prefix) :].partition("?")
            if not rest.startswith("/") or len(rest) < 2:
                raise SinkURLError(
                    f"sink {url!r} has no path: write {scheme}:///relative/file or "
                    f"{scheme}:////absolute/file"
                )
            if question and (scheme != "jsonl" or archive_settings(url) is None):
                raise SinkURLError(f"sink {url!r}: only a jsonl:// sink takes ?seal=PUBLIC_SET")
            return ("archive" if question else scheme), Path(rest[1:])
    raise SinkURLError(
        f"sink {url!r} is unknown: use sqlite:///PATH.db, jsonl:///PATH.jsonl, "
        "jsonl:///DIR/?seal=PUBLIC_SET, postgresql://USER@HOST/DB or - (stdout)"
    )


@dataclass(frozen=True)
class ArchiveSettings:
    """What a ``jsonl:///DIR/?seal=PUBLIC_SET[&max_file_size=SIZE]`` URL asks for."""

    directory: Path
    seal: Path
    max_file_size: int = DEFAULT_ARCHIVE_FILE_SIZE


def archive_settings(url: str) -> ArchiveSettings | None:
    """The sealed archive a ``jsonl://`` URL with a query names; None without a query."""
    rest, question, query = url.removeprefix("jsonl://").partition("?")
    if not question or not url.startswith("jsonl://"):
        return None
    try:
        options = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=True))
    except ValueError:
        options = {}
    unknown = sorted(set(options) - {"seal", "max_file_size"})
    if unknown or not options.get("seal") or not rest.startswith("/") or len(rest) < 2:
        raise SinkURLError(
            f"sink {url!r} is not understood: a sealed archive is "
            "jsonl:///DIR/?seal=PUBLIC_SET (optionally &max_file_size=16MiB)"
            + (f"; unknown option {', '.join(unknown)}" if unknown else "")
        )
    settings = ArchiveSettings(Path(rest[1:]), Path(options["seal"]))
    if "max_file_size" in options:
        size = parse_size(options["max_file_size"])  # InvalidArgumentError, with the rule
        if size < 1:
            raise SinkURLError(f"sink {url!r}: max_file_size must be at least 1 byte")
        settings = dataclasses.replace(settings, max_file_size=size)
    return settings


def open_sink(url: str) -> Sink:
    """Open the built-in sink a URL names (see the module docstring)."""
    kind, path = parse_sink_url(url)
    if kind == "sqlite":
        assert path is not None
        return SQLiteSink(path)
    if kind == "jsonl":
        assert path is not None
        return JSONLSink(path)
    if kind == "archive":
        from .archive import ArchiveSink  # noqa: PLC0415 (it imports this module)

        settings = archive_settings(url)
        assert settings is not None
        return ArchiveSink(settings.directory, settings.seal, max_file_size=settings.max_file_size)
    if kind == "postgresql":
        return _open_postgres(url)
    return StdoutSink()


def _open_postgres(url: str) -> Sink:
    """A `PostgresSink`, or an error naming the extra it needs."""
    try:
        from .postgres import PostgresSink  # noqa: PLC0415
    except ImportError as exc:
        raise SinkURLError(
            f"a postgresql:// sink needs psycopg ({exc.name} is missing): "
            "pip install 'request_crypto[postgres]'"
        ) from None
    return PostgresSink(url)


def describe_postgres_url(url: str) -> str:
    """Where a ``postgresql://`` URL points, without user or password."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "the local socket"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "PostgreSQL (an unreadable URL)"
    database = parts.path.lstrip("/") or "(default)"
    return f"PostgreSQL database {database} at {host}{port}"


def describe_sink(url: str) -> str:
    """Where a sink URL puts payloads, for a person: ``SQLite file /abs/payloads.db``."""
    kind, path = parse_sink_url(url)
    if kind == "postgresql":
        return describe_postgres_url(url)
    if path is None:
        return "standard output (JSON lines)"
    where = path.resolve()
    if kind == "archive":
        settings = archive_settings(url)
        assert settings is not None
        return (
            f"sealed archive {where} (JSON lines sealed to the keys of "
            f"{settings.seal.resolve()}, files up to {format_size(settings.max_file_size)})"
        )
    return f"SQLite file {where}" if kind == "sqlite" else f"JSON-lines file {where}"
