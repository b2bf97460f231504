"""KeySetFile, the library API for key-set files, and the one kid rule it shares with the CLI."""

from __future__ import annotations

import ast
import json
import os
import stat
import subprocess
import sys
import threading
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import request_crypto
from request_crypto import JWKManager, KeySetFile, keyfile
from request_crypto.cli import app
from request_crypto.errors import (
    InvalidArgumentError,
    InvalidJWKSError,
    KeyFileError,
    RequestCryptoError,
)
from request_crypto.kids import MAX_KID_LENGTH, kid_prefix, next_kid, validate_kid

TODAY = date(2026, 11, 27)
runner = CliRunner()


@pytest.fixture
def key_file(tmp_path: Path, private_jwks: dict[str, Any]) -> Path:
    """The JavaScript-made private set (kibana_1, kibana_2) as a 0600 file."""
    path = tmp_path / "private_jwks.json"
    keyfile.write_jwks(path, private_jwks)
    return path


def kids_in(path: Path) -> list[str]:
    return [jwk["kid"] for jwk in json.loads(path.read_text())["keys"]]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ---------------------------------------------------------------------------------------------
# init, add, rotate, remove, publish, load


def test_init_creates_a_private_set_of_one_key(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    keys = KeySetFile.init(path, "telemetry-2026-11-01", alg="RSA-OAEP-256")
    assert keys.kids() == ["telemetry-2026-11-01"]
    (jwk,) = json.loads(path.read_text())["keys"]
    assert jwk["alg"] == "RSA-OAEP-256"
    assert "d" in jwk
    assert mode(path) == 0o600
    assert keys.load().can_decrypt("telemetry-2026-11-01")


def test_init_refuses_an_existing_file_unless_forced(key_file: Path) -> None:
    before = key_file.read_bytes()
    with pytest.raises(KeyFileError, match="already exists") as caught:
        KeySetFile.init(key_file, "again")
    assert "--force" not in str(caught.value)  # the library's words, not the CLI's
    assert key_file.read_bytes() == before
    KeySetFile.init(key_file, "fresh", force=True)
    assert kids_in(key_file) == ["fresh"]


def test_add_appends_the_newest_and_keeps_every_other_entry_byte_for_byte(key_file: Path) -> None:
    before = json.loads(key_file.read_text())["keys"]
    public = KeySetFile(key_file).add("kibana_3")
    after = json.loads(key_file.read_text())["keys"]
    assert after[:-1] == before
    assert after[-1]["kid"] == public["kid"] == "kibana_3"
    assert set(public) == {"kty", "kid", "use", "alg", "e", "n"}  # the public half only
    assert mode(key_file) == 0o600


def test_add_refuses_a_kid_the_set_has(key_file: Path) -> None:
    before = key_file.read_bytes()
    with pytest.raises(InvalidArgumentError, match="already has a key 'kibana_1'"):
        KeySetFile(key_file).add("kibana_1")
    assert key_file.read_bytes() == before


def test_add_to_a_public_set_is_refused(tmp_path: Path, public_jwks: dict[str, Any]) -> None:
    path = tmp_path / "public.json"
    keyfile.write_jwks(path, public_jwks)
    with pytest.raises(InvalidArgumentError, match="is a public set"):
        KeySetFile(path).add("x")


def test_add_to_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="no such key-set file"):
        KeySetFile(tmp_path / "none.json").add("x")
    assert not (tmp_path / "none.json").exists()


def test_rotate_names_the_new_key_from_the_old_ones(key_file: Path) -> None:
    keys = KeySetFile(key_file)
    assert keys.rotate(today=TODAY) == "kibana-2026-11-27"
    assert keys.rotate(today=TODAY) == "kibana-2026-11-27-2"
    assert keys.rotate(kid="chosen") == "chosen"
    assert keys.kids() == [
        "kibana_1",
        "kibana_2",
        "kibana-2026-11-27",
        "kibana-2026-11-27-2",
        "chosen",
    ]


