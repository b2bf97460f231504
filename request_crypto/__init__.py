"""request_crypto: hybrid RSA/AES request encryption with JWK key sets.

Byte-compatible both ways with the JavaScript `@elastic/request-crypto` 2.x (`elastic` format),
plus one standard compact JWE (`jwe` format), signed bodies (a JWT inside the `jwe`), and
sealed files (streams of any size). See
README.md for examples. This module only re-exports the public names;
tests/project/test_architecture.py pins them.

Names are imported on first use (`_exports`); `__init__.pyi` types them.
"""

from ._exports import __dir__ as __dir__
from ._exports import __getattr__ as __getattr__

__all__ = [
    "DEFAULT_LIMITS",
    "KEY_LENGTH_IN_BYTES",
    "DecryptedRequest",
    "DirectKeySet",
    "ElasticBody",
    "FileSealer",
    "Format",
    "JWKDecryptResult",
    "JWKManager",
    "JWKMetadata",
    "JWKSInput",
    "JWKSManager",
    "KeySetFile",
    "KeySource",
    "Limits",
    "PassphraseCipher",
    "RemoteJWKS",
    "RequestDecryptor",
    "RequestEncryptor",
    "SealedInfo",
    "SealedReader",
    "Signer",
    "SignerInfo",
    "SigningKeySet",
    "Verifier",
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
