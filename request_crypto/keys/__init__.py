"""Key sources: whatever holds the private keys, behind one `KeySource` interface.

`jwks` holds RFC 7517 key sets in memory (read from a dict, JSON text or a file); an HSM or
KMS source is one more module implementing `source.KeySource`. `signing` holds the senders'
signing sets and `dir` secret sets, `remote` a senders' JWKS fetched over HTTP(S).
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
from .remote import RemoteJWKS
from .signing import DirectKeySet, SigningKey, SigningKeySet, VerificationKeys
from .source import JWKDecryptResult, JWKMetadata, KeySource, open_compact

__all__ = [
    "DirectKeySet",
    "JWKDecryptResult",
    "JWKManager",
    "JWKMetadata",
    "JWKSInput",
    "JWKSManager",
    "KeySource",
    "RemoteJWKS",
    "SigningKey",
    "SigningKeySet",
    "VerificationKeys",
    "create_jwk_manager",
    "load_jwks_document",
    "open_compact",
    "parse_jwks",
]
