"""`encrypt`, `decrypt`, `inspect` via CliRunner: round trips, and errors a person can act on."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from request_crypto import RequestDecryptor, detect_format, keyfile
from tests.cli.runner import (
    NEW,
    OLD,
    PAYLOAD,
    fails,
    inspect_kid,
    kids,
    ok,
    usage_error,
)

# ---------------------------------------------------------------------------------------------
# encrypt, decrypt, inspect


@pytest.mark.parametrize("body_format", ["elastic", "jwe"])
def test_encrypt_then_decrypt_round_trips(
    made: SimpleNamespace, tmp_path: Path, body_format: str
) -> None:
    source = tmp_path / "payload.json"
    source.write_text(json.dumps(PAYLOAD, ensure_ascii=False), encoding="utf-8")
    body = ok("encrypt", "--jwks", made.public, "--format", body_format, source).stdout
    assert body.endswith("\n")
    assert detect_format(body.strip()).value == body_format
    decrypted = ok("decrypt", "--jwks", made.private, stdin=body).stdout
    assert json.loads(decrypted) == PAYLOAD
    assert "café ☕" in decrypted  # UTF-8, not \\u escapes, for a person reading it


def test_encrypt_and_decrypt_read_stdin_without_an_argument(made: SimpleNamespace) -> None:
    body = ok("encrypt", "--jwks", made.public, stdin=json.dumps(PAYLOAD)).stdout
    assert json.loads(ok("decrypt", "--jwks", made.private, stdin=body).stdout) == PAYLOAD


def test_decrypt_reads_a_file(made: SimpleNamespace, body_file: Path) -> None:
    assert json.loads(ok("decrypt", "--jwks", made.private, body_file).stdout) == PAYLOAD


def test_encrypt_uses_the_newest_key_unless_told(made: SimpleNamespace) -> None:
    newest = ok("encrypt", "--jwks", made.public, stdin="{}").stdout
    chosen = ok("encrypt", "--jwks", made.public, "--kid", OLD, stdin="{}").stdout
    assert inspect_kid(made.private, newest) == kids(made.public)[-1] == NEW
    assert inspect_kid(made.private, chosen) == OLD


def test_encrypt_with_the_private_set_uses_its_public_halves(made: SimpleNamespace) -> None:
    body = ok("encrypt", "--jwks", made.private, stdin="[true]").stdout
    assert json.loads(ok("decrypt", "--jwks", made.private, stdin=body).stdout) == [True]


@pytest.mark.parametrize("body_format", ["elastic", "jwe"])
def test_inspect_shows_the_metadata_and_the_format(made: SimpleNamespace, body_format: str) -> None:
    body = ok("encrypt", "--jwks", made.public, "--format", body_format, stdin="1").stdout
    shown = json.loads(ok("inspect", "--jwks", made.private, stdin=body).stdout)
    expected = RequestDecryptor.from_file(made.private).get_jwk_metadata(body.strip()).to_dict()
    assert shown == {"format": body_format, **expected}
    assert shown["key"]["kid"] == shown["header"]["kid"] == NEW
    if body_format == "elastic":  # the JavaScript library's shape
        assert shown["protected"] == ["zip", "enc", "alg", "kid"]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def tampered(body: str) -> str:
    """Flip one bit of the wrapped key's tag, keeping the body well formed."""
    envelope = json.loads(unb64url(body.strip()))
    parts = envelope["encryptedAESKey"].split(".")
    tag = bytearray(unb64url(parts[4]))
    tag[0] ^= 1
    envelope["encryptedAESKey"] = ".".join([*parts[:4], b64url(bytes(tag))])
    return b64url(json.dumps(envelope, separators=(",", ":")).encode())


def test_body_errors_are_one_line_a_person_can_act_on(
    made: SimpleNamespace, body_file: Path, tmp_path: Path
) -> None:
    body = body_file.read_text()
    for command in ("decrypt", "inspect"):
        message = fails(command, "--jwks", made.public, body_file)
        assert "no private keys" in message
        assert f"{command} needs the private set" in message

        message = fails(command, "--jwks", made.other, body_file)
        assert "no key found" in message
        assert repr(NEW) in message  # which kid the body wants
        assert "'other-key'" in message  # and which kids this set has

        assert "unable to decrypt" in fails(command, "--jwks", made.private, stdin=tampered(body))
        assert "dot-separated" in fails(command, "--jwks", made.private, stdin="a.b.c")
        assert "base64url" in fails(command, "--jwks", made.private, stdin="not*base64")
        assert "empty" in fails(command, "--jwks", made.private, stdin="\n")
        assert "no such file" in fails(command, "--jwks", made.private, tmp_path / "nope")


