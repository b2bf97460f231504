"""Files written as root (issue 11): lock files, key files, `-o` targets and sink files.

A root-run command writes into directories a service user can write to; nothing that user
plants there (a link, a hard link, a FIFO, a 0666 file) may steer a write or get a file given
to them. The root-only tests play that user with ids no account has.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from request_crypto.cli import app
from request_crypto.errors import InvalidArgumentError, KeyFileError
from request_crypto.keyfile import MAX_KEY_SET_FILE_SIZE, locked, read_jwks, write_jwks
from request_crypto.receiver.sinks import JSONLSink, SQLiteSink

#: Ids no account on the machine has: the service user, and someone else.
SERVICE_UID, SERVICE_GID = 12345, 12346
OTHER_UID = 23456

needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="giving files away needs root (CI runs these tests as root)"
)


def run(*args: object, ok: bool = True) -> tuple[str, str]:
    """(stdout, stderr); ok=False: it must fail with one `error:` line, returned as stderr."""
    result = CliRunner().invoke(app, [str(arg) for arg in args])
    assert result.exception is None or isinstance(result.exception, SystemExit)
    if ok:
        assert result.exit_code == 0, result.stderr
        return result.stdout, result.stderr
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    [error] = [line for line in result.stderr.splitlines() if not line.startswith("warning:")]
    assert error.startswith("error: ")
    return result.stdout, error


def owner_and_mode(path: Path) -> tuple[int, int, int]:
    info = os.lstat(path)
    return info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)


@pytest.fixture
def key_file(tmp_path: Path, private_jwks: dict[str, Any]) -> Path:
    """The service's private set, owned by the service user as an operator sets it up."""
    path = tmp_path / "private_jwks.json"
    write_jwks(path, private_jwks)
    if os.geteuid() == 0:
        os.chown(path, SERVICE_UID, SERVICE_GID)
    return path


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file of root's the service user must never get (think /etc/shadow)."""
    path = tmp_path / "shadow"
    path.write_text("root:secret\n")
    path.chmod(0o600)
    return path


def lock_of(path: Path) -> Path:
    return Path(f"{path}.lock")


# ---------------------------------------------------------------------------------------------
# 1. The lock file


@needs_root
def test_a_lock_file_linked_to_a_victim_is_refused_and_the_victim_is_untouched(
    key_file: Path, victim: Path
) -> None:
    lock_of(key_file).symlink_to(victim)
    os.lchown(lock_of(key_file), SERVICE_UID, SERVICE_GID)
    before = key_file.read_bytes()
    _, error = run("keys", "rotate", key_file, ok=False)
    assert f"{lock_of(key_file)} is a symbolic link to {victim}, not a lock file" in error
    assert owner_and_mode(victim) == (0, 0, 0o600)
    assert victim.read_text() == "root:secret\n"
    assert key_file.read_bytes() == before


@needs_root
def test_a_lock_file_hard_linked_to_a_victim_is_locked_but_never_given_away(
    key_file: Path, victim: Path
) -> None:
    os.link(victim, lock_of(key_file))
    run("keys", "rotate", key_file)
    assert owner_and_mode(victim) == (0, 0, 0o600)
    assert len(read_jwks(key_file)["keys"]) == 3


@needs_root
def test_an_existing_lock_file_keeps_its_owner(key_file: Path) -> None:
    lock_of(key_file).touch(mode=0o600)
    os.chown(lock_of(key_file), OTHER_UID, OTHER_UID)
    run("keys", "rotate", key_file)
    assert owner_and_mode(lock_of(key_file))[:2] == (OTHER_UID, OTHER_UID)
    assert owner_and_mode(key_file) == (SERVICE_UID, SERVICE_GID, 0o600)


def test_a_lock_file_that_is_a_fifo_is_refused(key_file: Path) -> None:
    os.mkfifo(lock_of(key_file))
    _, error = run("keys", "rotate", key_file, ok=False)
    assert error == f"error: {lock_of(key_file)} is a FIFO, not a lock file; remove it and retry"


# ---------------------------------------------------------------------------------------------
# 2. The key file


def test_a_linked_key_path_is_refused_with_the_real_file(key_file: Path, tmp_path: Path) -> None:
    link = tmp_path / "link.json"
    link.symlink_to(key_file.name)
    before = key_file.read_bytes()
    remove = ["remove", link, "--kid", "kibana_1", "--yes"]
    for command in (["rotate", link], ["add", link, "--kid", "x"], remove):
        _, error = run("keys", *command, ok=False)
        assert error == (
            f"error: {link} is a symbolic link to {key_file.name}; files are written without "
            f"following links, so pass the real file: {key_file}"
        )
    with pytest.raises(KeyFileError, match="symbolic link"):
        write_jwks(link, {"keys": []})
    assert link.is_symlink() and key_file.read_bytes() == before
    assert not lock_of(link).exists()
    # Reading through the link stays allowed: it gives nobody anything.
    assert json.loads(run("keys", "list", link, "--json")[0])[0]["private"] is True


