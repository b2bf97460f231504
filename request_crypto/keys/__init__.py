"""Key sources: whatever holds the private keys, behind one `KeySource` interface.

`jwks` holds RFC 7517 key sets in memory (read from a dict, JSON text or a file); `pkcs11`
(an HSM) and `aws_kms` (AWS KMS) keep private keys outside the process; `merged` joins
sources by kid; `uri.open_key_source` opens any of them from a path or URI; `pbes2` encrypts
key-set files at rest under a password, `kms_wrap` under a KMS key. `signing` holds the
senders' signing sets, `dir` secret sets and merged verification sets, `remote` a senders'
JWKS fetched over HTTP(S); `pkcs11_signing` and `aws_kms_signing` signing keys kept in a token
or KMS (`uri.open_signing_key`).

Names are imported on first use: a command that needs only `jwks` (`seal`) does not load the
signing, remote and merged sources (nor jwcrypto) with them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._exports import lazy_names

if TYPE_CHECKING:
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

#: Each name above and the module of this package that defines it.
_HOMES = {
    "JWKManager": "jwks",
    "JWKSInput": "jwks",
    "JWKSManager": "jwks",
    "create_jwk_manager": "jwks",
    "load_jwks_document": "jwks",
    "parse_jwks": "jwks",
    "MergedKeySource": "merged",
    "RemoteJWKS": "remote",
    "DirectKeySet": "signing",
    "MergedVerificationKeys": "signing",
    "SigningKey": "signing",
    "SigningKeySet": "signing",
    "VerificationKeys": "signing",
    "JWKDecryptResult": "source",
    "JWKMetadata": "source",
    "KeySource": "source",
    "open_compact": "source",
}

if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_names(__name__, _HOMES)