@pytest.mark.parametrize(
    ("existing", "expected"),
    [
        (["kibana_8.14.0"], "kibana-2026-11-27"),
        (["kibana_8.14.0", "kibana_8.15.0"], "kibana-2026-11-27"),
        (["kibana-2026-11-23"], "kibana-2026-11-27"),
        (["kibana-2"], "kibana-2026-11-27"),
        (["kibana.3"], "kibana-2026-11-27"),
        (["kibana_8.14.0", "kibana-2026-11-27"], "kibana-2026-11-27-2"),
        (["8.14.0"], "key-2026-11-27"),
        (["es2"], "es-2026-11-27"),
        (["v12", "v13"], "v-2026-11-27"),
    ],
)
def test_rotation_strips_a_trailing_date_or_version(existing: list[str], expected: str) -> None:
    assert next_kid(existing, TODAY) == expected
    assert kid_prefix([*existing, expected]) == kid_prefix(existing)  # stable across rotations


def test_remove_returns_the_kids_left_and_refuses_an_unknown_kid(key_file: Path) -> None:
    keys = KeySetFile(key_file)
    assert keys.remove("kibana_1") == ["kibana_2"]
    assert kids_in(key_file) == ["kibana_2"]
    before = key_file.read_bytes()
    with pytest.raises(InvalidArgumentError, match="has no key 'nope'"):
        keys.remove("nope")
    assert key_file.read_bytes() == before


