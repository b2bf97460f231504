"""keyfile.py: rewriting a key-set file keeps its owner and group (or says why it could not)."""

from __future__ import annotations

import errno
import logging
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from request_crypto import keyfile
from request_crypto.keyfile import read_jwks, update_jwks, write_jwks

#: Ids no account on the machine has: the service user a root-run rotation must not take over.
SERVICE_UID, SERVICE_GID = 12345, 12346

needs_root = pytest.mark.skipif(
    os.geteuid() != 0,
    reason="giving a file to another owner needs root (CI runs these tests as root)",
)


def owner(path: Path) -> tuple[int, int]:
    info = os.lstat(path)
    return info.st_uid, info.st_gid


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def leftovers(directory: Path) -> list[str]:
    """Temporary files a write left behind (the lock file is kept on purpose)."""
    return [p.name for p in directory.iterdir() if p.name.endswith(".tmp")]


def ownership_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "request_crypto" and r.levelno == logging.WARNING and "chown" in r.message
    ]


@pytest.fixture
def service_owned(tmp_path: Path, private_jwks: dict[str, Any]) -> Path:
    """A private set owned by the service user, mode 0600, as an operator would set it up."""
    path = tmp_path / "private_jwks.json"
    write_jwks(path, private_jwks)
    os.chown(path, SERVICE_UID, SERVICE_GID)
    return path


@needs_root
def test_rewriting_a_private_set_keeps_its_owner_group_and_mode_0600(
    service_owned: Path, private_jwks: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    smaller = {"keys": private_jwks["keys"][:1]}
    with caplog.at_level(logging.WARNING, logger="request_crypto"):
        write_jwks(service_owned, smaller)
    assert read_jwks(service_owned) == smaller
    assert owner(service_owned) == (SERVICE_UID, SERVICE_GID)
    assert mode(service_owned) == 0o600
    assert ownership_warnings(caplog) == []
    assert leftovers(service_owned.parent) == []


@needs_root
def test_rewriting_a_public_set_keeps_its_owner_group_and_mode_0644(
    tmp_path: Path, public_jwks: dict[str, Any]
) -> None:
    path = tmp_path / "public_jwks.json"
    write_jwks(path, public_jwks)
    os.chown(path, SERVICE_UID, SERVICE_GID)
    write_jwks(path, {"keys": public_jwks["keys"][:1]})
    assert owner(path) == (SERVICE_UID, SERVICE_GID)
    assert mode(path) == 0o644


@needs_root
def test_a_locked_update_keeps_the_owner(service_owned: Path) -> None:
    with update_jwks(service_owned) as document:
        document["keys"].pop()
    assert len(read_jwks(service_owned)["keys"]) == 1
    assert owner(service_owned) == (SERVICE_UID, SERVICE_GID)
    assert mode(service_owned) == 0o600
    # The lock file root created is the service's too, or its own next update could not lock.
    assert owner(Path(f"{service_owned}.lock")) == (SERVICE_UID, SERVICE_GID)


def test_a_new_file_belongs_to_the_writer(tmp_path: Path, private_jwks: dict[str, Any]) -> None:
    path = tmp_path / "new.json"
    write_jwks(path, private_jwks)
    assert os.lstat(path).st_uid == os.geteuid()
    assert mode(path) == 0o600


def test_no_chown_when_the_owner_is_already_the_writer(
    tmp_path: Path, private_jwks: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "mine.json"
    write_jwks(path, private_jwks)
    calls: list[tuple[int, int, int]] = []
    monkeypatch.setattr(keyfile.os, "fchown", lambda *args: calls.append(args))
    write_jwks(path, private_jwks)
    write_jwks(tmp_path / "another.json", private_jwks)
    assert calls == []


@needs_root
def test_a_writer_who_may_not_give_files_away_still_writes_and_warns_once(
    service_owned: Path,
    private_jwks: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def refuse(fd: int, uid: int, gid: int) -> None:
        raise PermissionError(errno.EPERM, os.strerror(errno.EPERM))

    monkeypatch.setattr(keyfile.os, "fchown", refuse)
    smaller = {"keys": private_jwks["keys"][:1]}
    with caplog.at_level(logging.WARNING, logger="request_crypto"):
        write_jwks(service_owned, smaller)
    assert read_jwks(service_owned) == smaller
    assert os.lstat(service_owned).st_uid == os.geteuid()  # today's behaviour: the writer's
    assert mode(service_owned) == 0o600
    assert leftovers(service_owned.parent) == []
    [warning] = ownership_warnings(caplog)
    assert f"owned by {SERVICE_UID}:{SERVICE_GID}" in warning
    assert os.strerror(errno.EPERM) in warning
    assert warning.endswith(f"run: chown {SERVICE_UID}:{SERVICE_GID} {service_owned}")
