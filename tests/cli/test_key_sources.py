"""The CLI with key sources: HSM and KMS URIs for --jwks and `keys`, and encrypted key files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from request_crypto import KeySetFile, RequestEncryptor

from .runner import PAYLOAD, fails, invoke, ok, usage_error

PASSWORD = "a long passphrase\n"


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "password"
    path.write_text(PASSWORD)
    return path


def test_encrypted_key_set_through_every_command(
    tmp_path: Path, password_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    private, public = tmp_path / "private.jwe", tmp_path / "public.json"
    ok("keys", "init", private, "--kid", "k-1", "--password-file", password_file)
    assert private.read_text().startswith("ey")
    monkeypatch.setenv("REQUEST_CRYPTO_PASSWORD_FILE", str(password_file))
    ok("keys", "add", private, "--kid", "k-2")
    new = ok("keys", "rotate", private).stdout.strip()
    listed = json.loads(ok("keys", "list", private, "--json").stdout)
    assert [row["kid"] for row in listed] == ["k-1", "k-2", new]
    ok("keys", "public", private, "-o", public)
    body = ok("encrypt", "--jwks", public, stdin=json.dumps(PAYLOAD)).stdout.strip()
    assert json.loads(ok("decrypt", "--jwks", private, stdin=body).stdout) == PAYLOAD
    ok("keys", "remove", private, "--kid", "k-1", "--yes")
    assert private.read_text().startswith("ey")  # still encrypted after every change


def test_wrong_or_missing_password_is_one_error_line(tmp_path: Path, password_file: Path) -> None:
    private = tmp_path / "private.jwe"
    ok("keys", "init", private, "--kid", "k-1", "--password-file", password_file)
    wrong = tmp_path / "wrong"
    wrong.write_text("not it\n")
    assert "password does not open" in fails("keys", "list", private, "--password-file", wrong)
    assert "encrypted at rest" in fails("decrypt", "--jwks", private, stdin="x")
    assert "password does not open" in fails(
        "keys", "add", private, "--kid", "k-2", "--password-file", wrong
    )


def test_pkcs11_init_public_list_decrypt_and_import(softhsm: Any, tmp_path: Path) -> None:
    uri = softhsm.uri(None, token="rc-cli")
    ok("keys", "init", uri, "--kid", "cli-made")
    made = softhsm.uri("cli-made", token="rc-cli")
    public = json.loads(ok("keys", "public", made).stdout)
    assert [jwk["kid"] for jwk in public["keys"]] == ["cli-made"]
    assert "d" not in public["keys"][0]
    rows = json.loads(ok("keys", "list", made, "--json").stdout)
    assert rows[0]["private"] is True and rows[0]["size"] == 2048
    body = RequestEncryptor(public, format="jwe").encrypt("cli-made", PAYLOAD)
    assert json.loads(ok("decrypt", "--jwks", made, stdin=body).stdout) == PAYLOAD
    inspected = json.loads(ok("inspect", "--jwks", made, stdin=body).stdout)
    assert inspected["key"]["kid"] == "cli-made"
    # a JSON set moved into the token: the same public key, bodies made before still open
    keys = KeySetFile.init(tmp_path / "old.json", "moved-cli")
    old_body = RequestEncryptor(keys.publish(), format="elastic").encrypt("moved-cli", PAYLOAD)
    ok("keys", "import", keys.path, uri)
    moved = softhsm.uri("moved-cli", token="rc-cli")
    assert json.loads(ok("decrypt", "--jwks", moved, stdin=old_body).stdout) == PAYLOAD


def test_pkcs11_refusals_are_one_error_line(softhsm: Any, tmp_path: Path) -> None:
    made = softhsm.uri("recv-1")
    assert "keys init URI" in fails("keys", "add", made, "--kid", "x")
    assert "already holds a key" in fails("keys", "init", made)
    assert "unknown key source scheme" in fails("decrypt", "--jwks", "vault:x", stdin="x")
    with_pin = softhsm.uri("recv-1", pin_source="", pin_value="1234")
    result = invoke("keys", "public", with_pin)
    assert result.exit_code == 0
    assert result.stderr.startswith("warning: ") and "pin-source" in result.stderr
    assert "1234" not in result.stderr


def test_kms_public_and_decrypt(kms: Any) -> None:
    uri = f"aws-kms:{kms.rsa_key(alias='cli-kms')}"
    public = json.loads(ok("keys", "public", "aws-kms:alias/cli-kms").stdout)
    assert public["keys"][0]["kid"] == "cli-kms"
    body = RequestEncryptor(public, format="jwe").encrypt("cli-kms", PAYLOAD)
    assert json.loads(ok("decrypt", "--jwks", "aws-kms:alias/cli-kms", stdin=body).stdout) == (
        PAYLOAD
    )
    assert "AWS's" in fails("keys", "init", uri)


def test_keys_init_of_a_file_still_needs_a_kid(tmp_path: Path) -> None:
    usage_error("keys", "init", tmp_path / "k.json")