def test_publish_writes_the_public_half_and_never_over_the_private_set(
    key_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "public.json"
    public = KeySetFile(key_file).publish(out)
    assert json.loads(out.read_text()) == public
    assert [jwk["kid"] for jwk in public["keys"]] == ["kibana_1", "kibana_2"]
    assert all(set(jwk) == {"kty", "kid", "use", "alg", "e", "n"} for jwk in public["keys"])
    assert mode(out) == 0o644
    assert KeySetFile(key_file).publish() == public  # without a path: only returned
    before = key_file.read_bytes()
    with pytest.raises(KeyFileError, match="holds private keys"):
        KeySetFile(key_file).publish(key_file)
    assert key_file.read_bytes() == before


def test_publish_of_an_empty_set_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.json"
    path.write_text('{"keys": []}')
    with pytest.raises(InvalidJWKSError, match="holds no keys"):
        KeySetFile(path).publish(tmp_path / "public.json")
    assert not (tmp_path / "public.json").exists()


def test_load_and_errors_name_the_file(key_file: Path, tmp_path: Path) -> None:
    manager = KeySetFile(key_file).load()
    assert manager.has_private_key("kibana_1")
    assert not KeySetFile(key_file).load(private=False).has_private_key("kibana_1")
    broken = tmp_path / "broken.json"
    broken.write_text('{"keys": [{"kty": "EC", "kid": "e"}]}')
    with pytest.raises(InvalidJWKSError, match=f"^{broken}: .*only RSA keys"):
        KeySetFile(broken).load()


# ---------------------------------------------------------------------------------------------
# Locked and atomic


def test_concurrent_adds_from_threads_and_processes_lose_nothing(key_file: Path) -> None:
    script = (
        "import sys; from request_crypto import KeySetFile; "
        "KeySetFile(sys.argv[1]).add(sys.argv[2])"
    )
    processes = [
        subprocess.Popen([sys.executable, "-c", script, str(key_file), f"process-{i}"])
        for i in range(3)
    ]
    failures: list[BaseException] = []

    def add(kid: str) -> None:
        try:
            KeySetFile(key_file).add(kid)
        except BaseException as exc:  # reported below, in the test's thread
            failures.append(exc)

    threads = [threading.Thread(target=add, args=(f"thread-{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert [process.wait(120) for process in processes] == [0, 0, 0]
    assert failures == []
    added = sorted(kids_in(key_file)[2:])
    assert added == sorted([f"process-{i}" for i in range(3)] + [f"thread-{i}" for i in range(4)])
    assert kids_in(key_file)[:2] == ["kibana_1", "kibana_2"]


def test_an_add_waits_for_the_lock(key_file: Path) -> None:
    done = threading.Event()

    def add() -> None:
        KeySetFile(key_file).add("waiting")
        done.set()

    with keyfile.locked(key_file):
        thread = threading.Thread(target=add)
        thread.start()
        # Generous: the key is generated before the lock is taken. Under load this may
        # end before the add reaches the lock, which passes without proving anything, but
        # an add that ignored the lock would be seen here on an idle machine.
        assert not done.wait(3)
        assert "waiting" not in kids_in(key_file)
    thread.join(60)
    assert done.is_set()
    assert kids_in(key_file)[-1] == "waiting"


def test_a_failed_write_leaves_the_old_file_whole(
    key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = key_file.read_bytes()

    def broken_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(KeyFileError, match="cannot write the key set"):
        KeySetFile(key_file).add("lost")
    monkeypatch.undo()
    assert key_file.read_bytes() == before
    assert sorted(p.name for p in key_file.parent.iterdir()) == [
        key_file.name,
        f"{key_file.name}.lock",
    ]


# ---------------------------------------------------------------------------------------------
# One kid rule: library, KeySetFile and CLI


BAD_KIDS = ["", "a\nb", "tab\there", "nul\x00", "zero\u200bwidth", "k" * (MAX_KID_LENGTH + 1)]


@pytest.mark.parametrize("kid", BAD_KIDS, ids=range(len(BAD_KIDS)))
def test_one_kid_rule_for_the_library_keysetfile_and_the_cli(key_file: Path, kid: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        validate_kid(kid)
    message = str(caught.value)
    assert "\n" not in message
    with pytest.raises(InvalidArgumentError) as by_manager:
        JWKManager().add_key(kid)
    assert str(by_manager.value) == message
    with pytest.raises(InvalidArgumentError) as by_file:
        KeySetFile(key_file).add(kid)
    assert str(by_file.value) == message
    result = runner.invoke(app, ["keys", "add", str(key_file), "--kid", kid])
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == f"error: {message}"
    assert kids_in(key_file) == ["kibana_1", "kibana_2"]


def test_a_kid_at_the_limit_with_spaces_and_accents_is_accepted() -> None:
    kid = "é " + "k" * (MAX_KID_LENGTH - 2)
    assert validate_kid(kid) == kid


def test_sets_made_elsewhere_keep_loading_whatever_their_kids(private_jwks: dict[str, Any]) -> None:
    odd = {"keys": [dict(private_jwks["keys"][0], kid="made\nelsewhere")]}
    assert JWKManager(odd).kids() == ["made\nelsewhere"]


# ---------------------------------------------------------------------------------------------
# The package and the CLI


def test_keysetfile_is_exported_and_no_module_imports_fcntl_at_import_time() -> None:
    """Senders on Windows (no fcntl) import the package, KeySetFile included: only taking a
    lock imports fcntl. (asyncio imports it anyway on POSIX, so sys.modules cannot tell.)
    The receiver (a POSIX server, with its own file locks) is not a sender's import."""
    assert "KeySetFile" in request_crypto.__all__
    package = Path(request_crypto.__file__).parent
    at_import_time = []
    for source in sorted(package.glob("*.py")):
        for node in ast.parse(source.read_text()).body:  # module level statements only
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [alias.name for alias in node.names] + [getattr(node, "module", "")]
                if "fcntl" in names:
                    at_import_time.append(source.name)
    assert at_import_time == []


def test_keys_remove_without_yes_and_without_an_answer_is_an_error_line(key_file: Path) -> None:
    """Run for real with stdin at its end (`< /dev/null`, cron): no terminal to ask on."""
    before = key_file.read_bytes()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "request_crypto",
            "keys",
            "remove",
            str(key_file),
            "--kid",
            "kibana_1",
        ],
        stdin=subprocess.DEVNULL,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        "error: no terminal to confirm on and no answer on stdin; pass --yes to "
        "remove 'kibana_1' without asking"
    ]
    assert "Aborted" not in result.stderr
    assert key_file.read_bytes() == before


def test_keys_remove_reads_a_piped_answer(key_file: Path) -> None:
    result = runner.invoke(
        app, ["keys", "remove", str(key_file), "--kid", "kibana_1"], input="yes\n"
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""  # the question goes to stderr, like every note
    assert kids_in(key_file) == ["kibana_2"]


def test_every_keyset_error_is_a_request_crypto_error(tmp_path: Path) -> None:
    for call in (
        lambda: KeySetFile(tmp_path / "none.json").kids(),
        lambda: KeySetFile(tmp_path / "none.json").remove("x"),
        lambda: KeySetFile.init(tmp_path / "missing-dir" / "k.json", "a"),
        lambda: KeySetFile.init(tmp_path / "k.json", "a", size=1024),
    ):
        with pytest.raises(RequestCryptoError):
            call()
