"""Where private keys live, named by one string: a file path or a key-source URI.

    private_jwks.json                              a JWK set file (plain or encrypted at rest)
    pkcs11:token=T;object=K?module-path=...&...    a PKCS#11 token (RFC 7512; keys.pkcs11)
    aws-kms:arn:aws:kms:...:key/ID | aws-kms:alias/NAME    AWS KMS (keys.aws_kms)

`open_key_source` picks the constructor from the scheme table `SCHEMES` (smallstep's
registry shape), `open_signing_key` from `SIGNING_SCHEMES` (a signing key in a token or in
KMS, for signing and for verifying), `open_data_key` from `DATA_KEY_SCHEMES` (a sealed
file's KMS recipient); `open_sealed_keys` whichever of a key source and a data key opens a
sealed file; several locations are merged by kid (`MergedKeySource`).
`is_signing_key_uri` tells a URI naming a signing key from one naming a decryption key (each
scheme module's `is_signing_uri` asks the token or KMS). The HSM and KMS
modules are imported only when their scheme is used, so the core needs neither
python-pkcs11 nor boto3.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import Any

from ..errors import KeySourceError
from ..keyfile import read_jwks
from .jwks import JWKManager
from .merged import MergedKeySource
from .remote import RemoteJWKS
from .signing import MergedVerificationKeys, SigningKey, VerificationKeys
from .source import KeySource

__all__ = [
    "DATA_KEY_SCHEMES",
    "SCHEMES",
    "SIGNING_SCHEMES",
    "is_data_key_uri",
    "is_key_source_uri",
    "is_signing_key_uri",
    "is_signing_scheme",
    "open_data_key",
    "open_key_source",
    "open_key_sources",
    "open_sealed_keys",
    "open_signing_key",
    "open_verification_keys",
    "refuse_unknown_scheme",
    "scheme_module",
    "shown_location",
]

#: URI scheme -> (module, class, the extra that installs its dependency).
SCHEMES = {
    "pkcs11": ("request_crypto.keys.pkcs11", "PKCS11KeySource", "hsm"),
    "aws-kms": ("request_crypto.keys.aws_kms", "AWSKMSKeySource", "kms"),
}
#: URI scheme -> (module, class, extra) of a signing key kept outside the process.
SIGNING_SCHEMES = {
    "pkcs11": ("request_crypto.keys.pkcs11_signing", "PKCS11SigningKey", "hsm"),
    "aws-kms": ("request_crypto.keys.aws_kms_signing", "AWSKMSSigningKey", "kms"),
}
#: URI scheme -> (module, class, extra) of a key service making sealed files' file keys.
DATA_KEY_SCHEMES = {
    "aws-kms": ("request_crypto.keys.aws_kms_data_key", "KMSDataKey", "kms"),
}
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]+")


def open_key_source(
    location: str | os.PathLike[str], *, password: bytes | None = None
) -> KeySource:
    """The key source `location` names: a URI of a scheme in SCHEMES, else a key-set file.

    `password` opens a file encrypted at rest. A `name:` prefix that is no known scheme and
    no existing file is refused (a typo must not read as a missing file).
    """
    text = os.fspath(location)
    if is_key_source_uri(text):
        scheme = text.partition(":")[0]
        source: KeySource = getattr(scheme_module(scheme), SCHEMES[scheme][1])(text)
        return source
    refuse_unknown_scheme(text)
    return JWKManager(read_jwks(text, password=password))


def is_key_source_uri(location: str | os.PathLike[str]) -> bool:
    """Whether `location` is a URI of a scheme in SCHEMES (else it names a file)."""
    scheme, colon, _ = os.fspath(location).partition(":")
    return bool(colon) and scheme in SCHEMES


def refuse_unknown_scheme(location: str) -> None:
    """Refuse `name:...` naming no known scheme and no existing file: a typo must not read as
    a missing file."""
    scheme, colon, _ = location.partition(":")
    if colon and _SCHEME.fullmatch(scheme) and not os.path.exists(location):
        raise KeySourceError(
            f"{location!r}: unknown key source scheme {scheme!r}; use a file path, "
            + " or ".join(f"{name}:" for name in SCHEMES)
        )


def open_signing_key(location: object) -> SigningKey | None:
    """The signing key a URI of SIGNING_SCHEMES names (`pkcs11:...`, `aws-kms:...`), else
    None (a file, a URL or a set given as data)."""
    if not isinstance(location, str):
        return None
    scheme = location.partition(":")[0]
    if scheme not in SIGNING_SCHEMES:
        return None
    module = scheme_module(scheme, SIGNING_SCHEMES)
    key: SigningKey = getattr(module, SIGNING_SCHEMES[scheme][1])(location)
    return key


def open_data_key(location: str) -> Any:
    """The sealed-file recipient a URI of DATA_KEY_SCHEMES names (`aws-kms:...`), else None."""
    scheme = location.partition(":")[0]
    if scheme not in DATA_KEY_SCHEMES:
        return None
    module = scheme_module(scheme, DATA_KEY_SCHEMES)
    return getattr(module, DATA_KEY_SCHEMES[scheme][1])(location)


def is_data_key_uri(location: str) -> bool:
    """Whether `location` names a key of DATA_KEY_SCHEMES that makes data keys (a symmetric
    KMS key) rather than an RSA key of the same scheme (asks KMS which it is)."""
    scheme, colon, _ = location.partition(":")
    if not colon or scheme not in DATA_KEY_SCHEMES:
        return False
    return bool(scheme_module(scheme, DATA_KEY_SCHEMES).is_data_key_uri(location))


def open_sealed_keys(location: str | os.PathLike[str], *, password: bytes | None = None) -> Any:
    """What opens a sealed file: the data key of its aws-kms recipient when `location` names a
    symmetric KMS key, else the key source `location` names (a file, `pkcs11:`, an RSA key
    in KMS: `open_key_source`), which unwraps an RSA recipient's JWE."""
    text = os.fspath(location)
    if is_data_key_uri(text):
        return open_data_key(text)
    return open_key_source(text, password=password)


