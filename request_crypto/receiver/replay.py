"""Replays of signed bodies: a token's `jti` is accepted in one body only, until it expires.

A signed body's JWT carries a random `jti` and an `exp`. Every body has an idempotency key
(the SHA-256 of its bytes, `sinks.idempotency_key`). The sink remembers each `jti` with the
key of the body that brought it, its id and the token's `exp`, in the same transaction that
stores the payload (a ``replays`` table of the SQLite file), so every worker sees it and a
restart keeps it. Claiming a record's jti (`claim_sqlite`) gives one of three answers:

- None: a new jti, claimed now; store the record;
- the first id: the very same body again (a retry whose answer was lost), not stored again
  and answered ``202`` with that id; the SQLite and PostgreSQL sinks also find it by the
  payload's unique idempotency key, the JSON-lines sinks only here;
- ``replayed_marker(first id)``: the jti inside a *different* body, a replay; the sink stores
  nothing and the receiver answers ``409``.

The claim is made while the batch is written and holds the table's write lock until the batch
is durable, so a copy of the body in the same batch, or in a batch of another worker written
meanwhile, sees the first claim and is not stored twice; and a batch that failed leaves no jti
behind, so its retry is stored. An expired token never reaches the sink (it is refused as
expired), so entries are dropped once their `exp` has passed.

The PostgreSQL sink keeps them in a ``replays`` table of its database, in the batch's
transaction (`postgres`), so every replica sees them. The JSON-lines sinks (plain and sealed
archive) have no database: they keep the same table in a small SQLite file of their own
(`FileReplays`: ``PATH.replays.db`` beside a JSON-lines file, ``replays.db`` in an archive
directory), opened on the first signed body; its transaction stays open while the batch is
written and commits only once the batch is durable (a crash between the two leaves a stored
payload whose jti is forgotten, so its retry would be stored again: at least once). The
standard-output sink keeps them in memory (`MemoryReplays`): one process, lost on restart.
Unsigned bodies have no jti: the JSON-lines and standard-output sinks store each copy.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._sinkfiles import connect_private_sqlite, sqlite_transaction

if TYPE_CHECKING:
    from ..nested import SignerInfo
    from .sinks import ReceivedPayload

__all__ = [
    "REPLAY_SCHEMA",
    "FileReplays",
    "MemoryReplays",
    "claim_sqlite",
    "held_by",
    "replay_entry",
    "replayed_id",
    "replayed_marker",
    "signer_fields",
]

REPLAY_SCHEMA = """
CREATE TABLE IF NOT EXISTS replays (
    jti      TEXT PRIMARY KEY,
    body_key TEXT NOT NULL,
    id       TEXT NOT NULL,
    exp      REAL NOT NULL
)
"""
_MARKER = "replayed:"
#: A token without `exp` is never accepted (the verifier requires one); this is a fallback.
_DEFAULT_LIFETIME = 3600.0


def signer_fields(signer: SignerInfo | None) -> dict[str, Any]:
    """`ReceivedPayload`'s signer fields for a verified signer (empty for an unsigned body)."""
    if signer is None:
        return {}
    return {
        "signer_kid": signer.kid,
        "signer_iss": signer.iss,
        "jti": signer.jti,
        "jti_exp": signer.exp,
    }


def replayed_marker(first_id: str) -> str:
    """What a sink returns, as a record's stored id, for a replayed record (not stored)."""
    return _MARKER + first_id


def replayed_id(stored: str) -> str | None:
    """The first id a replayed record's token came with, or None for a stored record."""
    return stored[len(_MARKER) :] if stored.startswith(_MARKER) else None


def held_by(holder_key: str, first_id: str, body_key: str) -> str:
    """A claimed jti's answer: the first id for the very same body, else its replay marker."""
    return first_id if holder_key == body_key else replayed_marker(first_id)


def replay_entry(record: ReceivedPayload) -> tuple[str, str, float] | None:
    """The record's ``(jti, body_key, exp)`` to remember, or None if it has nothing to check."""
    if record.jti is None or record.idempotency_key is None:
        return None
    exp = record.jti_exp if record.jti_exp is not None else time.time() + _DEFAULT_LIFETIME
    return record.jti, record.idempotency_key, exp


def claim_sqlite(db: sqlite3.Connection, record: ReceivedPayload) -> str | None:
    """Inside the sink's transaction: claim the record's jti (None), or say whose it is.

    A jti held by the very same body gives that body's first id (a retry), one held by
    another body its `replayed_marker`.
    """
    entry = replay_entry(record)
    if entry is None:
        return None
    jti, body_key, exp = entry
    now = time.time()
    row = db.execute(
        "SELECT body_key, id FROM replays WHERE jti = ? AND exp > ?", (jti, now)
    ).fetchone()
    if row is not None:
        return held_by(str(row[0]), str(row[1]), body_key)
    db.execute("DELETE FROM replays WHERE exp <= ?", (now,))
    db.execute(
        "INSERT OR REPLACE INTO replays (jti, body_key, id, exp) VALUES (?, ?, ?, ?)",
        (jti, body_key, record.id, exp),
    )
    return None


class FileReplays:
    """The replays table in a SQLite file of its own, for the JSON-lines sinks.

    Opened (created 0600) on the first batch holding a signed body, so a receiver that never
    verifies signatures makes no such file. Several processes may share it.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db: sqlite3.Connection | None = None

    @contextlib.contextmanager
    def claiming(self, records: Sequence[ReceivedPayload]) -> Iterator[list[str | None]]:
        """Claim the records' jtis; yield each record's `claim_sqlite` answer (None: store it).

        A record answered with an id (a retry) or a marker (a replay) is not stored. The claims
        are made in batch order under the file's write lock, held until the block ends, so
        another process's copy of a body waits for this batch. They commit when the block ends
        without an error (the batch is durable), and are rolled back otherwise. A batch
        without signed bodies touches no file.
        """
        if not any(replay_entry(record) for record in records):
            yield [None] * len(records)
            return
        if self._db is None:
            db = connect_private_sqlite(self.path, "replays file")
            try:
                db.execute(REPLAY_SCHEMA)
            except sqlite3.Error:
                db.close()
                raise
            self._db = db
        with sqlite_transaction(self._db):
            yield [claim_sqlite(self._db, record) for record in records]

    def close(self) -> None:
        """Close the file, if it was opened."""
        if self._db is not None:
            self._db.close()
            self._db = None


class MemoryReplays:
    """The same rule in this process's memory (the standard-output sink)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[str, tuple[str, str, float]] = {}

    @contextlib.contextmanager
    def claiming(self, records: Sequence[ReceivedPayload]) -> Iterator[list[str | None]]:
        """`FileReplays.claiming` in memory: the claims made here are undone if the block fails."""
        added: list[str] = []
        claimed = [self.claim(record, added) for record in records]
        try:
            yield claimed
        except BaseException:
            with self._lock:
                for jti in added:
                    self._seen.pop(jti, None)
            raise

    def claim(self, record: ReceivedPayload, added: list[str] | None = None) -> str | None:
        """Remember the record's jti (noted in `added`), or answer as `claim_sqlite` does."""
        entry = replay_entry(record)
        if entry is None:
            return None
        jti, body_key, exp = entry
        now = time.time()
        with self._lock:
            if len(self._seen) > 100_000:
                self._seen = {k: v for k, v in self._seen.items() if v[2] > now}
            seen = self._seen.get(jti)
            if seen is not None and seen[2] > now:
                return held_by(seen[0], seen[1], body_key)
            self._seen[jti] = (body_key, record.id, exp)
        if added is not None:
            added.append(jti)
        return None
