"""The PostgreSQL sink: stateless receiver replicas writing to one shared database.

``--sink postgresql://user@host:5432/dbname`` (any libpq URL; a password belongs in
``~/.pgpass`` or ``PGPASSWORD``, not in a URL that shows up in process lists).

- On first start it creates its tables and indexes; ``request_crypto_schema`` records the
  schema version and later versions migrate (`MIGRATIONS`), under an advisory lock so replicas
  starting together do not race.
- Each batch is one multi-row ``INSERT ... SELECT FROM unnest(...)`` in one transaction;
  ``write_batch`` returns only after ``COMMIT``, so a ``202`` always means committed.
- ``payload`` is ``jsonb``; the rare JSON text jsonb cannot hold (a ``\\u0000`` or a lone
  surrogate escape in a string) goes to ``payload_raw`` (text) instead of failing the batch:
  read ``coalesce(payload::text, payload_raw)`` to see every payload.
- Exactly once per body: ``idempotency_key`` is unique. A body already stored (by this replica
  or another) is not stored again; its first id is returned, and so answered. Rows of a batch
  are inserted in key order, so two replicas never wait on each other's keys in a cycle.
- Replays (`replay`): a signed body's ``jti`` is claimed in a ``replays`` table in the same
  transaction, one ``INSERT ... ON CONFLICT`` per record in ``jti`` order, before any payload
  row: the conflict waits for a racing replica's commit and locks the row, so exactly one body
  keeps a ``jti``; the same ``jti`` in another body is not stored and answered as replayed.
- Faults: a lost connection (server restarting, failover) is retried once on a fresh
  connection, which is safe because the insert is idempotent; if that fails too, or no
  connection comes within `wait_timeout`, it raises `SinkUnavailableError` (the receiver
  answers ``503`` with ``Retry-After``). The pool (psycopg_pool) reconnects in the background.

psycopg 3 rather than asyncpg: the receiver writes one batch at a time from a synchronous
thread (the `Sink` protocol is synchronous so that SQLite, files and queues fit it), which
psycopg's blocking API and its thread-safe pool serve directly; asyncpg would need an event
loop of its own in each such thread. Needs the ``postgres`` extra (psycopg, psycopg_pool).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from ..errors import SinkUnavailableError
from .replay import replay_entry, replayed_marker
from .sinks import ROW_COLUMNS, ReceivedPayload, describe_postgres_url, stored_ids

__all__ = ["MIGRATIONS", "PostgresSink", "jsonb_can_hold"]

_logger = logging.getLogger("request_crypto.receiver")

#: Schema versions, in order: version N is the first N steps applied. Never edit a step that
#: has shipped; append one.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE payloads (
            id              text PRIMARY KEY,
            received_at     timestamptz NOT NULL,
            kid             text NOT NULL,
            format          text NOT NULL,
            payload         jsonb,
            payload_raw     text,
            idempotency_key text UNIQUE,
            signer_kid      text,
            signer_iss      text,
            jti             text,
            CHECK ((payload IS NULL) <> (payload_raw IS NULL))
        )""",
        "CREATE INDEX payloads_received_at ON payloads (received_at)",
    ),
    (
        """CREATE TABLE replays (
            jti      text PRIMARY KEY,
            body_key text NOT NULL,
            id       text NOT NULL,
            exp      double precision NOT NULL
        )""",
    ),
)
_SCHEMA_TABLE = (
    "CREATE TABLE IF NOT EXISTS request_crypto_schema ("
    " version integer NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
)
#: Any constant: replicas take this transaction-level lock while they migrate.
_MIGRATION_LOCK = 0x52435047
_INSERT = (
    f"INSERT INTO payloads ({ROW_COLUMNS}, payload_raw) SELECT * FROM unnest("  # noqa: S608
    "%s::text[], %s::timestamptz[], %s::text[], %s::text[], %s::jsonb[],"
    " %s::text[], %s::text[], %s::text[], %s::text[], %s::text[]) ON CONFLICT DO NOTHING"
)
_STORED = "SELECT idempotency_key, id FROM payloads WHERE idempotency_key = ANY(%s::text[])"
#: Claims a jti unless an unexpired entry holds it; the conflict path locks the row either way.
_CLAIM = (
    "INSERT INTO replays (jti, body_key, id, exp) VALUES (%s, %s, %s, %s)"
    " ON CONFLICT (jti) DO UPDATE SET body_key = EXCLUDED.body_key, id = EXCLUDED.id,"
    " exp = EXCLUDED.exp WHERE replays.exp <= %s RETURNING id"
)
_HOLDER = "SELECT body_key, id FROM replays WHERE jti = %s"


#: JSON escapes jsonb refuses: NUL, and UTF-16 surrogates (the serializer escapes only lone
#: ones; a payload's literal backslash text can match too, which only costs it the jsonb column).
_JSONB_REFUSES = re.compile(r"\\u(?:0000|[dD][89a-fA-F][0-9a-fA-F]{2})")


def jsonb_can_hold(payload_json: str | None) -> bool:
    """False for JSON text that ``jsonb`` refuses (it is then kept as text in `payload_raw`).

    Without this one such payload would fail its whole batch, again on every retry.
    """
    return payload_json is not None and _JSONB_REFUSES.search(payload_json) is None


