"""Helpers of the receiver tests: HTTP clients, stored rows, key files, tokens, a list sink."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from request_crypto import JWKManager
from request_crypto._b64 import b64url_decode, b64url_encode
from request_crypto._json import dumps_utf8
from request_crypto.keyfile import write_jwks
from request_crypto.keys.jwks import JWKMetadata
from request_crypto.receiver import ReceivedPayload
from request_crypto.receiver.sinks import idempotency_key

PAYLOADS = "/v1/payloads"
WELL_KNOWN = "/.well-known/jwks.json"
ANSWER_FIELDS = {"id", "kid", "format", "received_at"}
LOGGER = "request_crypto.receiver"


# ---------------------------------------------------------------------------------------------
# helpers


def client(base_url: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, trust_env=False, timeout=30.0)


def stored_rows(db: Path) -> dict[str, dict[str, Any]]:
    with contextlib.closing(sqlite3.connect(db)) as connection:
        rows = connection.execute(
            "SELECT id, received_at, kid, format, payload FROM payloads"
        ).fetchall()
    result: dict[str, dict[str, Any]] = {}
    for row_id, received_at, kid, body_format, payload in rows:
        assert row_id not in result, f"id {row_id} stored twice"
        result[row_id] = {
            "received_at": received_at,
            "kid": kid,
            "format": body_format,
            "payload": json.loads(payload),
        }
    return result


def write_private_set(path: Path, manager: JWKManager) -> Path:
    write_jwks(path, manager.get_private_jwks())
    return path


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll `condition` until true; returns the seconds it took. Fails after `timeout`."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            pytest.fail(f"{what}: not within {timeout} s")
        time.sleep(0.02)
    return time.monotonic() - start


def wait_published(http: httpx.Client, kid: str, timeout: float = 30) -> float:
    """Wait until the receiver at `http` publishes `kid` (a reload); the seconds it took."""
    return wait_for(
        lambda: kid in [jwk["kid"] for jwk in http.get(WELL_KNOWN).json()["keys"]],
        timeout,
        f"kid {kid} published",
    )


def swap_header(token: str, header: dict[str, Any]) -> str:
    parts = token.split(".")
    parts[0] = b64url_encode(json.dumps(header).encode())
    return ".".join(parts)


def flip_part(token: str, index: int) -> str:
    parts = token.split(".")
    raw = bytearray(b64url_decode(parts[index], "part"))
    raw[len(raw) // 2] ^= 0x01
    parts[index] = b64url_encode(bytes(raw))
    return ".".join(parts)


class ListSink:
    """A plug-in sink: no base class, just the protocol's two methods."""

    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.records: list[ReceivedPayload] = []
        self.batches: list[int] = []
        self.delay = delay
        self.fail = fail
        self.closed = False
        self.lock = threading.Lock()

    def write_batch(self, records: Sequence[ReceivedPayload]) -> None:
        time.sleep(self.delay)
        if self.fail:
            raise OSError("disk on fire")
        with self.lock:
            self.records.extend(records)
            self.batches.append(len(records))

    def close(self) -> None:
        self.closed = True


def record(
    payload: Any, *, body: bytes | None = None, jti: str | None = None, exp: float | None = None
) -> ReceivedPayload:
    """A record of `payload`, keyed as the receiver keys `body` (None: no key), with `jti`."""
    return ReceivedPayload(
        id=str(uuid.uuid4()),
        received_at="2026-01-01T00:00:00.000000Z",
        kid="k",
        format="jwe",
        size=1,
        payload=payload,
        payload_json=dumps_utf8(payload).decode(),
        metadata=JWKMetadata({"kid": "k"}, [], {}),
        idempotency_key=None if body is None else idempotency_key(body),
        jti=jti,
        jti_exp=exp if exp is not None or jti is None else time.time() + 600,
    )
