"""request_crypto: hybrid RSA/AES request encryption with JWK key sets.

Byte-compatible both ways with the JavaScript `@elastic/request-crypto` 2.x (`elastic` format),
plus one standard compact JWE (`jwe` format). See README.md for examples.
"""

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

__all__ = [
    "KEY_LENGTH_IN_BYTES",
    "DecryptedRequest",
    "ElasticBody",
    "Format",
    "JWKDecryptResult",
    "JWKManager",
    "JWKMetadata",
    "JWKSManager",
    "KeySetFile",
    "PassphraseCipher",
    "RequestDecryptor",
    "RequestEncryptor",
    "__version__",
    "create_jwk_manager",
    "create_request_decryptor",
    "create_request_encryptor",
    "detect_format",
    "generate_passphrase",
    "pack_body",
    "unpack_body",
]

__version__ = "0.1.0"


def create_jwk_manager(jwks: JWKSInput | None = None) -> JWKManager:
    """The original's factory name (`createJWKManager`)."""
    return JWKManager(jwks)
