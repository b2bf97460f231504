"""request_crypto: hybrid RSA/AES request encryption with JWK key sets.

Byte-compatible both ways with the JavaScript `@elastic/request-crypto` 2.x (`elastic` format),
plus one standard compact JWE (`jwe` format), and sealed files (streams of any size). See
README.md for examples.

Names are imported on first use (PEP 562), so `request-crypto seal`/`open` start without
loading the request machinery they do not need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .envelope import ElasticBody, Format, detect_format, pack_body, unpack_body
    from .jwks import JWKDecryptResult, JWKManager, JWKMetadata, JWKSInput, JWKSManager
    from .keyset import KeySetFile
    from .passphrase import KEY_LENGTH_IN_BYTES, PassphraseCipher, generate_passphrase
    from .request import (
        DecryptedRequest,
        RequestDecryptor,
        RequestEncryptor,
        create_request_decryptor,
        create_request_encryptor,
    )
    from .sealed import SealedInfo, SealedReader, inspect_sealed, open_sealed, seal

__all__ = [
    "KEY_LENGTH_IN_BYTES",
    "DecryptedRequest",
    "ElasticBody",
    "Format",
    "JWKDecryptResult",
    "JWKManager",
    "JWKMetadata",
    "JWKSInput",
    "JWKSManager",
    "KeySetFile",
    "PassphraseCipher",
    "RequestDecryptor",
    "RequestEncryptor",
    "SealedInfo",
    "SealedReader",
    "__version__",
    "create_jwk_manager",
    "create_request_decryptor",
    "create_request_encryptor",
    "detect_format",
    "generate_passphrase",
    "inspect_sealed",
    "open_sealed",
    "pack_body",
    "seal",
    "unpack_body",
]

__version__ = "0.1.0"

#: Where each exported name lives.
_MODULES = {
    "envelope": ("ElasticBody", "Format", "detect_format", "pack_body", "unpack_body"),
    "jwks": ("JWKDecryptResult", "JWKManager", "JWKMetadata", "JWKSInput", "JWKSManager"),
    "keyset": ("KeySetFile",),
    "passphrase": ("KEY_LENGTH_IN_BYTES", "PassphraseCipher", "generate_passphrase"),
    "request": (
        "DecryptedRequest",
        "RequestDecryptor",
        "RequestEncryptor",
        "create_request_decryptor",
        "create_request_encryptor",
    ),
    "sealed": ("SealedInfo", "SealedReader", "inspect_sealed", "open_sealed", "seal"),
}
_HOME = {name: module for module, names in _MODULES.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


def create_jwk_manager(jwks: JWKSInput | None = None) -> JWKManager:
    """The original's factory name (`createJWKManager`)."""
    manager: JWKManager = __getattr__("JWKManager")(jwks)
    return manager
