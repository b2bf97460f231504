"""Key sources: whatever holds the private keys, behind one `KeySource` interface.

`jwks` holds RFC 7517 key sets in memory (read from a dict, JSON text or a file); `pkcs11`
(an HSM) and `aws_kms` (AWS KMS) keep private keys outside the process; `merged` joins
sources by kid; `uri.open_key_source` opens any of them from a path or URI; `pbes2` encrypts
key-set files at rest under a password, `kms_wrap` under a KMS key. `signing` holds the
senders' signing sets, `dir` secret sets and merged verification sets, `remote` a senders'
JWKS fetched over HTTP(S); `pkcs11_signing` and `aws_kms_signing` signing keys kept in a token
or KMS (`uri.open_signing_key`).
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
from .merged import MergedKeySource
from .remote import RemoteJWKS
from .signing import (
    DirectKeySet,
    MergedVerificationKeys,
    SigningKey,
    SigningKeySet,
    VerificationKeys,
)
from .source import JWKDecryptResult, JWKMetadata, KeySource, open_compact

__all__ = [
    "DirectKeySet",
    "JWKDecryptResult",
    "JWKManager",
    "JWKMetadata",
    "JWKSInput",
    "JWKSManager",
    "KeySource",
    "MergedKeySource",
    "MergedVerificationKeys",
    "RemoteJWKS",
    "SigningKey",
    "SigningKeySet",
    "VerificationKeys",
    "create_jwk_manager",
    "load_jwks_document",
    "open_compact",
    "parse_jwks",
]
