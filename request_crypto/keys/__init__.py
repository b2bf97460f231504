"""Key sources: whatever holds the private keys, behind one `KeySource` interface.

`jwks` holds RFC 7517 key sets in memory (read from a dict, JSON text or a file); an HSM or
KMS source is one more module implementing `source.KeySource`.
"""

from __future__ import annotations

from .jwks import (
    JWKManager,
    JWKSInput,
    JWKSManager,
    create_jwk_manager,
    load_jwks_document,
    parse_jwks,
)
from .source import JWKDecryptResult, JWKMetadata, KeySource, open_compact

__all__ = [
    "JWKDecryptResult",
    "JWKManager",
    "JWKMetadata",
    "JWKSInput",
    "JWKSManager",
    "KeySource",
    "create_jwk_manager",
    "load_jwks_document",
    "open_compact",
    "parse_jwks",
]
