"""Private key-set files wrapped by a KMS key (`--wrap-with aws-kms:...`), against moto's server.

Written as a `dir` + A256GCM compact JWE under a KMS data key whose CiphertextBlob and key ARN
are in the protected header; every command reads them through KMS `Decrypt`, with no option.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from request_crypto._b64 import b64url_decode, b64url_encode
from request_crypto.errors import KeySourceUnavailableError, WrongWrappingKeyError
from request_crypto.keyfile import read_jwks
from request_crypto.keys.kms_wrap import ENCRYPTION_CONTEXT

from .runner import PAYLOAD, fails, ok


def symmetric_key(kms: Any, alias: str) -> str:
    """A new symmetric ENCRYPT_DECRYPT KMS key under `alias/NAME`; its ARN."""
    client = kms.client()
    arn: str = client.create_key()["KeyMetadata"]["Arn"]
    client.create_alias(AliasName=f"alias/{alias}", TargetKeyId=arn)
    return arn


def header_of(path: Path) -> dict[str, Any]:
    header: dict[str, Any] = json.loads(b64url_decode(path.read_text().split(".")[0], "header"))
    return header


def test_wrapped_set_through_every_command_and_rotation_keeps_the_key(
    kms: Any, tmp_path: Path
) -> None:
    arn = symmetric_key(kms, "wrap-every")
    private, public = tmp_path / "private.jwe", tmp_path / "public.json"
    ok("keys", "init", private, "--kid", "k-1", "--wrap-with", "aws-kms:alias/wrap-every")
    first = header_of(private)
    assert {k: first[k] for k in ("alg", "enc", "cty", "kms_key_id")} == {
        "alg": "dir", "enc": "A256GCM", "cty": "jwk-set+json", "kms_key_id": arn,
    }  # fmt: skip
    assert '"d"' not in private.read_text() and private.stat().st_mode & 0o777 == 0o600
    ok("keys", "add", private, "--kid", "k-2")  # no option: opened and re-wrapped via KMS
    new = ok("keys", "rotate", private).stdout.strip()
    rotated = header_of(private)
    assert rotated["kms_key_id"] == arn and rotated["kms_ciphertext"] != first["kms_ciphertext"]
    listed = json.loads(ok("keys", "list", private, "--json").stdout)
    assert [row["kid"] for row in listed] == ["k-1", "k-2", new]
    ok("keys", "public", private, "-o", public)
    body = ok("encrypt", "--jwks", public, "--kid", "k-2", stdin=json.dumps(PAYLOAD)).stdout
    assert json.loads(ok("decrypt", "--jwks", private, stdin=body.strip()).stdout) == PAYLOAD
    ok("keys", "remove", private, "--kid", "k-1", "--yes")
    assert header_of(private)["kms_key_id"] == arn
    # --wrap-with another key re-wraps the file under it
    other = symmetric_key(kms, "wrap-every-2")
    ok("keys", "rotate", private, "--wrap-with", "aws-kms:alias/wrap-every-2")
    assert header_of(private)["kms_key_id"] == other
    assert len(read_jwks(private)["keys"]) == 3


def test_a_wrapped_signing_set_signs(kms: Any, tmp_path: Path) -> None:
    symmetric_key(kms, "wrap-signing")
    receiver, sender = tmp_path / "rx.json", tmp_path / "sender.jwe"
    ok("keys", "init", receiver, "--kid", "rx")
    ok("keys", "public", receiver, "-o", tmp_path / "rx_public.json")
    ok("keys", "init", sender, "--kid", "s-1", "--alg", "ES256", "--wrap-with",
       "aws-kms:alias/wrap-signing")  # fmt: skip
    ok("keys", "public", sender, "-o", tmp_path / "sender_public.json")
    body = ok("encrypt", "--jwks", tmp_path / "rx_public.json", "--sign-with", sender,
              stdin=json.dumps(PAYLOAD)).stdout.strip()  # fmt: skip
    claims = json.loads(
        ok(
            "decrypt",
            "--jwks",
            receiver,
            "--verify-with",
            tmp_path / "sender_public.json",
            stdin=body,
        ).stdout
    )
    assert {k: claims[k] for k in PAYLOAD} == PAYLOAD


def test_standard_tools_open_a_wrapped_file(kms: Any, tmp_path: Path) -> None:
    """aws kms decrypt (boto3 here) with the documented context, then any JOSE library."""
    from joserfc import jwe
    from joserfc.jwk import OctKey

    symmetric_key(kms, "wrap-tools")
    private = tmp_path / "private.jwe"
    ok("keys", "init", private, "--kid", "k-1", "--wrap-with", "aws-kms:alias/wrap-tools")
    blob = b64url_decode(header_of(private)["kms_ciphertext"], "blob")
    data_key = kms.client().decrypt(CiphertextBlob=blob, EncryptionContext=ENCRYPTION_CONTEXT)
    # joserfc refuses header members it does not know unless told they are expected
    registry = jwe.JWERegistry(algorithms=["dir", "A256GCM"], strict_check_header=False)
    opened = jwe.decrypt_compact(
        private.read_text().strip(), OctKey.import_key(data_key["Plaintext"]), registry=registry
    )
    assert [k["kid"] for k in json.loads(opened.plaintext)["keys"]] == ["k-1"]


def _reheadered(path: Path, **changes: Any) -> None:
    """The file with header members changed (the ciphertext and tag kept)."""
    parts = path.read_text().strip().split(".")
    header = {**header_of(path), **changes}
    parts[0] = b64url_encode(json.dumps(header).encode())
    path.write_text(".".join(parts) + "\n")


def test_wrong_key_or_purpose_is_one_clear_error(kms: Any, tmp_path: Path) -> None:
    symmetric_key(kms, "wrap-wrong")
    other = symmetric_key(kms, "wrap-wrong-other")
    private = tmp_path / "private.jwe"
    ok("keys", "init", private, "--kid", "k-1", "--wrap-with", "aws-kms:alias/wrap-wrong")
    original = private.read_text()
    _reheadered(private, kms_key_id=other)  # the blob is not the other key's
    with pytest.raises(WrongWrappingKeyError, match="does not open"):
        read_jwks(private)
    assert "does not open this key set" in fails("keys", "list", private)
    private.write_text(original)
    foreign = kms.client().generate_data_key(  # a data key KMS made for another purpose
        KeyId="alias/wrap-wrong", KeySpec="AES_256", EncryptionContext={"purpose": "other"}
    )
    _reheadered(private, kms_ciphertext=b64url_encode(foreign["CiphertextBlob"]))
    assert "does not open this key set" in fails("decrypt", "--jwks", private, stdin="x")
    private.write_text(original)
    parts = original.strip().split(".")
    parts[3] = parts[3][:-2] + ("AA" if parts[3][-2:] != "AA" else "BB")
    private.write_text(".".join(parts))
    assert "altered" in fails("keys", "list", private)


def test_unreachable_kms_and_bad_options_are_one_line(
    kms: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    symmetric_key(kms, "wrap-down")
    private = tmp_path / "private.jwe"
    ok("keys", "init", private, "--kid", "k-1", "--wrap-with", "aws-kms:alias/wrap-down")
    assert "no such key" in fails(
        "keys", "init", tmp_path / "x.jwe", "--kid", "k", "--wrap-with", "aws-kms:alias/none"
    )
    assert not (tmp_path / "x.jwe").exists()
    assert "not both" in fails("keys", "add", private, "--kid", "k-2", "--wrap-with",
                               "aws-kms:alias/wrap-down", "--password-file", private)  # fmt: skip
    assert "aws-kms:" in fails("keys", "add", private, "--kid", "k-2", "--wrap-with", "kms:x")
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(KeySourceUnavailableError):
        read_jwks(private)
    assert "unavailable" in fails("decrypt", "--jwks", private, stdin="x")
    assert "unavailable" in fails("keys", "add", private, "--kid", "k-2")
    assert "unavailable" in fails("serve", "--jwks", private, "--port", "0")