def open_verification_keys(
    locations: str | Sequence[str], open_file: Callable[[str], VerificationKeys]
) -> VerificationKeys:
    """The senders' keys at each location, merged by kid when there are several.

    A location is an `https://`/`http://` JWKS URL (`RemoteJWKS`), a signing-key URI
    (`pkcs11:`, `aws-kms:`: the key's public half, read from the token or KMS), or a file,
    opened by `open_file` (the CLI reads it once, the receiver reloads it on change).
    """
    each = [locations] if isinstance(locations, str) else list(locations)

    def opened(location: str) -> VerificationKeys:
        if location.startswith(("https://", "http://")):
            return RemoteJWKS(location)
        return open_signing_key(location) or open_file(location)

    sets = [opened(location) for location in each]
    if len(sets) == 1:
        return sets[0]
    return MergedVerificationKeys(sets, [shown_location(location) for location in each])


def is_signing_scheme(location: str) -> bool:
    """Whether `location` starts with a scheme of SIGNING_SCHEMES (nothing is asked)."""
    scheme, colon, _ = location.partition(":")
    return bool(colon) and scheme in SIGNING_SCHEMES


def is_signing_key_uri(location: str) -> bool:
    """Whether `location` is a URI naming a signing key (asks the token or KMS which it is)."""
    if not is_signing_scheme(location):
        return False
    scheme = location.partition(":")[0]
    return bool(scheme_module(scheme, SIGNING_SCHEMES).is_signing_uri(location))


def scheme_module(scheme: str, schemes: Mapping[str, tuple[str, str, str]] = SCHEMES) -> ModuleType:
    """The module implementing `scheme`, imported now; a missing extra is a clear error."""
    module_name, _, extra = schemes[scheme]
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        raise KeySourceError(
            f"{scheme}: key sources need the {extra!r} extra: "
            f"pip install 'request_crypto[{extra}]' ({exc})"
        ) from None


def open_key_sources(
    locations: Sequence[str | os.PathLike[str]], *, password: bytes | None = None
) -> KeySource:
    """One location's source, or several merged by kid (a kid in two of them is refused)."""
    sources = [open_key_source(location, password=password) for location in locations]
    if len(sources) == 1:
        return sources[0]
    return MergedKeySource(sources, [shown_location(location) for location in locations])


def shown_location(location: str | os.PathLike[str]) -> str:
    """A location for messages: a URI without its pin-value."""
    return re.sub(r"pin-value=[^&]*", "pin-value=***", os.fspath(location))
