"""Sealed files opened with key sources whose private keys stay outside the process.

A PKCS#11 token (SoftHSM2, the `softhsm` fixture) and an RSA key in AWS KMS (moto's server
with its RSA-decrypt shim, the `kms` fixture) unwrap the recipient's content key; the file
key is decrypted here. A wrong key answers what a wrong key-set file answers, and a source
that cannot answer is KeySourceUnavailableError, never a wrong key.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import pytest

from interop.softhsm import token_dir
from request_crypto import JWKManager, KeySetFile, SealedReader, open_sealed, seal
from request_crypto.errors import (
    HeaderAuthenticationError,
    KeySourceUnavailableError,
    NoRecipientKeyError,
)
from request_crypto.keys.merged import MergedKeySource
from request_crypto.keys.uri import open_key_source, open_sealed_keys

SEG = 1024
DATA = os.urandom(3 * SEG + 17)


def _sealed(recipients: list[dict[str, Any]], data: bytes = DATA) -> bytes:
    out = io.BytesIO()
    seal(io.BytesIO(data), out, recipients, segment_size=SEG)
    return out.getvalue()


def _open(sealed: bytes, keys: Any) -> bytes:
    out = io.BytesIO()
    open_sealed(io.BytesIO(sealed), out, keys)
    return out.getvalue()


def _refusal(sealed: bytes, keys: Any) -> tuple[type[Exception], str]:
    with pytest.raises((HeaderAuthenticationError, NoRecipientKeyError)) as caught:
        _open(sealed, keys)
    return type(caught.value), str(caught.value)


@pytest.fixture(scope="module")
def token(softhsm: Any) -> Any:
    source = open_key_source(softhsm.uri("recv-1"))
    yield source
    source.close()


def test_a_token_key_opens_what_was_sealed_to_its_public_jwk(token: Any) -> None:
    sealed = _sealed([token.public_jwk("recv-1")])
    assert _open(sealed, token) == DATA
    with SealedReader(io.BytesIO(sealed), token) as reader:
        assert reader.length == len(DATA)
        reader.seek(2 * SEG + 3)
        assert reader.read(SEG) == DATA[2 * SEG + 3 : 3 * SEG + 3]


def test_a_merged_set_opens_with_whichever_source_holds_the_recipient(token: Any) -> None:
    files = JWKManager()
    files.add_key("file-1", alg="RSA-OAEP-256")
    merged = MergedKeySource([files, token])
    assert _open(_sealed([token.public_jwk("recv-1")]), merged) == DATA
    assert _open(_sealed([files.get_public_jwk("file-1") or {}]), merged) == DATA


def test_a_wrong_token_key_is_refused_as_a_wrong_file_key_is(token: Any) -> None:
    """A file sealed to another key of the same kid: the token and a key-set file give the
    same error; a file for another kid: the same NoRecipientKeyError from both."""
    owner, impostor = JWKManager(), JWKManager()
    owner.add_key("recv-1", alg="RSA-OAEP")
    impostor.add_key("recv-1", alg="RSA-OAEP")
    sealed = _sealed([owner.get_public_jwk("recv-1") or {}])
    assert _open(sealed, owner) == DATA
    from_token, from_file = _refusal(sealed, token), _refusal(sealed, impostor)
    assert from_token == from_file
    assert from_token[0] is HeaderAuthenticationError
    someone = JWKManager()
    someone.add_key("someone-else", alg="RSA-OAEP")
    elsewhere = _sealed([someone.get_public_jwk("someone-else") or {}])
    assert _refusal(elsewhere, token) == _refusal(elsewhere, impostor)
    assert _refusal(elsewhere, token)[0] is NoRecipientKeyError


def test_a_lost_token_is_unavailable_not_a_wrong_key(softhsm: Any) -> None:
    from request_crypto.keys.pkcs11 import generate_key

    uri = softhsm.uri("sealed-1", token="rc-sealed")
    generate_key(uri)
    source = open_key_source(uri)
    sealed = _sealed([source.public_jwk("sealed-1")])
    directory = token_dir("rc-sealed")
    away = directory.with_name(directory.name + ".away")
    os.rename(directory, away)
    try:
        with pytest.raises(KeySourceUnavailableError, match="rc-sealed"):
            _open(sealed, source)
        with pytest.raises(KeySourceUnavailableError, match="rc-sealed"):
            SealedReader(io.BytesIO(sealed), source)
    finally:
        os.rename(away, directory)
        source.close()
    assert _open(sealed, open_key_source(uri)) == DATA


def test_an_rsa_key_in_kms_opens_through_kms_decrypt(kms: Any) -> None:
    arn = kms.rsa_key()
    source = open_sealed_keys(f"aws-kms:{arn}?alg=RSA-OAEP-256")
    (kid,) = source.kids()
    jwk = source.public_jwk(kid)
    assert jwk["alg"] == "RSA-OAEP-256"
    sealed = _sealed([jwk])
    assert sealed.split(b"\n")[0] == b"request-crypto-sealed/v1"
    assert _open(sealed, source) == DATA
    # Without alg, KMS says it is an RSA key (not a data key): RSA-OAEP by default.
    default = open_sealed_keys(f"aws-kms:{arn}")
    assert _open(_sealed([default.public_jwk(kid)]), default) == DATA
    # An RSA-OAEP-256 recipient, a source declared RSA-OAEP: the wrong-key error.
    assert _refusal(sealed, default)[0] is HeaderAuthenticationError


def test_kms_unreachable_is_unavailable_not_a_wrong_key(
    kms: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = open_sealed_keys(f"aws-kms:{kms.rsa_key()}?alg=RSA-OAEP-256")
    sealed = _sealed([source.public_jwk(source.kids()[0])])
    kms.throttle(100)
    try:
        with pytest.raises(KeySourceUnavailableError, match="ThrottlingException"):
            _open(sealed, source)
    finally:
        kms.throttle(0)
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", "http://127.0.0.1:9")
    with pytest.raises(KeySourceUnavailableError, match="DescribeKey failed"):
        open_sealed_keys("aws-kms:alias/any")


def test_a_password_protected_set_file_opens(tmp_path: Path) -> None:
    password = b"a long passphrase"
    at_rest = KeySetFile.init(tmp_path / "private.jwe", "at-rest", password=password)
    sealed = _sealed(at_rest.publish()["keys"])
    assert _open(sealed, open_sealed_keys(at_rest.path, password=password)) == DATA
