"""Fixtures of the receiver tests: the receiver's key set, and a receiver storing to SQLite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from request_crypto import JWKManager
from request_crypto.receiver import (
    create_app,
)
from request_crypto.receiver.testing import ReceiverThread
from tests.receiver.helpers import (
    write_private_set,
)


@pytest.fixture(scope="module")
def keys() -> JWKManager:
    """Two fresh keys, one per key-management algorithm."""
    manager = JWKManager()
    manager.add_key("rx-a")
    manager.add_key("rx-b", alg="RSA-OAEP-256")
    return manager


@pytest.fixture
def sqlite_receiver(tmp_path: Path, keys: JWKManager) -> Iterator[tuple[ReceiverThread, Path]]:
    """A receiver serving `keys` from a file, storing into a fresh SQLite file."""
    key_file = write_private_set(tmp_path / "private.json", keys)
    db = tmp_path / "payloads.db"
    with ReceiverThread(create_app(key_file, sink=f"sqlite:///{db}")) as receiver:
        yield receiver, db
