"""Where each public name of `request_crypto` lives, imported on first use (PEP 562).

`request-crypto seal`/`open` and a sender's `import request_crypto` then load only the modules
they use: the request machinery (jwcrypto, x509, asyncio) costs ~0.1 s of start-up, which a
command that seals a file in 0.3 s should not pay. `__init__.pyi` gives type checkers the same
names eagerly; tests/project/test_architecture.py checks the two agree. `lazy_names` does the
same for a subpackage (`request_crypto.keys`).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["HOMES", "__dir__", "__getattr__", "lazy_names"]

#: Each public name and the module (relative to the package) that defines it.
HOMES: dict[str, str] = {
    "DEFAULT_LIMITS": "limits",
    "DecryptedRequest": "request",
    "DirectKeySet": "keys.signing",
    "ElasticBody": "formats",
    "FileSealer": "sealed",
    "Format": "formats",
    "JWKDecryptResult": "keys.source",
    "JWKManager": "keys.jwks",
    "JWKMetadata": "keys.source",
    "JWKSInput": "keys.jwks",
    "JWKSManager": "keys.jwks",
    "KEY_LENGTH_IN_BYTES": "formats.nodecrypto",
    "KeySetFile": "keyset",
    "KeySource": "keys.source",
    "Limits": "limits",
    "PassphraseCipher": "formats.nodecrypto",
    "RemoteJWKS": "keys.remote",
    "RequestDecryptor": "request",
    "RequestEncryptor": "request",
    "SealedInfo": "sealed",
    "SealedReader": "sealed",
    "Signer": "nested",
    "SignerInfo": "nested",
    "SigningKeySet": "keys.signing",
    "Verifier": "nested",
    "create_jwk_manager": "keys.jwks",
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


def lazy_names(
    package: str, homes: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A module `__getattr__` and `__dir__` (PEP 562) for `package`: each name of `homes` is
    imported from its module (relative to `package`) on first use, then kept as an attribute,
    so later lookups cost nothing."""

    def getattr_(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{home}"), name)
        setattr(sys.modules[package], name, value)
        return value

    def dir_() -> list[str]:
        return sorted({*vars(sys.modules[package]), *homes})

    return getattr_, dir_


__getattr__, __dir__ = lazy_names("request_crypto", HOMES)
