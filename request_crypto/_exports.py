"""Where each public name of `request_crypto` lives, imported on first use (PEP 562).

`request-crypto seal`/`open` and a sender's `import request_crypto` then load only the modules
they use: the request machinery (jwcrypto, x509, asyncio) costs ~0.1 s of start-up, which a
command that seals a file in 0.3 s should not pay. `__init__.pyi` gives type checkers the same
names eagerly; tests/project/test_architecture.py checks the two agree.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

__all__ = ["HOMES", "__dir__", "__getattr__"]

#: Each public name and the module (relative to the package) that defines it.
HOMES: dict[str, str] = {
    "DEFAULT_LIMITS": "limits",
    "DecryptedRequest": "request",
    "DirectKeySet": "keys",
    "ElasticBody": "formats",
    "FileSealer": "sealed",
    "Format": "formats",
    "JWKDecryptResult": "keys",
    "JWKManager": "keys",
    "JWKMetadata": "keys",
    "JWKSInput": "keys",
    "JWKSManager": "keys",
    "KEY_LENGTH_IN_BYTES": "formats.nodecrypto",
    "KeySetFile": "keyset",
    "KeySource": "keys",
    "Limits": "limits",
    "PassphraseCipher": "formats.nodecrypto",
    "RemoteJWKS": "keys",
    "RequestDecryptor": "request",
    "RequestEncryptor": "request",
    "SealedInfo": "sealed",
    "SealedReader": "sealed",
    "Signer": "nested",
    "SignerInfo": "nested",
    "SigningKeySet": "keys",
    "Verifier": "nested",
    "create_jwk_manager": "keys",
    "create_request_decryptor": "request",
    "create_request_encryptor": "request",
    "detect_format": "formats",
    "generate_passphrase": "formats.nodecrypto",
    "inspect_sealed": "sealed",
    "open_sealed": "sealed",
    "pack_body": "formats",
    "seal": "sealed",
    "unpack_body": "formats",
}


def __getattr__(name: str) -> Any:
    """The package's module `__getattr__`: import the name's home, keep the name."""
    home = HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'request_crypto' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"request_crypto.{home}"), name)
    setattr(sys.modules["request_crypto"], name, value)
    return value


def __dir__() -> list[str]:
    """The package's names, the lazy ones included."""
    return sorted({*vars(sys.modules["request_crypto"]), *HOMES})
