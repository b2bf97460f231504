"""passphrase.py: the @elastic/node-crypto port (PBKDF2-SHA512 + AES-256-GCM)."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from request_crypto import KEY_LENGTH_IN_BYTES, PassphraseCipher, generate_passphrase
from request_crypto.errors import DecryptionError, InvalidArgumentError, MalformedBodyError

PASSPHRASE = bytes(range(32))
AAD = "kibana_8.12.0"
PAYLOADS: list[Any] = [
    {"key": "value", "key2": "value"},
    [1, 2, 3, {"a": None, "b": True, "c": False}],
    "just a string",
    "",
    42,
    -1.5,
    True,
    None,
    {},
    {"text": "héllo — 日本語 🚀"},
]


@pytest.fixture(scope="module")
def cipher() -> PassphraseCipher:
    return PassphraseCipher(PASSPHRASE)


@pytest.mark.parametrize("aad", [None, AAD, "é"])
@pytest.mark.parametrize("payload", PAYLOADS, ids=repr)
def test_round_trip(cipher: PassphraseCipher, payload: Any, aad: str | None) -> None:
    decrypted = cipher.decrypt(cipher.encrypt(payload, aad), aad)
    assert decrypted == payload
    assert type(decrypted) is type(payload)


def test_output_is_salt_iv_tag_ciphertext_under_pbkdf2_sha512(cipher: PassphraseCipher) -> None:
    # An independent decryption of the documented layout, with hashlib and AESGCM.
    text = cipher.encrypt({"a": 1}, AAD)
    raw = base64.b64decode(text, validate=True)
    salt, iv, tag, ciphertext = raw[:64], raw[64:76], raw[76:92], raw[92:]
    key = hashlib.pbkdf2_hmac("sha512", PASSPHRASE, salt, 10_000, 32)
    assert AESGCM(key).decrypt(iv, ciphertext + tag, AAD.encode()) == b'{"a":1}'


def test_every_encryption_draws_a_fresh_salt_and_iv(cipher: PassphraseCipher) -> None:
    headers = {base64.b64decode(cipher.encrypt("same"))[:76] for _ in range(4)}
    assert len(headers) == 4


@pytest.mark.parametrize(
    ("encrypt_aad", "decrypt_aad"), [(AAD, None), (None, AAD), (AAD, "kibana_8.12.1")]
)
def test_aad_must_match(
    cipher: PassphraseCipher, encrypt_aad: str | None, decrypt_aad: str | None
) -> None:
    with pytest.raises(DecryptionError):
        cipher.decrypt(cipher.encrypt("x", encrypt_aad), decrypt_aad)


@pytest.mark.parametrize("offset", [0, 64, 76, 92], ids=["salt", "iv", "tag", "ciphertext"])
def test_any_altered_byte_fails_authentication(cipher: PassphraseCipher, offset: int) -> None:
    raw = bytearray(base64.b64decode(cipher.encrypt({"a": 1})))
    raw[offset] ^= 1
    with pytest.raises(DecryptionError):
        cipher.decrypt(base64.b64encode(raw).decode())


def test_the_wrong_passphrase_fails(cipher: PassphraseCipher) -> None:
    with pytest.raises(DecryptionError):
        PassphraseCipher(PASSPHRASE[::-1]).decrypt(cipher.encrypt("x"))


def test_string_passphrase_is_its_utf8_bytes() -> None:
    text = PassphraseCipher("a hümän passphrase").encrypt([1])
    assert PassphraseCipher("a hümän passphrase".encode()).decrypt(text) == [1]


def test_decrypt_accepts_bytes(cipher: PassphraseCipher) -> None:
    assert cipher.decrypt(cipher.encrypt([1]).encode("ascii")) == [1]


@pytest.mark.parametrize("passphrase", [b"", "", bytearray()])
def test_empty_passphrase_is_refused(passphrase: bytes | str) -> None:
    with pytest.raises(InvalidArgumentError, match="encryptionKey is required"):
        PassphraseCipher(passphrase)


@pytest.mark.parametrize("passphrase", [None, 42, ["k"]])
def test_passphrase_of_another_type_is_refused(passphrase: Any) -> None:
    with pytest.raises(InvalidArgumentError, match="bytes or str"):
        PassphraseCipher(passphrase)


@pytest.mark.parametrize("operation", ["encrypt", "decrypt"])
def test_empty_string_aad_is_refused(cipher: PassphraseCipher, operation: str) -> None:
    argument = cipher.encrypt("x") if operation == "decrypt" else "x"
    with pytest.raises(InvalidArgumentError, match="AAD cannot be an empty string"):
        getattr(cipher, operation)(argument, "")


@pytest.mark.parametrize("aad", [b"bytes", 1])
def test_non_string_aad_is_refused(cipher: PassphraseCipher, aad: Any) -> None:
    with pytest.raises(InvalidArgumentError, match="AAD must be a string"):
        cipher.encrypt("x", aad)


@pytest.mark.parametrize(
    "text",
    ["not base64!", "QUJD", base64.b64encode(bytes(91)).decode(), "é"],
    ids=["off-alphabet", "too-short", "one-byte-short-of-the-header", "non-ascii"],
)
def test_malformed_input_is_refused_before_decryption(cipher: PassphraseCipher, text: str) -> None:
    with pytest.raises(MalformedBodyError):
        cipher.decrypt(text)


@pytest.mark.parametrize(
    "plaintext",
    [b"not json", b'{"a":NaN}', '{"a":1}'.encode("utf-16"), b'\xef\xbb\xbf{"a":1}', b"\xff"],
    ids=["text", "nan", "utf-16", "utf-8-bom", "invalid-utf-8"],
)
def test_plaintext_must_be_utf8_json(cipher: PassphraseCipher, plaintext: bytes) -> None:
    # What JSON.parse(buffer.toString("utf8")) refuses on the JavaScript side.
    with pytest.raises(MalformedBodyError, match="not valid UTF-8 JSON"):
        cipher.decrypt(cipher.encrypt_bytes(plaintext))


def test_repr_and_str_hide_the_passphrase() -> None:
    secret = "correct horse battery staple"
    cipher = PassphraseCipher(secret)
    for shown in (repr(cipher), str(cipher)):
        assert secret not in shown
        assert "horse" not in shown


def test_generate_passphrase_is_fresh_key_length_bytes() -> None:
    passphrases = [generate_passphrase() for _ in range(8)]
    assert KEY_LENGTH_IN_BYTES == 32
    assert all(type(p) is bytes and len(p) == KEY_LENGTH_IN_BYTES for p in passphrases)
    assert len(set(passphrases)) == len(passphrases)