def test_a_key_file_in_a_linked_directory_is_refused(key_file: Path, tmp_path: Path) -> None:
    (tmp_path / "keys").symlink_to(tmp_path, target_is_directory=True)
    linked = tmp_path / "keys" / key_file.name
    _, error = run("keys", "rotate", linked, ok=False)
    assert error.endswith(f"so pass the real path: {key_file}")
    assert f"{tmp_path / 'keys'} is a symbolic link to {tmp_path}" in error
    assert len(read_jwks(key_file)["keys"]) == 2


@needs_root
def test_the_private_set_never_goes_to_the_owner_of_a_link(key_file: Path, tmp_path: Path) -> None:
    link = tmp_path / "link.json"
    link.symlink_to(key_file)
    os.lchown(link, OTHER_UID, OTHER_UID)
    with pytest.raises(KeyFileError, match="symbolic link"):
        write_jwks(link, read_jwks(key_file))
    owners = {os.lstat(p).st_uid for p in tmp_path.iterdir() if not p.is_symlink()}
    assert OTHER_UID not in owners


@needs_root
def test_a_hard_linked_key_files_owner_is_not_handed_on(
    key_file: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    os.link(key_file, tmp_path / "second-name")
    with caplog.at_level(logging.WARNING, logger="request_crypto"):
        write_jwks(key_file, read_jwks(key_file))
    assert owner_and_mode(key_file) == (0, 0, 0o600)
    assert "cannot keep the owner: it has 2 hard links" in caplog.text


@pytest.mark.parametrize("kind", ["fifo", "directory", "socket"])
def test_a_key_path_that_is_not_a_regular_file_is_refused(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "keys.json"
    make_special(path, kind)
    with pytest.raises(KeyFileError, match=r"is a (FIFO|directory|socket), not a key-set file"):
        write_jwks(path, {"keys": []})
    assert not stat.S_ISREG(os.lstat(path).st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["keys.json"]  # no temporary file left


def make_special(path: Path, kind: str) -> None:
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    else:
        socket.socket(socket.AF_UNIX).bind(str(path))


# ---------------------------------------------------------------------------------------------
# 3. -o targets


def test_dash_o_dash_is_stdout(
    key_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    stdout, _ = run("keys", "public", key_file, "-o", "-")
    assert [jwk["kid"] for jwk in json.loads(stdout)["keys"]] == [
        jwk["kid"] for jwk in read_jwks(key_file)["keys"]
    ]
    assert not (tmp_path / "-").exists()


@needs_root
def test_a_character_device_is_written_into_not_replaced(key_file: Path, tmp_path: Path) -> None:
    """A private /dev/null (same device numbers): the real one must survive a regression."""
    null = tmp_path / "null"
    os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    _, note = run("keys", "public", key_file, "-o", null)
    assert stat.S_ISCHR(os.lstat(null).st_mode) and os.lstat(null).st_rdev == os.makedev(1, 3)
    assert f"to {null}" in note


def test_dev_null_stays_a_character_device(key_file: Path) -> None:
    from request_crypto.cli._common import output_stream

    with output_stream(Path("/dev/null")) as stream:  # guard: never replace the real one
        assert stream is not None
    run("keys", "public", key_file, "-o", "/dev/null")
    assert stat.S_ISCHR(os.lstat("/dev/null").st_mode)


def test_a_link_to_stdout_writes_to_stdout(key_file: Path, tmp_path: Path) -> None:
    link = tmp_path / "out"
    link.symlink_to("/proc/self/fd/1")
    if not os.path.exists(link):
        pytest.skip("no /proc/self/fd here")
    stdout, _ = run("keys", "public", key_file, "-o", link)
    assert json.loads(stdout)["keys"]
    assert link.is_symlink()


def test_a_fifo_is_written_into(key_file: Path, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader waits, as `cat fifo` would
    try:
        run("keys", "public", key_file, "-o", fifo)
        assert json.loads(os.read(reader, 1 << 16))["keys"]
    finally:
        os.close(reader)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


@pytest.mark.parametrize("kind", ["directory", "socket"])
def test_a_directory_or_socket_output_is_refused(key_file: Path, tmp_path: Path, kind: str) -> None:
    out = tmp_path / "out"
    make_special(out, kind)
    _, error = run("keys", "public", key_file, "-o", out, ok=False)
    assert error.startswith(f"error: {out} is a {kind}; -o takes a file")
    assert not stat.S_ISREG(os.lstat(out).st_mode)


def test_a_linked_output_file_is_refused(key_file: Path, tmp_path: Path) -> None:
    target = tmp_path / "public.json"
    target.write_text("old\n")
    (tmp_path / "out.json").symlink_to(target)
    _, error = run("keys", "public", key_file, "-o", tmp_path / "out.json", ok=False)
    assert error.endswith(f"pass the real file: {target}")
    assert target.read_text() == "old\n"


# ---------------------------------------------------------------------------------------------
# 10. Sink files


@pytest.mark.parametrize("sink", [JSONLSink, SQLiteSink])
def test_a_linked_sink_file_is_refused(sink: Any, tmp_path: Path, victim: Path) -> None:
    link = tmp_path / "payloads"
    link.symlink_to(victim)
    with pytest.raises(InvalidArgumentError, match="is a symbolic link to"):
        sink(link)
    assert victim.read_text() == "root:secret\n"


@pytest.mark.parametrize("sink", [JSONLSink, SQLiteSink])
def test_a_sink_file_others_may_write_is_refused(sink: Any, tmp_path: Path) -> None:
    path = tmp_path / "payloads"
    path.touch()
    path.chmod(0o666)
    with pytest.raises(InvalidArgumentError, match=r"writable by group or others \(mode 0666\)"):
        sink(path)


def test_a_sink_file_others_may_read_is_used_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "payloads.jsonl"
    path.touch()
    path.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="request_crypto"):
        JSONLSink(path).close()
    assert f"run: chmod 600 {path}" in caplog.text


@pytest.mark.parametrize("kind", ["fifo", "hard link"])
def test_a_sink_file_that_is_a_fifo_or_hard_link_is_refused(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "payloads.jsonl"
    if kind == "fifo":
        os.mkfifo(path)
        reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # so the old code did not hang
    else:
        (tmp_path / "other").touch(mode=0o600)
        os.link(tmp_path / "other", path)
    try:
        with pytest.raises(InvalidArgumentError, match=r"a FIFO|2 hard links"):
            JSONLSink(path)
    finally:
        if kind == "fifo":
            os.close(reader)


@needs_root
def test_a_sink_file_of_another_user_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "payloads.jsonl"
    path.touch(mode=0o600)
    os.chown(path, OTHER_UID, OTHER_UID)
    with pytest.raises(InvalidArgumentError, match=f"belongs to user {OTHER_UID}"):
        JSONLSink(path)


def test_a_linked_sqlite_side_file_is_refused(tmp_path: Path, victim: Path) -> None:
    (tmp_path / "p.db-wal").symlink_to(victim)
    with pytest.raises(InvalidArgumentError, match=r"p\.db-wal is a symbolic link"):
        SQLiteSink(tmp_path / "p.db")
    assert victim.read_text() == "root:secret\n"


def test_serve_refuses_a_linked_sink_with_one_line(
    key_file: Path, tmp_path: Path, victim: Path
) -> None:
    (tmp_path / "p.jsonl").symlink_to(victim)
    _, error = run("serve", "--jwks", key_file, "--sink", f"jsonl:///{tmp_path}/p.jsonl", ok=False)
    assert "p.jsonl is a symbolic link" in error


# ---------------------------------------------------------------------------------------------
# Found in review: what another writer of the directory can make a root-run command wait on


def test_a_fifo_nobody_reads_is_refused_at_once(key_file: Path, tmp_path: Path) -> None:
    """Without a reader, opening a FIFO for writing would block `keys public -o` forever."""
    fifo = tmp_path / "public_jwks.json"
    os.mkfifo(fifo)
    _, error = run("keys", "public", key_file, "-o", fifo, ok=False)
    assert error == f"error: {fifo} is a FIFO that nobody reads; start its reader first"
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_a_key_file_too_large_for_a_key_set_is_refused_unread(tmp_path: Path) -> None:
    """A sparse file costs its planter no disk; reading it whole would cost root memory."""
    path = tmp_path / "private_jwks.json"
    with path.open("wb") as handle:
        handle.truncate(MAX_KEY_SET_FILE_SIZE + 2)  # sparse: nothing is written
    for command in (["keys", "rotate", path], ["keys", "list", path]):
        _, error = run(*command, ok=False)
        assert "far larger than any key set" in error, command
    with pytest.raises(KeyFileError, match="far larger"):
        read_jwks(path)


def test_a_held_lock_is_waited_for_then_refused(key_file: Path) -> None:
    """Whoever can write in the directory can hold PATH.lock: the wait has an end."""
    holder = os.open(f"{key_file}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        started = time.monotonic()
        with (
            pytest.raises(KeyFileError, match=r"still locked after 0.3 s.*fuser"),
            locked(key_file, timeout=0.3),
        ):
            pytest.fail("the lock was taken while another process held it")
        assert time.monotonic() - started >= 0.3
    finally:
        os.close(holder)
    with locked(key_file, timeout=0.3):  # released: taken at once
        pass
