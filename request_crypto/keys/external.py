"""What every key source whose private keys live elsewhere (an HSM, a KMS) shares.

Such a source knows only public numbers and a handle per kid; the private key never enters
the process. `ExternalKeySource` answers the `KeySource` questions from those public numbers
and leaves one method to each backend: `_decrypt(key, encrypted_key)`, the RSA-OAEP decrypt
done by the module. Also the URI helpers both URI schemes use (query attributes, secrets
kept out of names).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from .._b64 import b64url_uint
from .._jose import KEY_MANAGEMENT_ALGORITHMS
from ..errors import (
    DecryptionError,
    KeySourceError,
    NoKeyFoundError,
    UnsupportedAlgorithmError,
)
from ..kids import thumbprint as jwk_thumbprint
from ..kids import validate_kid

__all__ = ["ExternalKey", "ExternalKeySource", "parse_attributes", "thumbprint"]


def thumbprint(n: int, e: int) -> str:
    """The RFC 7638 SHA-256 thumbprint of an RSA public key, base64url: the fallback kid."""
    return jwk_thumbprint({"kty": "RSA", "n": b64url_uint(n), "e": b64url_uint(e)})


def parse_attributes(text: str, separator: str, uri: str) -> dict[str, str]:
    """`a=1;b=2` (or `&`-separated) into a dict, percent-decoded; a repeated name is refused."""
    attributes: dict[str, str] = {}
    for part in filter(None, text.split(separator)):
        name, equals, value = part.partition("=")
        if not equals or not name:
            raise KeySourceError(f"{uri}: {part!r} is not NAME=VALUE")
        if name in attributes:
            raise KeySourceError(f"{uri}: {name!r} is given twice")
        attributes[name] = unquote(value)
    return attributes


@dataclass(frozen=True)
class ExternalKey:
    """One RSA key held by a module: its kid, JOSE alg, public numbers and module handle."""

    kid: str
    alg: str
    n: int
    e: int
    handle: Any = None

    @property
    def length(self) -> int:
        """The modulus length in bits."""
        return self.n.bit_length()

    @property
    def public_jwk(self) -> dict[str, Any]:
        """The public JWK, members in the order a file-based set exports them."""
        return {
            "kty": "RSA",
            "kid": self.kid,
            "use": "enc",
            "alg": self.alg,
            "e": b64url_uint(self.e),
            "n": b64url_uint(self.n),
        }

    @property
    def metadata(self) -> dict[str, Any]:
        """kid, kty, use, alg and length, as `JWKManager.key_metadata` reports them."""
        return {"kid": self.kid, "kty": "RSA", "use": "enc", "alg": self.alg, "length": self.length}


def check_alg(alg: str, where: str) -> str:
    """The JOSE alg a module key is declared for: RSA-OAEP or RSA-OAEP-256."""
    if alg not in KEY_MANAGEMENT_ALGORITHMS:
        raise KeySourceError(f"{where}: alg {alg!r} refused; use RSA-OAEP or RSA-OAEP-256")
    return alg


def choose_kid(explicit: str | None, named: str | None, n: int, e: int) -> str:
    """The kid: an explicit `kid=`, else the key's name in the module, else the thumbprint."""
    kid = explicit or named or thumbprint(n, e)
    validate_kid(kid)
    return kid


class ExternalKeySource:
    """A `KeySource` over keys held by a module; subclasses supply `_decrypt` and `health`.

    `name` is the source's URI with no secret in it (for logs, errors and /healthz).
    """

    name: str

    def __init__(self, name: str, keys: list[ExternalKey]) -> None:
        self.name = name
        self._keys: Mapping[str, ExternalKey] = self._index(keys)

    def _index(self, keys: list[ExternalKey]) -> dict[str, ExternalKey]:
        index: dict[str, ExternalKey] = {}
        for key in keys:
            if key.kid in index:
                raise KeySourceError(
                    f"{self.name}: two keys have kid {key.kid!r}; name one with object=/kid="
                )
            index[key.kid] = key
        return index

    def kids(self) -> list[str]:
        """The kids of the module's keys this source was opened on."""
        return list(self._keys)

    def key(self, kid: str) -> ExternalKey | None:
        """The module key under `kid` (public numbers and handle), or None."""
        return self._keys.get(kid)

    def can_decrypt(self, kid: str) -> bool:
        """Every key of the source is a private key that may unwrap."""
        return kid in self._keys

    def public_jwk(self, kid: str) -> dict[str, Any] | None:
        """The public JWK read from the module, or None."""
        key = self._keys.get(kid)
        return key.public_jwk if key else None

    def key_metadata(self, kid: str) -> dict[str, Any] | None:
        """kid, kty, use, alg and length (bits) of `kid`, or None."""
        key = self._keys.get(kid)
        return key.metadata if key else None

    def get_public_jwks(self) -> dict[str, list[dict[str, Any]]]:
        """The public set, for /.well-known/jwks.json and `keys public`."""
        return {"keys": [key.public_jwk for key in self._keys.values()]}

    def unwrap(self, kid: str, alg: str, encrypted_key: bytes) -> bytes:
        """RSA-OAEP decrypt inside the module (see `KeySource.unwrap`).

        A ciphertext that is not one modulus long never reaches the module; what the module
        refuses is the one DecryptionError; a module that is down is KeySourceUnavailableError.
        """
        key = self._keys.get(kid)
        if key is None:
            raise NoKeyFoundError(kid)
        if alg != key.alg:
            raise UnsupportedAlgorithmError(
                f"the body uses {alg} but key {kid!r} is declared for {key.alg}"
            )
        if len(encrypted_key) != (key.length + 7) // 8:
            raise DecryptionError()
        plaintext = self._decrypt(key, bytes(encrypted_key))
        if plaintext is None:
            raise DecryptionError()  # raised here: no __context__ naming the module's error
        return plaintext

    def _decrypt(self, key: ExternalKey, encrypted_key: bytes) -> bytes | None:
        """The module's RSA-OAEP decrypt under `key.alg`; None when the module refuses it."""
        raise NotImplementedError

    def health(self) -> None:
        """Raise KeySourceUnavailableError when the module does not answer; else return."""
        raise NotImplementedError

    def close(self) -> None:
        """Forget the module's handles; the source is unusable afterwards."""
        self._keys = {}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} kids={self.kids()!r}>"
