"""Signing keys kept in a token (SoftHSM) or in KMS (moto), through the CLI.

`keys init pkcs11:... --alg ES256|RS256|PS256` makes the key pair in the token, `keys public`
writes its public JWK, `encrypt --sign-with URI` signs through the token or KMS, and
`decrypt --verify-with` checks with the exported set or with the same URI.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from request_crypto import JWKManager
from request_crypto._b64 import b64url_decode
from request_crypto.keys.signing import generate_signing_jwk, public_key_set

from .runner import PAYLOAD, fails, ok


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("receiver")
    manager = JWKManager()
    manager.add_key("rx")
    paths = {"private": directory / "private.json", "public": directory / "public.json"}
    paths["private"].write_text(json.dumps(manager.get_private_jwks()))
    paths["public"].write_text(json.dumps(manager.get_public_jwks()))
    return paths


def _signed_body(receiver: dict[str, Path], sign_with: str) -> str:
    return ok(
        "encrypt", "--jwks", receiver["public"], "--sign-with", sign_with, "--issuer", "kibana",
        stdin=json.dumps(PAYLOAD),
    ).stdout.strip()  # fmt: skip


def _verified(receiver: dict[str, Path], body: str, verify_with: object) -> dict[str, Any]:
    out = ok("decrypt", "--jwks", receiver["private"], "--verify-with", verify_with, stdin=body)
    claims: dict[str, Any] = json.loads(out.stdout)
    return claims


MEMBERS = {"ES256": ["crv", "x", "y"], "RS256": ["e", "n"], "PS256": ["e", "n"]}


@pytest.mark.parametrize("alg", ["ES256", "RS256", "PS256"])
def test_token_signing_key_made_published_signed_with_and_verified(
    softhsm: Any, receiver: dict[str, Path], tmp_path: Path, alg: str
) -> None:
    label = f"cli-{alg.lower()}"
    ok("keys", "init", softhsm.uri(None, token="rc-sign"), "--kid", label, "--alg", alg)
    uri = softhsm.uri(label, token="rc-sign", alg="" if alg == "ES256" else alg)
    public = tmp_path / "sender_public.json"
    ok("keys", "public", uri, "-o", public)
    (jwk,) = json.loads(public.read_text())["keys"]
    assert sorted(jwk) == sorted(["kty", "kid", "use", "alg", *MEMBERS[alg]])
    assert (jwk["kid"], jwk["use"], jwk["alg"]) == (label, "sig", alg)
    body = _signed_body(receiver, uri)
    for verify_with in (public, uri):  # the exported set, or the key in the token
        claims = _verified(receiver, body, verify_with)
        assert {k: claims[k] for k in PAYLOAD} == PAYLOAD and claims["iss"] == "kibana"
    inspected = json.loads(ok("inspect", "--jwks", receiver["private"], stdin=body).stdout)
    assert inspected["signer"]["kid"] == label and inspected["signer"]["alg"] == alg
    # The same kid with another key: refused, one line.
    other = {"keys": [generate_signing_jwk(label, alg)]}
    impostor = tmp_path / "impostor.json"
    impostor.write_text(json.dumps(public_key_set(other)))
    error = fails("decrypt", "--jwks", receiver["private"], "--verify-with", impostor, stdin=body)
    assert "does not verify" in error


def test_es256_from_the_token_is_the_64_byte_jose_form(softhsm: Any) -> None:
    from request_crypto.keys.pkcs11_signing import PKCS11SigningKey

    ok("keys", "init", softhsm.uri("jose-form", token="rc-sign"), "--alg", "ES256")
    key = PKCS11SigningKey(softhsm.uri("jose-form", token="rc-sign"))
    for _ in range(20):  # a DER signature would vary in length (70-72); r || s never does
        signature = key.sign(b"header.payload")
        assert len(signature) == 64
        assert key.verify(b"header.payload", signature)
    assert not key.verify(b"header.payload", signature[:-1])


def test_token_signing_key_mistakes_are_one_error_line(softhsm: Any, receiver) -> None:
    ok("keys", "init", softhsm.uri("cli-rsa", token="rc-sign"), "--alg", "RS256")
    no_alg = softhsm.uri("cli-rsa", token="rc-sign")
    assert "alg=RS256 or alg=PS256" in fails("encrypt", "--jwks", receiver["public"],
                                             "--sign-with", no_alg, stdin="{}")  # fmt: skip
    missing = softhsm.uri("no-such-key", token="rc-sign", alg="ES256")
    assert "no private signing keys match" in fails(
        "encrypt", "--jwks", receiver["public"], "--sign-with", missing, stdin="{}"
    )
    taken = softhsm.uri("cli-rsa", token="rc-sign")
    assert "already holds" in fails("keys", "init", taken, "--alg", "ES256")
    assert "--sign-kid" in fails(
        "encrypt", "--jwks", receiver["public"], "--sign-with",
        softhsm.uri("cli-rsa", token="rc-sign", alg="RS256"), "--sign-kid", "x", stdin="{}",
    )  # fmt: skip


@pytest.mark.parametrize("alg", ["ES256", "HS256"])
def test_kms_signing_key_through_encrypt_and_decrypt(
    kms: Any, receiver: dict[str, Path], alg: str
) -> None:
    alias = f"cli-sender-{alg.lower()}"
    kms.signing_key(alg, alias=alias)
    uri = f"aws-kms:alias/{alias}"
    body = _signed_body(receiver, uri)
    claims = _verified(receiver, body, uri)
    assert {k: claims[k] for k in PAYLOAD} == PAYLOAD
    # Another KMS key under the same kid does not verify it.
    kms.signing_key(alg, alias=f"{alias}-other")
    error = fails(
        "decrypt", "--jwks", receiver["private"],
        "--verify-with", f"aws-kms:alias/{alias}-other?kid={alias}", stdin=body,
    )  # fmt: skip
    assert "does not verify" in error
    header = json.loads(b64url_decode(body.split(".")[0], "header"))
    assert header["cty"] == "JWT"
    if alg == "ES256":  # keys public of a KMS signing key: its public JWK from GetPublicKey
        (jwk,) = json.loads(ok("keys", "public", uri).stdout)["keys"]
        assert (jwk["kid"], jwk["use"], jwk["alg"], jwk["crv"]) == (alias, "sig", "ES256", "P-256")
    else:
        assert "no public half" in fails("keys", "public", uri)
