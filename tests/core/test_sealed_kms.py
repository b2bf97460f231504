"""Sealed files with an AWS KMS recipient (keys.aws_kms_data_key), against moto's server.

The file key is a KMS data key (GenerateDataKey, AES_256), wrapped under the KMS key with an
EncryptionContext naming the file's salt; RSA recipients, if any, wrap the same key.
"""

from __future__ import annotations

import io
import os
from typing import Any

import pytest

from request_crypto import JWKManager, SealedReader, inspect_sealed, open_sealed, seal
from request_crypto.errors import (
    HeaderAuthenticationError,
    KeySourceError,
    KeySourceUnavailableError,
    NoRecipientKeyError,
    SealedFormatError,
)
from request_crypto.keys.aws_kms_data_key import KMSDataKey

SEG = 1024


@pytest.fixture(scope="module")
def keys() -> JWKManager:
    manager = JWKManager()
    manager.add_key("k1", alg="RSA-OAEP-256")
    return manager


@pytest.fixture(scope="module")
def kms_key(kms: Any) -> str:
    return kms.symmetric_key(alias="sealed-files")


def _sealed(plaintext: bytes, recipients: list[Any], kms: KMSDataKey | None) -> bytes:
    out = io.BytesIO()
    seal(io.BytesIO(plaintext), out, recipients, segment_size=SEG, kms=kms)
    return out.getvalue()


def _open(sealed: bytes, keys: Any) -> bytes:
    out = io.BytesIO()
    open_sealed(io.BytesIO(sealed), out, keys)
    return out.getvalue()


def test_seal_and_open_with_kms_only(kms_key: str) -> None:
    plaintext = os.urandom(5 * SEG + 7)
    sealed = _sealed(plaintext, [], KMSDataKey("aws-kms:alias/sealed-files"))
    assert sealed.startswith(b"request-crypto-sealed/v2\n")
    assert sealed.split(b"\n")[3].startswith(b"aws-kms " + kms_key.encode() + b" ")
    assert _open(sealed, KMSDataKey(f"aws-kms:{kms_key}")) == plaintext
    assert _open(sealed, KMSDataKey("aws-kms:alias/sealed-files")) == plaintext
    with SealedReader(io.BytesIO(sealed), KMSDataKey("aws-kms:alias/sealed-files")) as reader:
        reader.seek(3 * SEG)
        assert reader.read(10) == plaintext[3 * SEG : 3 * SEG + 10]


def test_kms_and_rsa_recipients_open_with_either(kms_key: str, keys: JWKManager) -> None:
    plaintext = os.urandom(3000)
    sealed = _sealed(plaintext, [keys.get_public_jwk("k1")], KMSDataKey(f"aws-kms:{kms_key}"))
    assert _open(sealed, keys) == plaintext
    assert _open(sealed, KMSDataKey(f"aws-kms:{kms_key}")) == plaintext
    # RSA-only files are still v1 (readable by earlier versions).
    assert _sealed(b"x", [keys.get_public_jwk("k1")], None).startswith(
        b"request-crypto-sealed/v1\n"
    )


def test_inspect_shows_the_kms_key_without_a_key(kms_key: str, keys: JWKManager) -> None:
    sealed = _sealed(b"abc", [keys.get_public_jwk("k1")], KMSDataKey(f"aws-kms:{kms_key}"))
    info = inspect_sealed(io.BytesIO(sealed)).to_dict()
    assert info["version"] == 2
    assert info["recipients"][0] == {"aws_kms_key": kms_key}
    assert info["recipients"][1]["kid"] == "k1"
    assert info["plaintext_length"] == 3


def test_a_kms_blob_moved_to_another_file_is_refused(kms_key: str) -> None:
    """Both files are for the same KMS key; the blob only unwraps in its own file."""
    source = KMSDataKey(f"aws-kms:{kms_key}")
    first = _sealed(b"first file", [], source)
    second = _sealed(b"second file", [], source)
    first_lines, second_lines = first.split(b"\n"), second.split(b"\n")
    moved = b"\n".join([*second_lines[:3], first_lines[3], *second_lines[4:]])
    with pytest.raises(HeaderAuthenticationError):
        _open(moved, source)
    # KMS itself refuses: the EncryptionContext names the other file's salt.
    from request_crypto._b64 import b64url_decode_canonical
    from request_crypto._sealed_header import kms_context

    blob = b64url_decode_canonical(first_lines[3].split(b" ")[2])
    salt = b64url_decode_canonical(second_lines[2].split(b" ")[1])
    salt_first = b64url_decode_canonical(first_lines[2].split(b" ")[1])
    assert blob is not None and salt is not None and salt_first is not None
    assert source.unwrap(kms_key, blob, kms_context(salt)) is None
    assert source.unwrap(kms_key, blob, kms_context(salt_first)) is not None


def test_wrong_kms_key_is_refused(kms: Any, kms_key: str, keys: JWKManager) -> None:
    sealed = _sealed(b"data", [keys.get_public_jwk("k1")], KMSDataKey(f"aws-kms:{kms_key}"))
    other = kms.symmetric_key()
    with pytest.raises(NoRecipientKeyError, match="aws-kms:"):
        _open(sealed, KMSDataKey(f"aws-kms:{other}"))
    # An RSA-only file has no KMS recipient at all.
    with pytest.raises(NoRecipientKeyError):
        _open(_sealed(b"data", [keys.get_public_jwk("k1")], None), KMSDataKey(f"aws-kms:{other}"))


def test_kms_line_in_a_v1_header_and_v2_without_one_are_refused(
    kms_key: str, keys: JWKManager
) -> None:
    sealed = _sealed(b"data", [keys.get_public_jwk("k1")], KMSDataKey(f"aws-kms:{kms_key}"))
    with pytest.raises(SealedFormatError, match="aws-kms"):
        _open(sealed.replace(b"/v2\n", b"/v1\n", 1), keys)
    lines = sealed.split(b"\n")
    with pytest.raises(SealedFormatError, match="aws-kms"):
        _open(b"\n".join(lines[:3] + lines[4:]), keys)


def test_kms_throttling_is_unavailable_not_a_wrong_answer(kms: Any, kms_key: str) -> None:
    source = KMSDataKey(f"aws-kms:{kms_key}", attempts=2)
    sealed = _sealed(b"data", [], source)
    kms.throttle(10)
    try:
        with pytest.raises(KeySourceUnavailableError, match="ThrottlingException"):
            _open(sealed, source)
    finally:
        kms.throttle(0)
    assert _open(sealed, source) == b"data"


def test_kms_unreachable_is_unavailable(kms_key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", "http://127.0.0.1:9")
    with pytest.raises(KeySourceUnavailableError, match="is unavailable: DescribeKey failed"):
        _sealed(b"data", [], KMSDataKey(f"aws-kms:{kms_key}", attempts=1))


def test_kms_recipient_must_be_symmetric_and_exist(kms: Any) -> None:
    with pytest.raises(KeySourceError, match="no such key"):
        _sealed(b"x", [], KMSDataKey("aws-kms:alias/no-such-sealed-key"))
    with pytest.raises(KeySourceError, match="not a symmetric"):
        _sealed(b"x", [], KMSDataKey(f"aws-kms:{kms.rsa_key()}"))
    with pytest.raises(KeySourceError, match="only"):
        KMSDataKey("aws-kms:alias/x?kid=y")
