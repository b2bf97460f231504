"""Private key-set files encrypted at rest under a password: a PBES2 compact JWE (RFC 7518 4.8).

The file holds one compact JWE: `alg` PBES2-HS512+A256KW, `enc` A256GCM, `cty`
`jwk-set+json`, a fresh 16-byte `p2s` salt and `p2c` PBKDF2-HMAC-SHA512 iterations (210,000 by
default: OWASP's figure). Any JOSE library opens it with the password (joserfc as it is;
jwcrypto and jose cap `p2c` lower by default: see docs/key-sources.md). Done here with
`cryptography` directly so that no library's process-wide iteration cap has to be lifted.

Reading accepts exactly that alg and enc, and a `p2c` between MIN_ITERATIONS and
MAX_ITERATIONS (a planted file cannot make a reader spin for hours). A wrong password and an
altered file are the same WrongPasswordError: AES key unwrap or the GCM tag fails.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from .._b64 import b64url_decode, b64url_encode
from ..errors import InvalidArgumentError, KeyFileError, WrongPasswordError

__all__ = [
    "ALG",
    "DEFAULT_ITERATIONS",
    "ENC",
    "MAX_ITERATIONS",
    "MIN_ITERATIONS",
    "PASSWORD_FILE_ENV",
    "decrypt_key_set",
    "encrypt_key_set",
    "is_encrypted_key_set",
    "read_password_file",
]

ALG = "PBES2-HS512+A256KW"
ENC = "A256GCM"
CONTENT_TYPE = "jwk-set+json"
#: OWASP's PBKDF2-HMAC-SHA512 figure; written by default.
DEFAULT_ITERATIONS = 210_000
#: The least a file may use to be read (and written): well below it, a password is cheap to try.
MIN_ITERATIONS = 100_000
#: The most a file may ask for (about 10 s here): a planted file cannot stall a reader.
MAX_ITERATIONS = 5_000_000
SALT_LENGTH = 16
#: What a password file may hold; passwords are short.
MAX_PASSWORD_FILE = 4096
#: Where every command that reads a private set finds its password file by default.
PASSWORD_FILE_ENV = "REQUEST_CRYPTO_PASSWORD_FILE"  # noqa: S105 - a variable name


def read_password_file(path: str | os.PathLike[str]) -> bytes:
    """The password in `path` (UTF-8, one trailing newline dropped); empty or unreadable: error."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_PASSWORD_FILE + 1)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read the password file ({exc.strerror})") from None
    if len(data) > MAX_PASSWORD_FILE:
        raise KeyFileError(f"{path}: over {MAX_PASSWORD_FILE} bytes: not a password file")
    password = data[:-2] if data.endswith(b"\r\n") else data.removesuffix(b"\n")
    if not password:
        raise KeyFileError(f"{path}: the password file is empty")
    return password


def is_encrypted_key_set(data: bytes) -> bool:
    """Whether a key-set file's bytes look like a compact JWE rather than JSON."""
    stripped = data.strip()
    return stripped[:2] == b"ey" and stripped.count(b".") == 4


def _derive(password: bytes, salt: bytes, iterations: int) -> bytes:
    salt_input = ALG.encode("ascii") + b"\x00" + salt
    kdf = PBKDF2HMAC(hashes.SHA512(), length=32, salt=salt_input, iterations=iterations)
    return kdf.derive(password)


def encrypt_key_set(
    document: dict[str, Any], password: bytes, *, iterations: int = DEFAULT_ITERATIONS
) -> bytes:
    """The key set as a PBES2-HS512+A256KW / A256GCM compact JWE (ASCII bytes, newline)."""
    if not password:
        raise InvalidArgumentError("the key-set password is empty")
    if not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:
        raise InvalidArgumentError(
            f"iterations {iterations} refused: use {MIN_ITERATIONS} to {MAX_ITERATIONS}"
        )
    salt = os.urandom(SALT_LENGTH)
    header: dict[str, Any] = {"alg": ALG, "enc": ENC, "cty": CONTENT_TYPE}
    header.update(p2s=b64url_encode(salt), p2c=iterations)
    protected = b64url_encode(json.dumps(header, separators=(",", ":")).encode("utf-8"))
    cek, iv = os.urandom(32), os.urandom(12)
    sealed = AESGCM(cek).encrypt(iv, json.dumps(document).encode("utf-8"), protected.encode())
    parts = [
        protected,
        b64url_encode(aes_key_wrap(_derive(password, salt, iterations), cek)),
        b64url_encode(iv),
        b64url_encode(sealed[:-16]),
        b64url_encode(sealed[-16:]),
    ]
    return (".".join(parts) + "\n").encode("ascii")


def decrypt_key_set(data: bytes, password: bytes, path: str | os.PathLike[str]) -> bytes:
    """The key-set JSON inside an encrypted file; errors name `path`."""
    where = Path(path)
    try:
        parts = data.strip().decode("ascii").split(".")
        protected = parts[0]
        header = json.loads(b64url_decode(protected, "the header"))
        salt = b64url_decode(header["p2s"], "p2s")
        iterations = header["p2c"]
        wrapped, iv, ciphertext, tag = (b64url_decode(p, "a JWE part") for p in parts[1:])
    except (ValueError, KeyError, TypeError, UnicodeError, IndexError):
        raise KeyFileError(f"{where}: not an encrypted key set (a damaged JWE)") from None
    if header.get("alg") != ALG or header.get("enc") != ENC:
        raise KeyFileError(f"{where}: an encrypted key set must use {ALG} with {ENC}")
    if type(iterations) is not int or not MIN_ITERATIONS <= iterations <= MAX_ITERATIONS:
        raise KeyFileError(
            f"{where}: p2c {iterations!r} refused: use {MIN_ITERATIONS} to {MAX_ITERATIONS}"
        )
    if len(salt) < SALT_LENGTH:
        raise KeyFileError(f"{where}: the salt (p2s) is under {SALT_LENGTH} bytes")
    plaintext: bytes | None = None
    try:
        cek = aes_key_unwrap(_derive(password, salt, iterations), wrapped)
        plaintext = AESGCM(cek).decrypt(iv, ciphertext + tag, protected.encode("ascii"))
    except (InvalidUnwrap, InvalidTag, ValueError):  # a wrong password or an altered file
        plaintext = None
    if plaintext is None:
        raise WrongPasswordError(where)
    return plaintext
