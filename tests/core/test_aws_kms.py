"""The AWS KMS key source against moto's standalone server (the `kms` fixture)."""

from __future__ import annotations

from typing import Any

import pytest

from request_crypto import RequestDecryptor, RequestEncryptor
from request_crypto.errors import (
    DecryptionError,
    KeySourceError,
    KeySourceUnavailableError,
    UnsupportedAlgorithmError,
)
from request_crypto.keys.aws_kms import AWSKMSKeySource
from request_crypto.keys.jwks import JWKManager

PAYLOAD = {"event": "login", "n": [1, 2, 3]}


def _public_set(source: AWSKMSKeySource) -> dict[str, Any]:
    return {"keys": [source.public_jwk(kid) for kid in source.kids()]}


@pytest.mark.parametrize("alg", ["RSA-OAEP", "RSA-OAEP-256"])
@pytest.mark.parametrize("format", ["elastic", "jwe"])
def test_bodies_decrypt_through_kms(kms: Any, alg: str, format: str) -> None:
    arn = kms.rsa_key()
    source = AWSKMSKeySource(f"aws-kms:{arn}?alg={alg}&kid=kms-1")
    assert source.kids() == ["kms-1"]
    jwk = source.public_jwk("kms-1")
    assert jwk is not None and jwk["alg"] == alg and "d" not in jwk
    body = RequestEncryptor(_public_set(source), format=format).encrypt("kms-1", PAYLOAD)
    assert RequestDecryptor(source).decrypt(body) == PAYLOAD


def test_alias_names_the_kid_and_an_arn_alone_gets_the_thumbprint(kms: Any) -> None:
    arn = kms.rsa_key(alias="receiver-a")
    by_alias = AWSKMSKeySource("aws-kms:alias/receiver-a")
    assert by_alias.kids() == ["receiver-a"]
    by_arn = AWSKMSKeySource(f"aws-kms:{arn}")
    jwk = by_alias.public_jwk("receiver-a")
    assert jwk is not None
    expected = JWKManager({"keys": [{**jwk, "kid": "t"}]}).thumbprint("t")
    assert by_arn.kids() == [expected]


def test_a_body_for_another_key_is_the_one_decryption_error(kms: Any) -> None:
    source = AWSKMSKeySource(f"aws-kms:{kms.rsa_key()}?kid=kms-1")
    other = JWKManager()
    other.add_key("kms-1")
    body = RequestEncryptor(other.get_public_jwks(), format="jwe").encrypt("kms-1", PAYLOAD)
    with pytest.raises(DecryptionError) as caught:
        RequestDecryptor(source).decrypt(body)
    assert caught.value.__context__ is None
    with pytest.raises(UnsupportedAlgorithmError):
        source.unwrap("kms-1", "RSA-OAEP-256", b"\x00" * 256)


def test_throttling_is_retried_then_unavailable(kms: Any) -> None:
    source = AWSKMSKeySource(f"aws-kms:{kms.rsa_key()}?kid=kms-1")
    body = RequestEncryptor(_public_set(source), format="jwe").encrypt("kms-1", PAYLOAD)
    decryptor = RequestDecryptor(source)
    kms.throttle(2)  # fewer than the attempts: the backoff retries absorb it
    assert decryptor.decrypt(body) == PAYLOAD
    kms.throttle(50)
    with pytest.raises(KeySourceUnavailableError, match="ThrottlingException") as caught:
        decryptor.decrypt(body)
    assert not isinstance(caught.value, DecryptionError)
    assert caught.value.retry_after > 0
    kms.throttle(0)
    assert decryptor.decrypt(body) == PAYLOAD  # recovers by itself


class _DownAfterOpening:
    """A real boto3 client until `opened`, then one pointed where nothing listens."""

    def __init__(self, up: Any, down: Any) -> None:
        self.up, self.down, self.opened = up, down, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.down if self.opened else self.up, name)


def _client(endpoint: str) -> Any:
    import boto3
    import botocore.config

    config = botocore.config.Config(retries={"total_max_attempts": 1}, connect_timeout=2)
    return boto3.client("kms", endpoint_url=endpoint, config=config)


def test_unreachable_kms_is_unavailable_not_a_bad_body(kms: Any) -> None:
    arn = kms.rsa_key()
    with pytest.raises(KeySourceUnavailableError, match="GetPublicKey failed"):
        AWSKMSKeySource(f"aws-kms:{arn}", client=_client("http://127.0.0.1:9"))
    client = _DownAfterOpening(_client(kms.endpoint), _client("http://127.0.0.1:9"))
    source = AWSKMSKeySource(f"aws-kms:{arn}?kid=kms-1", client=client)
    client.opened = True
    body = RequestEncryptor(_public_set(source), format="jwe").encrypt("kms-1", PAYLOAD)
    with pytest.raises(KeySourceUnavailableError, match="Decrypt failed") as caught:
        RequestDecryptor(source).decrypt(body)
    assert caught.value.source == f"aws-kms:{arn}?kid=kms-1"
    with pytest.raises(KeySourceUnavailableError):
        source.health()


def test_bad_uris_and_keys_are_configuration_errors(kms: Any) -> None:
    client = kms.client()
    signing = client.create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["Arn"]
    with pytest.raises(KeySourceError, match="not an RSA ENCRYPT_DECRYPT key"):
        AWSKMSKeySource(f"aws-kms:{signing}")
    with pytest.raises(KeySourceError, match="no such key"):
        AWSKMSKeySource("aws-kms:alias/absent")
    with pytest.raises(KeySourceError, match="unknown attribute"):
        AWSKMSKeySource(f"aws-kms:{kms.rsa_key()}?colour=blue")
    for error in (KeySourceError,):
        assert not issubclass(error, DecryptionError)


def test_health_of_an_enabled_and_a_disabled_key(kms: Any) -> None:
    arn = kms.rsa_key()
    source = AWSKMSKeySource(f"aws-kms:{arn}")
    source.health()
    kms.client().disable_key(KeyId=arn.rsplit("/", 1)[1])  # moto wants the bare id here
    with pytest.raises(KeySourceUnavailableError, match="Disabled"):
        source.health()
