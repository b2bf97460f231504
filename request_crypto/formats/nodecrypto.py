"""Port of `@elastic/node-crypto` 1.2.3: PBKDF2-HMAC-SHA512 key derivation + AES-256-GCM.

Output layout, standard base64 with padding: ``salt[64] || iv[12] || tag[16] || ciphertext``.
The key is ``PBKDF2-HMAC-SHA512(passphrase, salt, 10000, 32)``; a fresh salt and IV are drawn
for every encryption, so one passphrase may safely encrypt many values.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Iterator
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from .._b64 import b64encode_standard
from .._json import dumps_utf8, loads_payload
from ..errors import DecryptionError, InvalidArgumentError, MalformedBodyError

__all__ = [
    "HEADER_LENGTH",
    "KEY_ITERATIONS",
    "KEY_LENGTH_IN_BYTES",
    "PassphraseCipher",
    "check_layout",
    "decode_standard_base64",
    "decrypt_layout",
    "generate_passphrase",
]

KEY_LENGTH_IN_BYTES = 32
SALT_LENGTH_IN_BYTES = 64
IV_LENGTH_IN_BYTES = 12
TAG_LENGTH_IN_BYTES = 16
KEY_ITERATIONS = 10_000
HEADER_LENGTH = SALT_LENGTH_IN_BYTES + IV_LENGTH_IN_BYTES + TAG_LENGTH_IN_BYTES
#: Ciphertexts up to this size seal and open in one AESGCM call (no Python-level Cipher object:
#: a few us less per 1 KB body); larger ones stream, so the ciphertext is not copied for the tag.
_ONE_SHOT = 64 * 1024


def generate_passphrase() -> bytes:
    """32 fresh bytes from the OS CSPRNG: one per request, never reused."""
    return os.urandom(KEY_LENGTH_IN_BYTES)


#: The PBKDF2 hash, built once (a Python object per body otherwise).
_SHA512 = hashes.SHA512()


def _salt_and_iv() -> tuple[bytes, bytes]:
    """A fresh salt and IV, from one getrandom call (a system call less per body)."""
    fresh = os.urandom(SALT_LENGTH_IN_BYTES + IV_LENGTH_IN_BYTES)
    return fresh[:SALT_LENGTH_IN_BYTES], fresh[SALT_LENGTH_IN_BYTES:]


def _derive_key(password: bytes, salt: bytes | memoryview) -> bytes:
    # cryptography's PBKDF2 measured ~1.35x faster than hashlib's here (both release the GIL,
    # so threads scale across cores); scripts/bench.py reports both.
    kdf = PBKDF2HMAC(_SHA512, KEY_LENGTH_IN_BYTES, bytes(salt), KEY_ITERATIONS)
    return kdf.derive(password)


def _aad_bytes(aad: str | None) -> bytes | None:
    if aad is None:
        return None
    if not isinstance(aad, str):
        raise InvalidArgumentError("AAD must be a string")
    if not aad:
        raise InvalidArgumentError("AAD cannot be an empty string")
    return _utf8(aad, "the AAD")


def _utf8(text: str, what: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        pass
    raise InvalidArgumentError(f"{what} is not valid Unicode text (it holds a lone surrogate)")


def decode_standard_base64(text: str | bytes, what: str) -> bytes:
    """Strict standard-alphabet base64 (``+/``, ``=`` padding), as node-crypto writes it."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError, TypeError):
        pass
    raise MalformedBodyError(f"{what} is not valid standard base64")


def check_layout(raw: bytes | bytearray | memoryview) -> None:
    """Refuse, before any PBKDF2 work, a payload too short to hold salt, IV and tag."""
    if len(raw) < HEADER_LENGTH:
        raise MalformedBodyError(
            f"the encrypted payload is {len(raw)} bytes, shorter than the "
            f"{HEADER_LENGTH}-byte salt, IV and tag it must start with"
        )


