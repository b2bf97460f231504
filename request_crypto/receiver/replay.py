"""Replays of signed bodies: a token's `jti` is accepted once, in one body, until it expires.

A signed body's JWT carries a random `jti` and an `exp`. The sink remembers each `jti` (or,
for a token without one, the body's SHA-256) with the body's SHA-256, its payload id and the
`exp`, in the same transaction that stores the payload, so every worker sharing the database
sees it and a restart keeps it:

- the very same body again is a retry (its first answer was lost): `Duplicate(first_id,
  replay=False)`, answered ``202`` with the first id, stored once;
- the same `jti` in a *different* body is a replay: `Duplicate(first_id, replay=True)`,
  answered ``409``, nothing stored.

An expired token never reaches the sink (it is refused as expired), so entries are dropped
once their `exp` has passed. Sinks without a database (JSON lines, stdout) keep the entries
in memory (`MemoryReplays`): one process, lost on restart.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .sinks import ReceivedPayload

__all__ = [
    "REPLAY_SCHEMA",
    "Duplicate",
    "MemoryReplays",
    "claim_sqlite",
    "purge_sqlite",
    "replay_key",
]

REPLAY_SCHEMA = """
CREATE TABLE IF NOT EXISTS replays (
    jti      TEXT PRIMARY KEY,
    body_key TEXT NOT NULL,
    id       TEXT NOT NULL,
    exp      REAL NOT NULL
)
"""


@dataclass(frozen=True)
class Duplicate:
    """A record the sink did not store: a retry of `first_id`'s body, or a replay."""

    first_id: str
    replay: bool


def replay_key(record: ReceivedPayload) -> tuple[str, str, float] | None:
    """(jti or body hash, body hash, exp) of a signed record; None for an unsigned one."""
    signer = record.signer
    if signer is None or record.body_key is None:
        return None
    exp = signer.exp if signer.exp is not None else time.time() + 3600
    return (signer.jti or f"body:{record.body_key}", record.body_key, exp)


def claim_sqlite(db: sqlite3.Connection, record: ReceivedPayload) -> Duplicate | None:
    """Inside the sink's transaction: remember the record's jti, or say why it is a duplicate."""
    key = replay_key(record)
    if key is None:
        return None
    jti, body_key, exp = key
    row = db.execute(
        "SELECT body_key, id FROM replays WHERE jti = ? AND exp > ?", (jti, time.time())
    ).fetchone()
    if row is not None:
        return Duplicate(str(row[1]), replay=row[0] != body_key)
    db.execute(
        "INSERT OR REPLACE INTO replays (jti, body_key, id, exp) VALUES (?, ?, ?, ?)",
        (jti, body_key, record.id, exp),
    )
    return None


def purge_sqlite(db: sqlite3.Connection) -> None:
    """Drop the entries whose token has expired (such tokens are refused before the sink)."""
    db.execute("DELETE FROM replays WHERE exp <= ?", (time.time(),))


class MemoryReplays:
    """The same rule in this process's memory, for sinks without a database."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[str, tuple[str, str, float]] = {}

    def claim(self, record: ReceivedPayload) -> Duplicate | None:
        """Remember the record's jti, or say why it is a duplicate."""
        key = replay_key(record)
        if key is None:
            return None
        jti, body_key, exp = key
        now = time.time()
        with self._lock:
            if len(self._seen) > 100_000:
                self._seen = {k: v for k, v in self._seen.items() if v[2] > now}
            seen = self._seen.get(jti)
            if seen is not None and seen[2] > now:
                return Duplicate(seen[1], replay=seen[0] != body_key)
            self._seen[jti] = (body_key, record.id, exp)
        return None
