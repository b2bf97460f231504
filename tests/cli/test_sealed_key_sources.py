"""`request-crypto open` and `inspect` of sealed files with any key source as --jwks.

Sealed to the public JWK `keys public URI` prints, opened with `--jwks pkcs:...` (SoftHSM2),
`--jwks aws-kms:...` (an RSA key in moto's KMS) or a password-protected set file, both in real
processes (the Typer-free path, `cli/_fast.py`) and through the Typer app (CliRunner).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from request_crypto import JWKManager

from .runner import fails, ok

SCRIPT = Path(sys.executable).parent / "request-crypto"
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "request_crypto"]
PASSWORD = "a long passphrase\n"


def run(*args: object, **environment: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*COMMAND, *map(str, args)],
        capture_output=True,
        timeout=300,
        check=False,
        env={**os.environ, **environment},
    )


def error_line(result: subprocess.CompletedProcess[bytes]) -> str:
    """A failed process: exit 1, one `error:` line, no traceback."""
    assert result.returncode == 1, result.stderr
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def sealed_to(uri: str, tmp_path: Path, data: bytes, *extra: object) -> Path:
    """`data` sealed (in a real process) to the public JWK `keys public URI` prints."""
    public, plain, sealed = tmp_path / "public.json", tmp_path / "plain", tmp_path / "sealed"
    public.write_text(ok("keys", "public", uri, *extra).stdout)
    plain.write_bytes(data)
    done = run("seal", "--jwks", public, plain, "-o", sealed)
    assert done.returncode == 0, done.stderr
    return sealed


def opens_both_ways(jwks: str, sealed: Path, data: bytes, *extra: object) -> None:
    """The file opens in a real process and through Typer, and inspect authenticates it."""
    out = sealed.with_name("out")
    done = run("open", "--jwks", jwks, *extra, sealed, "-o", out)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == data
    assert ok("open", "--jwks", jwks, *extra, sealed).stdout_bytes == data
    info = json.loads(ok("inspect", "--jwks", jwks, *extra, sealed).stdout)
    assert info["authenticated"] is True and info["plaintext_length"] == len(data)


def test_open_with_a_token_key(softhsm: Any, tmp_path: Path) -> None:
    uri = softhsm.uri("recv-1")
    data = os.urandom(150_000)
    sealed = sealed_to(uri, tmp_path, data)
    opens_both_ways(uri, sealed, data)
    # The archive directory mode opens through the token too.
    archive = tmp_path / "archive"
    archive.mkdir()
    sealed.rename(archive / "0001.sealed")
    assert ok("open", "--jwks", uri, archive).stdout_bytes == data


def test_open_with_an_rsa_key_in_kms(kms: Any, tmp_path: Path) -> None:
    uri = f"aws-kms:{kms.rsa_key()}?alg=RSA-OAEP-256"
    data = os.urandom(70_000)
    sealed = sealed_to(uri, tmp_path, data)
    assert json.loads(ok("inspect", sealed).stdout)["recipients"][0]["alg"] == "RSA-OAEP-256"
    opens_both_ways(uri, sealed, data)


def test_open_with_a_password_protected_set(tmp_path: Path) -> None:
    private, password = tmp_path / "private.jwe", tmp_path / "password"
    password.write_text(PASSWORD)
    ok("keys", "init", private, "--kid", "at-rest", "--password-file", password)
    data = os.urandom(5000)
    sealed = sealed_to(str(private), tmp_path, data, "--password-file", password)
    opens_both_ways(str(private), sealed, data, "--password-file", password)
    out = tmp_path / "from-env"
    done = run(
        "open", "--jwks", private, sealed, "-o", out, REQUEST_CRYPTO_PASSWORD_FILE=str(password)
    )
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == data
    assert "encrypted at rest" in error_line(run("open", "--jwks", private, sealed))
    wrong = tmp_path / "wrong"
    wrong.write_text("not it\n")
    assert "password does not open" in error_line(
        run("open", "--jwks", private, "--password-file", wrong, sealed)
    )


def test_a_wrong_token_key_is_the_wrong_file_key_error(softhsm: Any, tmp_path: Path) -> None:
    owner, impostor = JWKManager(), JWKManager()
    owner.add_key("recv-1", alg="RSA-OAEP")
    impostor.add_key("recv-1", alg="RSA-OAEP")
    files = {"public.json": owner.get_public_jwks(), "impostor.json": impostor.get_private_jwks()}
    for name, document in files.items():
        (tmp_path / name).write_text(json.dumps(document))
        (tmp_path / name).chmod(0o600)
    (tmp_path / "plain").write_bytes(b"for the owner only")
    sealed = tmp_path / "sealed"
    assert (
        run("seal", "--jwks", tmp_path / "public.json", tmp_path / "plain", "-o", sealed).returncode
        == 0
    )
    from_token = error_line(run("open", "--jwks", softhsm.uri("recv-1"), sealed))
    from_file = error_line(run("open", "--jwks", tmp_path / "impostor.json", sealed))
    assert from_token == from_file
    assert from_token == fails("open", "--jwks", softhsm.uri("recv-1"), sealed)
    assert "unavailable" not in from_token


def test_an_unreachable_kms_is_one_error_line_not_a_wrong_key(
    kms: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"aws-kms:{kms.rsa_key()}?alg=RSA-OAEP-256"
    sealed = sealed_to(uri, tmp_path, b"data")
    down = {"AWS_ENDPOINT_URL_KMS": "http://127.0.0.1:9"}
    line = error_line(run("open", "--jwks", uri, sealed, **down))
    assert "unavailable" in line and "GetPublicKey failed" in line
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", "http://127.0.0.1:9")
    assert "unavailable" in fails("open", "--jwks", uri.partition("?")[0], sealed)
