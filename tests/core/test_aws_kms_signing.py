"""Signed bodies whose signing key stays in AWS KMS, against moto's server (the `kms` fixture).

ES256 signs with KMS `Sign` and verifies locally with `GetPublicKey`'s key; HS256 makes the MAC
with `GenerateMac` and checks it with `VerifyMac`.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils
from cryptography.hazmat.primitives.serialization import load_der_public_key

from request_crypto import JWKManager, RequestDecryptor, RequestEncryptor
from request_crypto._b64 import b64url_decode, b64url_encode
from request_crypto.errors import (
    KeySourceError,
    KeySourceUnavailableError,
    SignatureError,
    UnknownSignerError,
)
from request_crypto.keys.aws_kms_signing import AWSKMSSigningKey
from request_crypto.limits import Limits
from request_crypto.nested import Signer, Verifier

PAYLOAD = {"event": "login", "n": [1, 2, 3]}


@pytest.fixture(scope="module")
def receiver() -> dict[str, Any]:
    manager = JWKManager()
    manager.add_key("rx")
    return {"private": manager.get_private_jwks(), "public": manager.get_public_jwks()}


def _tampered(jws: str) -> str:
    """The same header and signature over a payload with one claim changed."""
    header, payload, signature = jws.split(".")
    changed = b64url_decode(payload, "payload").replace(b'"login"', b'"logout"')
    return f"{header}.{b64url_encode(changed)}.{signature}"


@pytest.mark.parametrize("alg", ["ES256", "HS256"])
def test_body_signed_through_kms_verifies_on_the_receiver(kms: Any, receiver, alg) -> None:
    uri = f"aws-kms:alias/sender-{alg.lower()}"
    kms.signing_key(alg, alias=f"sender-{alg.lower()}")
    sender = RequestEncryptor(receiver["public"], sign_with=uri, issuer="kibana")
    body = sender.encrypt("rx", PAYLOAD)
    assert sender.signer is not None and sender.signer.kid == f"sender-{alg.lower()}"
    result = RequestDecryptor(receiver["private"], verify_with=uri).decrypt_request(body)
    assert {k: result.payload[k] for k in PAYLOAD} == PAYLOAD
    assert result.signer is not None
    assert (result.signer.kid, result.signer.alg, result.signer.iss) == (
        f"sender-{alg.lower()}",
        alg,
        "kibana",
    )


def test_es256_signature_is_the_jose_form_of_the_kms_key(kms: Any) -> None:
    """r || s, 64 bytes, checked here with the public key straight from KMS."""
    arn = kms.signing_key("ES256")
    jws = Signer(f"aws-kms:{arn}?kid=s1").sign(PAYLOAD)
    header, payload, signature = jws.split(".")
    raw = b64url_decode(signature, "signature")
    assert len(raw) == 64
    der = utils.encode_dss_signature(
        int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
    )
    public = load_der_public_key(kms.client().get_public_key(KeyId=arn)["PublicKey"])
    assert isinstance(public, ec.EllipticCurvePublicKey)
    public.verify(der, f"{header}.{payload}".encode(), ec.ECDSA(hashes.SHA256()))


@pytest.mark.parametrize("alg", ["ES256", "HS256"])
def test_tampered_or_foreign_tokens_are_refused(kms: Any, alg: str) -> None:
    key = AWSKMSSigningKey(f"aws-kms:{kms.signing_key(alg)}?kid=s1")
    jws = Signer(key).sign(PAYLOAD)
    verifier = Verifier(key)
    assert verifier.verify(jws, Limits())[0]["event"] == "login"
    with pytest.raises(SignatureError, match="does not verify"):
        verifier.verify(_tampered(jws), Limits())
    header, payload, signature = jws.split(".")
    short = b64url_encode(b64url_decode(signature, "signature")[:-1])
    with pytest.raises(SignatureError, match="does not verify"):  # refused before KMS is asked
        verifier.verify(f"{header}.{payload}.{short}", Limits())
    other = AWSKMSSigningKey(f"aws-kms:{kms.signing_key(alg)}?kid=s1")  # same kid, other key
    with pytest.raises(SignatureError, match="does not verify"):
        Verifier(other).verify(Signer(key).sign(PAYLOAD), Limits())
    with pytest.raises(UnknownSignerError):
        Verifier(AWSKMSSigningKey(f"aws-kms:{kms.signing_key(alg)}?kid=s2")).verify(jws, Limits())


def test_hs256_mac_is_kms_hmac_not_a_local_secret(kms: Any) -> None:
    """A MAC made by KMS verifies with VerifyMac; a MAC made with a guessed local key does not."""
    key = AWSKMSSigningKey(f"aws-kms:{kms.signing_key('HS256')}?alg=HS256&kid=m1")
    data = b"header.payload"
    mac = key.sign(data)
    assert len(mac) == 32 and key.verify(data, mac)
    assert not key.verify(data, hashlib.sha256(data).digest())
    assert key.is_secret


def _down_client() -> Any:
    import boto3
    import botocore.config

    config = botocore.config.Config(retries={"total_max_attempts": 1}, connect_timeout=2)
    return boto3.client("kms", endpoint_url="http://127.0.0.1:9", config=config)


@pytest.mark.parametrize("alg", ["ES256", "HS256"])
def test_unreachable_kms_is_unavailable_not_a_bad_signature(kms: Any, alg: str) -> None:
    arn = kms.signing_key(alg)
    good = Signer(f"aws-kms:{arn}?kid=s1").sign(PAYLOAD)
    down = AWSKMSSigningKey(f"aws-kms:{arn}?alg={alg}&kid=s1", client=_down_client())
    with pytest.raises(KeySourceUnavailableError, match="failed") as caught:
        Signer(down).sign(PAYLOAD)
    assert not isinstance(caught.value, SignatureError)
    with pytest.raises(KeySourceUnavailableError, match="failed") as caught:
        Verifier(down).verify(good, Limits())
    assert not isinstance(caught.value, SignatureError)
    with pytest.raises(KeySourceUnavailableError):  # alg read from KMS: unavailable too
        AWSKMSSigningKey(f"aws-kms:{arn}", client=_down_client())


def test_bad_uris_and_keys_are_configuration_errors(kms: Any) -> None:
    with pytest.raises(KeySourceError, match="unknown attribute"):
        AWSKMSSigningKey("aws-kms:alias/x?colour=red")
    with pytest.raises(KeySourceError, match="ES256 or HS256"):
        AWSKMSSigningKey(f"aws-kms:{kms.signing_key('ES256')}?alg=RS256")
    with pytest.raises(KeySourceError, match="ECC_NIST_P256"):
        AWSKMSSigningKey(f"aws-kms:{kms.rsa_key()}")
    with pytest.raises(KeySourceError, match="no such key"):
        AWSKMSSigningKey("aws-kms:alias/missing")


class _OtherKeysAnswers:
    """A KMS client whose Sign/GenerateMac/VerifyMac answers name another key's ARN."""

    def __init__(self, client: Any, other_arn: str) -> None:
        self._client = client
        self._other = other_arn

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)
        if name not in ("sign", "generate_mac", "verify_mac"):
            return method

        def relabelled(**arguments: Any) -> Any:
            return {**method(**arguments), "KeyId": self._other}

        return relabelled


@pytest.mark.parametrize("alg", ["ES256", "HS256"])
def test_an_answer_for_another_key_is_never_used(kms: Any, alg: str) -> None:
    """Like Decrypt's in keys.aws_kms: Sign/GenerateMac/VerifyMac must name the asked key."""
    arn, other = kms.signing_key(alg), kms.signing_key(alg)
    good = Signer(f"aws-kms:{arn}?kid=s1").sign(PAYLOAD)
    liar = AWSKMSSigningKey(
        f"aws-kms:{arn}?alg={alg}&kid=s1", client=_OtherKeysAnswers(kms.client(), other)
    )
    with pytest.raises(KeySourceUnavailableError, match="not " + arn):
        Signer(liar).sign(PAYLOAD)
    if alg == "HS256":
        with pytest.raises(KeySourceUnavailableError, match="not " + arn):
            Verifier(liar).verify(good, Limits())