def test_a_hostile_kid_cannot_break_the_error_line(made: SimpleNamespace) -> None:
    header = b64url(b'{"alg":"RSA-OAEP","enc":"A256GCM","kid":"x\\ny"}')
    token = header + ".AAAA.AAAA.AAAA.AAAA"
    assert "x\\ny" in fails("decrypt", "--jwks", made.private, stdin=token)


def test_a_path_with_a_newline_stays_on_one_line(tmp_path: Path) -> None:
    message = fails("keys", "list", tmp_path / "two\nlines.json")
    assert "two\\nlines.json" in message


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "no such key-set file"),
        ("{not json", "not valid JSON"),
        ('{"keys": []}', "holds no keys"),
        ('{"keys": {}}', '{"keys": [...]}'),
        ('{"keys": [{"kty": "EC", "kid": "e"}]}', "only RSA keys"),
    ],
    ids=["missing", "malformed", "empty", "not-a-set", "invalid-key"],
)
@pytest.mark.parametrize("command", ["encrypt", "decrypt", "inspect"])
def test_key_set_errors(
    tmp_path: Path, body_file: Path, command: str, content: str | None, expected: str
) -> None:
    path = tmp_path / "set.json"
    if content is not None:
        path.write_text(content)
    source = body_file if command != "encrypt" else "-"
    message = fails(command, "--jwks", path, source, stdin="{}")
    assert expected in message
    assert str(path) in message


def test_keys_commands_report_key_set_errors_too(tmp_path: Path) -> None:
    path = tmp_path / "set.json"
    path.write_text("[]")
    for args in (["list"], ["public"], ["add", "--kid", "k"], ["rotate"], ["remove", "--kid", "k"]):
        assert str(path) in fails("keys", args[0], path, *args[1:])
    assert path.read_text() == "[]"


def test_encrypt_errors(made: SimpleNamespace, tmp_path: Path) -> None:
    message = fails("encrypt", "--jwks", made.public, "--kid", "nope", stdin="{}")
    assert "'nope'" in message
    assert NEW in message  # the kids it could have used
    assert "line 1 column 9" in fails("encrypt", "--jwks", made.public, stdin='{"a": 1,}')
    assert "JSON value" in fails("encrypt", "--jwks", made.public, stdin='{"a": NaN}')
    assert "out of range" in fails("encrypt", "--jwks", made.public, stdin='{"a": -1e400}')
    assert "not UTF-8" in fails("encrypt", "--jwks", made.public, stdin=b"\xff\xfe\xfa")
    assert "no such file" in fails("encrypt", "--jwks", made.public, tmp_path / "nope.json")


def test_deeply_nested_json_is_an_error_not_a_traceback(
    made: SimpleNamespace, private_set: Path, tmp_path: Path
) -> None:
    deep = "[" * 100_000
    assert "nested too deeply" in fails("encrypt", "--jwks", made.public, stdin=deep)
    # `keys public -o` looks into the file it would replace: such a file is no key set
    target = tmp_path / "deep.json"
    target.write_text(deep)
    ok("keys", "public", private_set, "-o", target)
    assert kids(target) == [OLD, NEW]


@pytest.mark.parametrize(
    "args",
    [
        ["decrypt"],
        ["inspect"],
        ["encrypt"],
        ["encrypt", "--jwks", "x", "--format", "xml"],
        ["keys", "remove", "x"],
        ["keys", "add", "x"],
        ["keys", "frobnicate"],
        ["frobnicate"],
    ],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    usage_error(*args)


class FailingDirectorySync:
    """`os` for keyfile, where fsync of a directory fails (as on some network file systems)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def fsync(self, fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(5, "Input/output error")
        os.fsync(fd)


def test_a_failed_directory_sync_is_one_error_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keyfile, "os", FailingDirectorySync())
    message = fails("keys", "init", tmp_path / "keys.json", "--kid", "a")
    assert "syncing its directory" in message
    assert "Input/output error" in message