class PassphraseCipher:
    """Encrypts JSON values under a passphrase, byte-compatible with `@elastic/node-crypto`."""

    __slots__ = ("_password",)

    def __init__(self, passphrase: bytes | str) -> None:
        if isinstance(passphrase, str):
            passphrase = _utf8(passphrase, "the passphrase")
        if not isinstance(passphrase, (bytes, bytearray, memoryview)):
            raise InvalidArgumentError("the passphrase must be bytes or str")
        if not passphrase:
            raise InvalidArgumentError("encryptionKey is required: the passphrase is empty")
        self._password = bytes(passphrase)

    def __repr__(self) -> str:
        return "PassphraseCipher(<passphrase hidden>)"

    def encrypt(self, value: Any, aad: str | None = None) -> str:
        """Serialize `value` like JSON.stringify and encrypt it; returns standard base64."""
        aad_bytes = _aad_bytes(aad)
        return self.encrypt_bytes(dumps_utf8(value), aad_bytes)

    def decrypt(self, text: str | bytes, aad: str | None = None) -> Any:
        """Decrypt node-crypto output and parse the JSON value it holds."""
        aad_bytes = _aad_bytes(aad)
        raw = decode_standard_base64(text, "the encrypted payload")
        return loads_payload(self.decrypt_bytes(raw, aad_bytes))

    def encrypt_bytes(self, plaintext: bytes, aad: bytes | None = None) -> str:
        """Encrypt already-serialized bytes; the building block of `encrypt`."""
        return b64encode_standard(self.seal(plaintext, aad)).decode("ascii")

    def _encryptor(self, aad: bytes | None) -> tuple[bytes, bytes, Any]:
        """A fresh salt and IV, and the AES-256-GCM encryptor under the key they derive."""
        salt, iv = _salt_and_iv()
        encryptor = Cipher(
            algorithms.AES(_derive_key(self._password, salt)), modes.GCM(iv)
        ).encryptor()
        if aad is not None:
            encryptor.authenticate_additional_data(aad)
        return salt, iv, encryptor

    def seal(self, plaintext: bytes, aad: bytes | None = None) -> bytearray:
        """Encrypt to the decoded layout ``salt || iv || tag || ciphertext``, not yet base64.

        A large ciphertext is written straight into the one output buffer (no joined copy);
        a small one is sealed in one AESGCM call and joined. `decrypt_bytes` opens it;
        `seal_pieces` gives the same layout a piece at a time.
        """
        if len(plaintext) <= _ONE_SHOT:  # one AESGCM call: no Cipher objects (~3 us less)
            salt, iv = _salt_and_iv()
            sealed = AESGCM(_derive_key(self._password, salt)).encrypt(iv, plaintext, aad)
            tag = memoryview(sealed)[-TAG_LENGTH_IN_BYTES:]
            return bytearray().join((salt, iv, tag, memoryview(sealed)[:-TAG_LENGTH_IN_BYTES]))
        salt, iv, encryptor = self._encryptor(aad)
        # update_into wants room for one block more than the input, even for GCM.
        layout = bytearray(HEADER_LENGTH + len(plaintext) + 15)
        view = memoryview(layout)
        written = encryptor.update_into(plaintext, view[HEADER_LENGTH:])
        encryptor.finalize()
        view[:SALT_LENGTH_IN_BYTES] = salt
        view[SALT_LENGTH_IN_BYTES : SALT_LENGTH_IN_BYTES + IV_LENGTH_IN_BYTES] = iv
        view[SALT_LENGTH_IN_BYTES + IV_LENGTH_IN_BYTES : HEADER_LENGTH] = encryptor.tag
        view.release()
        del layout[HEADER_LENGTH + written :]
        return layout

    def seal_pieces(
        self, plaintext: bytes, head: int, step: int, aad: bytes | None = None
    ) -> Iterator[bytes]:
        """`seal`'s layout without ever holding it whole: ``layout[head:head+step]``, the
        next `step` bytes, ... and ``layout[:head]`` last, since it holds the tag.

        `head` must be at least HEADER_LENGTH (or the whole layout). The `elastic` format
        base64-encodes each piece as it comes (formats/elastic.py, pack_sealed).
        """
        if head < HEADER_LENGTH:
            raise InvalidArgumentError(f"the head piece holds the {HEADER_LENGTH}-byte header")
        salt, iv, encryptor = self._encryptor(aad)
        view = memoryview(plaintext)
        start_of_rest = head - HEADER_LENGTH
        first = encryptor.update(view[:start_of_rest])
        for start in range(start_of_rest, len(view), step):
            yield encryptor.update(view[start : start + step])
        encryptor.finalize()
        yield salt + iv + encryptor.tag + first

    def decrypt_bytes(self, raw: bytes | bytearray | memoryview, aad: bytes | None = None) -> bytes:
        """Decrypt the decoded ``salt || iv || tag || ciphertext`` layout to plaintext bytes."""
        return decrypt_layout(self._password, raw, aad)


def decrypt_layout(
    password: bytes, raw: bytes | bytearray | memoryview, aad: bytes | None = None
) -> bytes:
    """`PassphraseCipher(password).decrypt_bytes(raw, aad)` for a non-empty bytes `password`.

    One function, not the cipher object and its helpers: the `elastic` common path calls it
    right after the PBKDF2 has left the caches cold, where each frame costs several times its
    warm price.
    """
    if len(raw) < HEADER_LENGTH:
        check_layout(raw)  # raises
    view = memoryview(raw)
    iv = bytes(view[SALT_LENGTH_IN_BYTES : SALT_LENGTH_IN_BYTES + IV_LENGTH_IN_BYTES])
    tag = bytes(view[SALT_LENGTH_IN_BYTES + IV_LENGTH_IN_BYTES : HEADER_LENGTH])
    plaintext: bytes | None
    try:
        key = PBKDF2HMAC(
            _SHA512, KEY_LENGTH_IN_BYTES, bytes(view[:SALT_LENGTH_IN_BYTES]), KEY_ITERATIONS
        ).derive(password)
        if len(view) - HEADER_LENGTH <= _ONE_SHOT:
            plaintext = AESGCM(key).decrypt(iv, bytes(view[HEADER_LENGTH:]) + tag, aad)
        else:
            decryptor = Cipher(algorithms.AES(key), modes.GCM(iv, tag)).decryptor()
            if aad is not None:
                decryptor.authenticate_additional_data(aad)
            plaintext = decryptor.update(view[HEADER_LENGTH:])
            decryptor.finalize()
    except (InvalidTag, ValueError):
        plaintext = None
    if plaintext is None:  # raised here, so no __context__ tells which step failed
        raise DecryptionError()
    return plaintext
