"""Private key-set files wrapped by an AWS KMS key instead of a password (envelope encryption).

Writing (`--wrap-with aws-kms:KEY`): KMS `GenerateDataKey` (AES_256, EncryptionContext
`{"purpose": "request-crypto-private-key-set"}`) on a symmetric ENCRYPT_DECRYPT key gives a
fresh data key and its KMS ciphertext; the set is sealed under the data key as a compact JWE
`alg: dir`, `enc: A256GCM`, `cty: jwk-set+json`, whose protected header also carries
`kms_key_id` (the key's ARN) and `kms_ciphertext` (the CiphertextBlob, base64url). The
header is the GCM additional data, so neither can be changed unnoticed. Any JOSE library
opens the file as a `dir` JWE once `aws kms decrypt` (same context) has given the data key
(docs/key-sources.md shows it).

Reading needs no option: the file names its key, and KMS `Decrypt` (with the context) gives
the data key back; its answer must name that key. KMS saying the blob is not
that key's (or not for this purpose) is WrongWrappingKeyError; KMS unreachable, throttling or
refusing access is KeySourceUnavailableError (retry; a running receiver keeps its keys).
Client, endpoint, credentials and retries are those of `keys.aws_kms`; the region is the
one in the key's ARN.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import ModuleType
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .._b64 import b64url_decode, b64url_encode
from ..errors import KeyFileError, KeySourceError, WrongWrappingKeyError

__all__ = [
    "ENCRYPTION_CONTEXT",
    "HEADER_BLOB",
    "HEADER_KEY",
    "unwrap_key_set",
    "wrap_key_set",
    "wrapping_key",
]

#: Binds a data key to this use: a blob KMS made for anything else does not open here.
ENCRYPTION_CONTEXT = {"purpose": "request-crypto-private-key-set"}
HEADER_KEY = "kms_key_id"
HEADER_BLOB = "kms_ciphertext"
CONTENT_TYPE = "jwk-set+json"
_TIMEOUT = 5.0
_DATA_KEY_BYTES = 32
_TAG = 16


def _aws_kms() -> ModuleType:
    """`keys.aws_kms`, imported when a file is wrapped or unwrapped: boto3 is the kms extra,
    and reading plain or PBES2 files must not need it."""
    from .uri import scheme_module  # noqa: PLC0415 - uri imports keyfile, which imports this

    return scheme_module("aws-kms")


def _client(uri: str, region: str | None) -> Any:
    kms = _aws_kms()
    return kms.kms_client(uri, region, kms.DEFAULT_ATTEMPTS, _TIMEOUT)


def wrap_key_set(document: dict[str, Any], uri: str, *, client: Any = None) -> bytes:
    """The key set sealed under a new KMS data key of the key `uri` names (ASCII, newline)."""
    key_id, query, _ = _aws_kms().parse_kms_uri(uri)
    kms = client or _client(uri, query.get("region"))
    answer = _aws_kms().kms_call(
        kms,
        "GenerateDataKey",
        uri,
        KeyId=key_id,
        KeySpec="AES_256",
        EncryptionContext=ENCRYPTION_CONTEXT,
    )
    data_key, blob, arn = answer["Plaintext"], answer["CiphertextBlob"], answer["KeyId"]
    header = {
        "alg": "dir",
        "enc": "A256GCM",
        "cty": CONTENT_TYPE,
        HEADER_KEY: arn,
        HEADER_BLOB: b64url_encode(blob),
    }
    protected = b64url_encode(json.dumps(header, separators=(",", ":")).encode("utf-8"))
    iv = os.urandom(12)
    sealed = AESGCM(data_key).encrypt(iv, json.dumps(document).encode("utf-8"), protected.encode())
    parts = [protected, "", b64url_encode(iv), b64url_encode(sealed[:-_TAG])]
    return (".".join([*parts, b64url_encode(sealed[-_TAG:])]) + "\n").encode("ascii")


def _header(data: bytes) -> dict[str, Any] | None:
    """The protected header of a compact JWE, or None if `data` is not one."""
    try:
        header = json.loads(b64url_decode(data.strip().split(b".")[0].decode("ascii"), "header"))
    except (ValueError, UnicodeError, IndexError):
        return None
    return header if isinstance(header, dict) else None


def wrapping_key(data: bytes) -> str | None:
    """`aws-kms:ARN` of the key a wrapped file names, or None (plain, PBES2 or not a JWE)."""
    header = _header(data)
    if header is None or header.get("alg") != "dir" or HEADER_KEY not in header:
        return None
    arn = header[HEADER_KEY]
    return f"aws-kms:{arn}" if isinstance(arn, str) and arn else None


def unwrap_key_set(data: bytes, path: str | os.PathLike[str], *, client: Any = None) -> bytes:
    """The key-set JSON inside a KMS-wrapped file (see the module docstring); errors name `path`."""
    where = Path(path)
    header = _header(data) or {}
    try:
        arn, blob = header[HEADER_KEY], b64url_decode(header[HEADER_BLOB], HEADER_BLOB)
        protected, encrypted_key, iv, ciphertext, tag = data.strip().decode("ascii").split(".")
        iv_bytes, sealed = b64url_decode(iv, "iv"), b64url_decode(ciphertext, "ciphertext")
        tag_bytes = b64url_decode(tag, "tag")
        if not isinstance(arn, str) or not arn.startswith("arn:") or encrypted_key:
            raise ValueError(arn)
    except (KeyError, ValueError, TypeError, UnicodeError):
        raise KeyFileError(f"{where}: not a KMS-wrapped key set (a damaged JWE)") from None
    if header.get("enc") != "A256GCM" or header.get("cty") != CONTENT_TYPE:
        raise KeyFileError(f"{where}: a KMS-wrapped key set must be dir + A256GCM jwk-set+json")
    uri = f"aws-kms:{arn}"
    region = arn.split(":")[3] if arn.count(":") >= 5 else None
    kms = client or _client(uri, region or None)
    # No KeyId: a symmetric blob names its key, and the answer must name the header's key
    # (AWS would answer IncorrectKeyException for a KeyId given, moto AccessDenied).
    answer = _aws_kms().kms_call(
        kms, "Decrypt", uri, CiphertextBlob=blob, EncryptionContext=ENCRYPTION_CONTEXT
    )
    data_key = answer.get("Plaintext")
    if not answer or answer.get("KeyId") != arn or not isinstance(data_key, bytes):
        raise WrongWrappingKeyError(where, arn)
    if len(data_key) != _DATA_KEY_BYTES:
        raise KeySourceError(f"{where}: KMS gave a {len(data_key)}-byte data key, not 32")
    plaintext: bytes | None = None
    try:
        plaintext = AESGCM(data_key).decrypt(iv_bytes, sealed + tag_bytes, protected.encode())
    except (InvalidTag, ValueError):
        plaintext = None
    if plaintext is None:  # KMS opened the data key: the file itself was altered
        raise KeyFileError(f"{where}: the KMS-wrapped key set was altered (its tag fails)")
    return plaintext
