"""The CLI as a whole: warnings, no private parameter anywhere, help, version, demo, and the
receiver commands' hook.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import typer

from request_crypto import __version__, keyfile
from request_crypto.cli import _app as app_module
from request_crypto.cli import app
from request_crypto.cli import keys as keys_module
from request_crypto.cli.demo import DEMO_PAYLOAD
from tests.cli.runner import (
    OLD,
    PRIVATE_MEMBERS,
    kids,
    load,
    mode,
    ok,
    runner,
)

# ---------------------------------------------------------------------------------------------
# Safety: warnings, and no private parameter anywhere


def test_a_readable_private_set_warns_once_on_stderr(private_set: Path, body_file: Path) -> None:
    private_set.chmod(0o644)
    commands = [
        ["decrypt", "--jwks", private_set, body_file],
        ["keys", "list", private_set],
        ["keys", "remove", private_set, "--kid", OLD, "--yes"],  # reads the file twice
    ]
    for args in commands:
        result = ok(*args)
        warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
        assert len(warnings) == 1, result.stderr
        assert f"chmod 600 {private_set}" in warnings[0]
        assert "warning" not in result.stdout


root_only = pytest.mark.skipif(
    os.geteuid() != 0,
    reason="giving a file to another owner needs root (CI runs these tests as root)",
)
SERVICE_UID, SERVICE_GID = 12345, 12346


def owner(path: Path) -> tuple[int, int]:
    return path.stat().st_uid, path.stat().st_gid


@root_only
def test_keys_rotate_and_add_keep_the_owner_of_a_service_key_file(private_set: Path) -> None:
    """A root-run rotation must leave the receiver service (its owner) able to read its keys."""
    os.chown(private_set, SERVICE_UID, SERVICE_GID)
    for args in (["rotate", private_set], ["add", private_set, "--kid", "added"]):
        result = ok("keys", *args)
        assert "warning" not in result.stderr
        assert owner(private_set) == (SERVICE_UID, SERVICE_GID)
        assert mode(private_set) == 0o600
    assert len(kids(private_set)) == 4


@root_only
def test_keys_rotate_that_cannot_keep_the_owner_still_rotates_and_warns_once(
    private_set: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(fd: int, uid: int, gid: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(keyfile.os, "fchown", refuse)
    os.chown(private_set, SERVICE_UID, SERVICE_GID)
    result = ok("keys", "rotate", private_set)
    assert len(kids(private_set)) == 3
    assert owner(private_set) == (os.geteuid(), os.getegid())
    assert mode(private_set) == 0o600
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, result.stderr
    assert f"run: chown {SERVICE_UID}:{SERVICE_GID} {private_set}" in warnings[0]
    assert "warning" not in result.stdout


def test_a_0600_private_set_and_a_public_set_do_not_warn(
    made: SimpleNamespace, body_file: Path
) -> None:
    assert "warning" not in ok("decrypt", "--jwks", made.private, body_file).stderr
    assert "warning" not in ok("keys", "list", made.public).stderr


def test_no_command_prints_private_key_parameters(
    private_set: Path, body_file: Path, tmp_path: Path
) -> None:
    secrets = [jwk[m] for jwk in load(private_set)["keys"] for m in PRIVATE_MEMBERS]
    outputs = [
        ok("keys", "list", private_set),
        ok("keys", "list", private_set, "--json"),
        ok("keys", "public", private_set),
        ok("keys", "public", private_set, "-o", tmp_path / "public.json"),
        ok("encrypt", "--jwks", private_set, stdin="{}"),
        ok("decrypt", "--jwks", private_set, body_file),
        ok("inspect", "--jwks", private_set, body_file),
        ok("keys", "rotate", private_set),
        ok("keys", "add", private_set, "--kid", "added"),
        ok("keys", "remove", private_set, "--kid", OLD, "--yes"),
    ]
    assert load(tmp_path / "public.json")  # the public file was written, and holds no secret
    texts = [result.output for result in outputs] + [(tmp_path / "public.json").read_text()]
    leaked = [s for s in secrets for text in texts if s in text or s[:40] in text]
    assert not leaked


def test_a_library_bug_is_not_swallowed_as_a_clean_error(
    made: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only RequestCryptoError is turned into a one-line error; anything else is a bug."""

    def boom(*_args: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(keys_module, "key_rows", boom)
    result = runner.invoke(app, ["keys", "list", str(made.private)])
    assert isinstance(result.exception, RuntimeError)


# ---------------------------------------------------------------------------------------------
# help, version, demo, receiver hook


CONTRACT = {
    ("keys", "init"): ["--kid", "--size", "--alg", "--force", "2048", "3072", "4096"],
    ("keys", "add"): ["--kid", "--size", "--alg", "RSA-OAEP-256"],
    ("keys", "rotate"): ["--kid", "--size", "--alg"],
    ("keys", "list"): ["--json"],
    ("keys", "public"): ["-o"],
    ("keys", "remove"): ["--kid", "--yes"],
    ("encrypt",): ["--jwks", "--kid", "--format", "elastic", "jwe"],
    ("decrypt",): ["--jwks"],
    ("inspect",): ["--jwks"],
    ("demo",): [],
}


@pytest.mark.parametrize("command", list(CONTRACT), ids=" ".join)
def test_help_shows_every_flag_of_the_contract(
    command: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # no wrapping inside the help table
    shown = ok(*command, "--help").stdout
    for flag in CONTRACT[command]:
        # a whole word: "-o" inside "--output" does not count
        assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", shown), flag


def test_version() -> None:
    assert ok("--version").stdout.strip() == f"request-crypto {__version__}"


def test_demo_runs_the_whole_flow() -> None:
    result = ok("demo")
    out = result.stdout
    for step in ("keys init", "keys public", "encrypt", "decrypt", "inspect", "keys rotate"):
        assert f"$ request-crypto {step}" in out
    assert out.count("ok: the same payload") == 3  # first decrypt, old after rotation, jwe
    assert json.dumps(DEMO_PAYLOAD) in out
    assert result.stderr == ""


def test_receiver_commands_are_registered_when_present(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[typer.Typer] = []
    monkeypatch.setitem(sys.modules, "fake_receiver_cli", SimpleNamespace(register=calls.append))
    app_module._register_receiver_commands("fake_receiver_cli")
    assert calls == [app]


def test_receiver_commands_are_optional() -> None:
    before = list(app.registered_commands)
    app_module._register_receiver_commands("request_crypto.receiver.no_such_module")
    app_module._register_receiver_commands("no_such_package.cli")
    assert app.registered_commands == before


def test_a_broken_receiver_module_is_not_mistaken_for_a_missing_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "broken_receiver_cli.py").write_text("import no_such_dependency_of_it\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = list(app.registered_commands)
    with pytest.raises(ImportError) as raised:
        app_module._register_receiver_commands("broken_receiver_cli")
    assert raised.value.name == "no_such_dependency_of_it"
    assert app.registered_commands == before