def _claim(conn: psycopg.Connection[Any], records: Sequence[ReceivedPayload]) -> list[str | None]:
    """Inside the batch's transaction: each record's replay marker, or None to store it.

    Records are claimed in ``jti`` order (then batch order), so replicas lock ``replays`` rows
    in one order and never wait on each other in a cycle.
    """
    claims: list[str | None] = [None] * len(records)
    entries = [(entry, i) for i, r in enumerate(records) if (entry := replay_entry(r))]
    now = time.time()
    for (jti, body_key, exp), i in sorted(entries, key=lambda e: (e[0][0], e[1])):
        if conn.execute(_CLAIM, (jti, body_key, records[i].id, exp, now)).fetchone():
            continue
        holder = conn.execute(_HOLDER, (jti,)).fetchone()
        if holder is not None and holder[0] != body_key:
            claims[i] = replayed_marker(str(holder[1]))
    return claims


def _columns(records: Sequence[ReceivedPayload]) -> list[list[Any]]:
    """The `_INSERT` arrays for `records`, in key order, with `payload_raw` split off."""
    ordered = sorted(records, key=lambda r: r.idempotency_key or "")
    columns = [list(column) for column in zip(*(r.row() for r in ordered), strict=True)]
    payloads = columns[4]
    columns[4] = [p if jsonb_can_hold(p) else None for p in payloads]
    columns.append([None if p else raw for p, raw in zip(columns[4], payloads, strict=True)])
    return columns


def _reason(exc: psycopg.Error) -> str:
    """An error for the log: a connection error's text, else only its class and SQLSTATE.

    A data error's text can quote the payload, which the log must not hold.
    """
    if isinstance(exc, psycopg.OperationalError):
        return f"{type(exc).__name__}: {' '.join(str(exc).split())}"
    return f"{type(exc).__name__} (SQLSTATE {exc.sqlstate})"


class PostgresSink:
    """Payloads in a PostgreSQL table, one transaction per batch, exactly once per key."""

    def __init__(
        self,
        url: str,
        *,
        max_connections: int = 4,
        connect_timeout: float = 10.0,
        wait_timeout: float = 5.0,
    ) -> None:
        """Connect (failing after `connect_timeout` s) and create or migrate the schema.

        `wait_timeout`: how long a batch waits for a connection before it is refused (503).
        """
        self.url = url
        self.wait_timeout = wait_timeout
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=max_connections,
            open=False,
            timeout=wait_timeout,
            kwargs={"connect_timeout": max(1, round(connect_timeout))},
            name="request-crypto-sink",
        )
        try:
            # One plain connection first: it fails fast with libpq's own reason (refused,
            # unknown database, authentication), where the pool would retry and log.
            psycopg.connect(url, connect_timeout=max(1, round(connect_timeout))).close()
            self._pool.open(wait=True, timeout=connect_timeout)
            self.schema_version = self._migrate()
        except psycopg.Error as exc:
            self._pool.close()
            raise SinkUnavailableError(
                f"{describe_postgres_url(url)}: cannot connect or create the tables "
                f"({_reason(exc)})"
            ) from None

    def _migrate(self) -> int:
        with self._pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            conn.execute(_SCHEMA_TABLE)
            row = conn.execute("SELECT max(version) FROM request_crypto_schema").fetchone()
            version = int(row[0]) if row and row[0] is not None else 0
            for number, step in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in step:
                    conn.execute(statement.encode())
                conn.execute("INSERT INTO request_crypto_schema (version) VALUES (%s)", (number,))
                _logger.info("PostgreSQL sink: schema migrated to version %d", number)
        return len(MIGRATIONS)

    def write_batch(self, records: Sequence[ReceivedPayload]) -> list[str]:
        """Insert `records` in one transaction; return each record's stored id.

        A replayed record (its jti held by another body) is not stored; its id is
        `replayed_marker` of the first body's id.
        """
        keys = sorted({r.idempotency_key for r in records if r.idempotency_key is not None})
        for attempt in (1, 2):
            try:
                with self._pool.connection() as conn, conn.transaction():
                    claims = _claim(conn, records)
                    kept = [r for r, claim in zip(records, claims, strict=True) if claim is None]
                    if kept:
                        conn.execute(_INSERT, _columns(kept))
                    rows = conn.execute(_STORED, (keys,)).fetchall() if keys else []
                first: dict[str, str] = dict(rows)
                ids = stored_ids(records, first)
                return [claim or id_ for claim, id_ in zip(claims, ids, strict=True)]
            except psycopg.OperationalError as exc:
                # A connection lost mid-batch (or a deadlock/serialization abort): the insert
                # is idempotent, so one retry on a fresh connection is safe even if the
                # first COMMIT did land.
                if attempt == 2:
                    raise SinkUnavailableError(f"PostgreSQL: {_reason(exc)}") from None
                _logger.warning("PostgreSQL sink: %s; retrying the batch once", _reason(exc))
            except psycopg.Error as exc:
                reason = _reason(exc)
                raise SinkUnavailableError(f"PostgreSQL refused the batch: {reason}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def ready(self) -> bool:
        """True when a connection answers ``SELECT 1`` within a second."""
        try:
            with self._pool.connection(timeout=1.0) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error:
            return False
        return True

    def close(self) -> None:
        """Close every connection."""
        self._pool.close()

    def __repr__(self) -> str:
        return f"PostgresSink({describe_postgres_url(self.url)!r})"
