"""The interface every wire format implements, and the names of the formats."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..keys.jwks import JWKManager
    from ..keys.source import JWKDecryptResult, JWKMetadata, KeySource
    from ..limits import Limits

__all__ = ["Format", "Opened", "WireFormat"]


class Format(str, Enum):
    """The two wire formats: the JavaScript-compatible one and one standard compact JWE."""

    ELASTIC = "elastic"
    JWE = "jwe"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Opened:
    """A body's authenticated plaintext, and the JWE that carried its key (for metadata)."""

    plaintext: bytes | bytearray = field(repr=False)
    result: JWKDecryptResult

    @property
    def metadata(self) -> JWKMetadata:
        """Which key opened the body, with the header it came with."""
        return self.result.metadata


class WireFormat(Protocol):
    """One wire format. `RequestEncryptor`/`RequestDecryptor` dispatch to it by `name`.

    The dispatcher checks the body's size before `open` and the plaintext's JSON budget after
    it; `open` applies the limits only it can place (wrapped key, plaintext before decrypting).
    There is no separate "describe": a body's key metadata (`Opened.metadata`) is reported
    only once the whole body is authenticated and its JSON parsed, as `decrypt` requires.
    """

    @property
    def name(self) -> Format:
        """The format's name, as senders and receivers spell it."""
        ...

    def detect(self, body: str | bytes) -> bool:
        """Whether `body` has this format's shape: a cheap test, no decoding."""
        ...

    def seal(self, keys: JWKManager, kid: str, plaintext: bytes) -> str:
        """Encrypt `plaintext` to the public key `kid`; returns the body as text."""
        ...

    def open(self, keys: KeySource, body: str | bytes, limits: Limits) -> Opened:
        """Authenticate and decrypt `body` with the private keys of `keys`."""
        ...
