"""Types of the public names (the package imports them on first use: see `_exports`)."""

from .formats import ElasticBody, Format, detect_format, pack_body, unpack_body
from .formats.nodecrypto import KEY_LENGTH_IN_BYTES, PassphraseCipher, generate_passphrase
from .keys.jwks import JWKManager, JWKSInput, JWKSManager, create_jwk_manager
from .keys.remote import RemoteJWKS
from .keys.signing import DirectKeySet, SigningKeySet
from .keys.source import JWKDecryptResult, JWKMetadata, KeySource
from .keyset import KeySetFile
from .limits import DEFAULT_LIMITS, Limits
from .nested import Signer, SignerInfo, Verifier
from .request import (
    DecryptedRequest,
    RequestDecryptor,
    RequestEncryptor,
    create_request_decryptor,
    create_request_encryptor,
)
from .sealed import FileSealer, SealedInfo, SealedReader, inspect_sealed, open_sealed, seal

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

__version__: str
