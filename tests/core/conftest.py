"""Fixtures of the core tests: the hostile-input kit and its bodies (tests/core/hostile.py)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.core.hostile import CASES, Kit


@pytest.fixture(scope="package")
def kit(private_jwks: dict[str, Any]) -> Kit:
    return Kit(private_jwks)


@pytest.fixture(scope="package")
def bodies(kit: Kit) -> dict[str, Any]:
    """Each case's body, built once per package (elastic ones cost a PBKDF2 to make)."""
    return {case.id: case.build(kit) for case in CASES}
