"""Shared fixtures: the vectors made by the real npm packages, and the node interop harness."""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from interop import node
from request_crypto import JWKManager
from request_crypto.receiver.pgtesting import PostgresCluster, PostgresUnavailableError

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
#: The kids of `python_private_jwks`, by key-management algorithm.
PYTHON_KIDS = {"RSA-OAEP": "py-oaep", "RSA-OAEP-256": "py-oaep256"}
_DATABASES = itertools.count()


def load_fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def private_jwks() -> dict[str, Any]:
    return load_fixture("private_jwks.json")


@pytest.fixture(scope="session")
def public_jwks() -> dict[str, Any]:
    return load_fixture("public_jwks.json")


@pytest.fixture(scope="session")
def js_bodies() -> dict[str, Any]:
    return load_fixture("bodies.json")


@pytest.fixture(scope="session")
def node_crypto_vectors() -> dict[str, Any]:
    return load_fixture("node_crypto.json")


@pytest.fixture(scope="session")
def python_private_jwks() -> dict[str, Any]:
    """A private set made by this library, once per session: one key of each algorithm.

    Kids are PYTHON_KIDS[alg]. Shared: copy it before changing it.
    """
    manager = JWKManager()
    for alg, kid in PYTHON_KIDS.items():
        manager.add_key(kid, alg=alg)
    return manager.get_private_jwks()


@pytest.fixture(scope="session")
def js() -> Any:
    """Run an op of interop/harness.mjs: `js("decrypt", jwks=..., bodies=[...])`.

    Outside CI a missing node/npm skips the test with the reason; under CI=true it fails,
    so a machine without node can never turn the interop suite into a silent pass.
    """
    try:
        node.ensure_installed()
    except node.NodeUnavailable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"interop needs node and npm under CI: {exc}")
        pytest.skip(f"interop skipped: {exc}")
    return node.run


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """A throwaway PostgreSQL cluster for the session (never the system's service).

    Outside CI a machine without PostgreSQL skips the test; under CI=true it fails.
    """
    try:
        cluster = PostgresCluster()
    except PostgresUnavailableError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is needed under CI: {exc}")
        pytest.skip(str(exc))
    with cluster:
        yield cluster


@pytest.fixture
def postgres_url(postgres: PostgresCluster, request: pytest.FixtureRequest) -> str:
    """A new, empty database of the session's cluster, for one test."""
    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name)[-50:].lower()
    return postgres.create_database(f"{name}_{os.getpid()}_{next(_DATABASES)}")
