"""Fixtures of the CLI tests: key sets made once per session by the CLI, copies, a body."""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path
from types import SimpleNamespace

import pytest

from request_crypto.cli import keys as keys_module
from tests.cli.runner import (
    NEW,
    OLD,
    PAYLOAD,
    ok,
)

# Key sets made once per session by the CLI; tests that change one work on a copy.


@pytest.fixture(scope="session")
def made(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    directory = tmp_path_factory.mktemp("cli-sets")
    private, public, other = (directory / name for name in ("private", "public", "other"))
    ok("keys", "init", private, "--kid", OLD)
    ok("keys", "add", private, "--kid", NEW)
    ok("keys", "public", private, "-o", public)
    ok("keys", "init", other, "--kid", "other-key")
    return SimpleNamespace(private=private, public=public, other=other)


@pytest.fixture
def private_set(made: SimpleNamespace, tmp_path: Path) -> Path:
    return Path(shutil.copy2(made.private, tmp_path / "private_jwks.json"))


@pytest.fixture
def public_set(made: SimpleNamespace, tmp_path: Path) -> Path:
    return Path(shutil.copy2(made.public, tmp_path / "public_jwks.json"))


@pytest.fixture
def body_file(made: SimpleNamespace, tmp_path: Path) -> Path:
    """A fresh `elastic` body of PAYLOAD to the newest key of the session set."""
    body = ok("encrypt", "--jwks", made.public, "-", stdin=json.dumps(PAYLOAD)).stdout
    path = tmp_path / "body.txt"
    path.write_text(body)
    return path


@pytest.fixture
def fixed_today(monkeypatch: pytest.MonkeyPatch) -> date:
    today = date(2026, 11, 23)
    monkeypatch.setattr(keys_module, "utc_today", lambda: today)
    return today
