"""What every holder of private keys offers the wire formats, wherever the keys live.

A JWK set in memory or in a file (`JWKManager`) implements `KeySource` today; an HSM or a
KMS implements the same few operations. The formats ask a source to unwrap a content key and
to describe a key; they never hold a private key object, so they cannot tell a file from a
hardware module. `open_compact` is how every format opens a compact JWE through a source.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, TypeGuard

from .._jose import CompactJWE, decrypt_compact, parse_compact
from ..errors import (
    MalformedBodyError,
    MissingKidInBodyError,
    NoKeyFoundError,
    PayloadTooLargeError,
)

__all__ = [
    "JWKDecryptResult",
    "JWKMetadata",
    "KeySource",
    "check_token",
    "decrypt_parsed",
    "is_key_source",
    "open_compact",
    "open_parsed",
    "public_set",
]


class KeySource(Protocol):
    """Private keys looked up by kid: what the formats may ask of them, and nothing more."""

    def kids(self) -> list[str]:
        """Every kid the source holds, in set order (the last one is the newest)."""
        ...

    def can_decrypt(self, kid: str) -> bool:
        """Whether `kid` names a private key this source may unwrap with (so `key_metadata`
        describes it: `RequestDecryptor.decrypt`, which returns no metadata, asks only this)."""
        ...

    def public_jwk(self, kid: str) -> dict[str, Any] | None:
        """The public half of `kid` as a JWK (for publishing), or None if absent."""
        ...

    def key_metadata(self, kid: str) -> dict[str, Any] | None:
        """kid, kty, use, alg and length (bits) of `kid`, or None if absent."""
        ...

    def unwrap(self, kid: str, alg: str, encrypted_key: bytes) -> bytes:
        """RSA-OAEP decrypt `encrypted_key` with `kid` under `alg` (RSA-OAEP or RSA-OAEP-256).

        Raises NoKeyFoundError for a kid it cannot unwrap with, UnsupportedAlgorithmError for
        an `alg` the key is not declared for, and the one DecryptionError (with no
        `__context__`) when the key does not open `encrypted_key`. A source whose module
        is down, slow or throttling raises KeySourceUnavailableError (retry: never a 400).
        """
        ...

    def health(self) -> None:
        """Raise KeySourceUnavailableError if the source cannot answer now; else return."""
        ...

    def close(self) -> None:
        """Release what the source holds (sessions, clients); it is unusable afterwards."""
        ...


_SOURCE_METHODS = ("kids", "can_decrypt", "public_jwk", "key_metadata", "unwrap", "health")


def is_key_source(value: object) -> TypeGuard[KeySource]:
    """Whether `value` offers the `KeySource` methods (a set given as data does not)."""
    return all(callable(getattr(value, name, None)) for name in _SOURCE_METHODS)


def public_set(keys: KeySource) -> dict[str, list[dict[str, Any]]]:
    """The public halves of every key of a source: what /.well-known/jwks.json publishes."""
    found = (keys.public_jwk(kid) for kid in keys.kids())
    return {"keys": [jwk for jwk in found if jwk is not None]}


@dataclass(frozen=True)
class JWKMetadata:
    """What the JavaScript `getJWKMetadata` reports: the key, header member names, header."""

    key: dict[str, Any]
    protected: list[str]
    header: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """A plain-JSON copy, as the JavaScript original returns it."""
        return {
            "key": dict(self.key),
            "protected": list(self.protected),
            "header": dict(self.header),
        }


@dataclass(frozen=True)
class JWKDecryptResult:
    """A decrypted compact JWE: the payload bytes and the metadata of the key that opened it."""

    payload: bytes = field(repr=False)
    key: dict[str, Any]
    header: dict[str, Any]
    protected: list[str]

    @property
    def plaintext(self) -> bytes:
        """The decrypted bytes, under the name the JavaScript (node-jose) result uses."""
        return self.payload

    @property
    def metadata(self) -> JWKMetadata:
        """The key, header member names and header, as `getJWKMetadata` reports them."""
        return JWKMetadata(self.key, self.protected, self.header)


def open_compact(
    keys: KeySource,
    token: str | bytes,
    *,
    what: str,
    max_token_size: int,
    max_plaintext: int,
    kid_optional: bool = False,
    direct: bool = False,
) -> JWKDecryptResult:
    """Size check, parse and header checks, then decrypt with the key the `kid` names.

    With `kid_optional`, a token without a kid (RFC 7516 A.1 has none) is opened with the one
    key of the source that fits its `alg`; if none or several fit, MissingKidInBodyError.
    A key that may not decrypt is answered as an absent one: no oracle for its `key_ops`.
    `direct`: the source holds `dir` secrets, so only `alg: "dir"` is accepted (else refused).
    """
    check_token(token, what, max_token_size)
    jwe = parse_compact(token, direct=direct)
    return open_parsed(keys, jwe, max_plaintext=max_plaintext, kid_optional=kid_optional)


def open_parsed(
    keys: KeySource, jwe: CompactJWE, *, max_plaintext: int, kid_optional: bool = False
) -> JWKDecryptResult:
    """`open_compact` from its parsed token on: find the key, then decrypt (same errors)."""
    payload, metadata = decrypt_parsed(
        keys, jwe, max_plaintext=max_plaintext, kid_optional=kid_optional
    )
    return JWKDecryptResult(payload, metadata, jwe.header, list(jwe.header))


def decrypt_parsed(
    keys: KeySource, jwe: CompactJWE, *, max_plaintext: int, kid_optional: bool = False
) -> tuple[bytes, dict[str, Any]]:
    """`open_parsed`'s work without its result object: the payload and the key's metadata.

    For callers that keep only the payload (`RequestDecryptor.decrypt`): same lookups, same
    decryption, same errors.
    """
    kid = jwe.kid
    if kid is None and kid_optional:
        kid = _only_fitting_kid(keys, jwe.alg)
    metadata = keys.key_metadata(kid) if kid is not None and keys.can_decrypt(kid) else None
    if kid is None or metadata is None:
        raise NoKeyFoundError(jwe.kid)
    return decrypt_compact(jwe, keys, kid, max_plaintext=max_plaintext), metadata


def check_token(token: object, what: str, max_token_size: int) -> None:
    """Refuse a token that is not text or bytes, or is longer than `max_token_size`."""
    if not isinstance(token, (str, bytes, bytearray)):
        raise MalformedBodyError(f"{what} must be str or bytes, not {type(token).__name__}")
    if len(token) > max_token_size:
        raise PayloadTooLargeError(what, len(token), max_token_size)


def _only_fitting_kid(keys: KeySource, alg: str) -> str:
    """The kid of the one private key declared for `alg`; a kid is only a lookup hint."""
    fitting = [
        kid
        for kid in keys.kids()
        if keys.can_decrypt(kid) and (keys.key_metadata(kid) or {}).get("alg") == alg
    ]
    if len(fitting) != 1:
        raise MissingKidInBodyError(len(fitting), alg)
    return fitting[0]
