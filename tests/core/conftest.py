"""Fixtures of the core tests: the hostile-input kit and its bodies (tests/core/hostile.py),
and `backend` (each test once on the standard library, once on the accelerators)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from request_crypto import _accel, _b64
from tests.core.hostile import CASES, Kit


@pytest.fixture(scope="package")
def kit(private_jwks: dict[str, Any]) -> Kit:
    return Kit(private_jwks)


@pytest.fixture(scope="package")
def bodies(kit: Kit) -> dict[str, Any]:
    """Each case's body, built once per package (elastic ones cost a PBKDF2 to make)."""
    return {case.id: case.build(kit) for case in CASES}


ACCELERATORS = {"stdlib": False, "accelerated": True}


@pytest.fixture(params=list(ACCELERATORS), ids=list(ACCELERATORS))
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Run a test on the standard library, then on the accelerators (when installed)."""
    if ACCELERATORS[request.param]:
        if _accel.pybase64 is None:
            pytest.skip("pybase64 is not installed")
    else:
        monkeypatch.setattr(_accel, "pybase64", None)
        monkeypatch.setattr(_accel, "orjson", None)
        monkeypatch.setattr(_accel, "msgspec", None)
    monkeypatch.setattr(_b64, "_ACCELERATE_FROM", 8)  # accelerate even the small pieces
    yield request.param
