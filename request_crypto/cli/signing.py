"""The options of signed bodies, shared by `encrypt`/`decrypt`/`inspect` and `serve`/`send`.

A sender signs with its private signing set or a key kept in a token or KMS (`--sign-with`
FILE, `pkcs11:...`, `aws-kms:...`); a receiver verifies with the senders' public set, a file,
an `https://`/`http://` URL or the same key URIs (`--verify-with`; `serve` takes several,
merged by kid). Loading checks the set's kind, so an encryption set given where a signing set
belongs is named as such.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..keyfile import is_private_set, read_jwks
from ..keys.signing import SigningKeySet, VerificationKeys, key_set_kind
from ..keys.uri import open_signing_key, open_verification_keys
from ._common import PROG, CLIError, quoted, warn

__all__ = [
    "Audience",
    "ExpiresIn",
    "Issuer",
    "Leeway",
    "SignKid",
    "SignWith",
    "VerifyWith",
    "VerifyWithMany",
    "signing_document",
    "signing_options",
    "verification_keys",
]

SignWith = Annotated[
    str | None,
    typer.Option(
        "--sign-with",
        metavar="SET_OR_URI",
        help="Sign the payload (a JSON object) as a JWT with this private signing set, or "
        "with a key in a token or KMS (pkcs11:..., aws-kms:...); selects the jwe format.",
        show_default=False,
    ),
]
SignKid = Annotated[
    str | None,
    typer.Option(
        "--sign-kid", help="Sign with this key (default: the newest).", show_default=False
    ),
]
Issuer = Annotated[
    str | None,
    typer.Option("--issuer", help="The JWT's iss (checked when verifying).", show_default=False),
]
Audience = Annotated[
    str | None,
    typer.Option("--audience", help="The JWT's aud (checked when verifying).", show_default=False),
]
ExpiresIn = Annotated[
    int,
    typer.Option("--expires-in", min=1, metavar="SECONDS", help="The JWT's lifetime (exp - iat)."),
]
_VERIFY_HELP = (
    "Verify signed bodies with the senders' public signing set: a file, an https:// or "
    "http:// URL of a JWKS, or a key in a token or KMS (pkcs11:..., aws-kms:...)."
)
VerifyWith = Annotated[
    str | None,
    typer.Option("--verify-with", metavar="SET_OR_URL", help=_VERIFY_HELP, show_default=False),
]
VerifyWithMany = Annotated[
    list[str] | None,
    typer.Option(
        "--verify-with",
        metavar="SET_OR_URL",
        help=_VERIFY_HELP + " Give it several times to merge sets by kid.",
        show_default=False,
    ),
]
Leeway = Annotated[
    float,
    typer.Option("--leeway", min=0, metavar="SECONDS", help="Clock skew allowed on exp and nbf."),
]


def _signing_set(path: Path, role: str) -> dict[str, Any]:
    """The signing set in the file at `path` (refused if it is another kind)."""
    document = read_jwks(path)
    if document.get("keys") and key_set_kind(document) != "sig":
        raise CLIError(
            f"{path} is not a signing set ({role}); make one with: "
            f"{PROG} keys init {quoted(path)} --kid KID --alg ES256"
        )
    return document


def signing_document(path: Path) -> dict[str, Any]:
    """The sender's private signing set at `path` (refused if it is another kind)."""
    return _signing_set(path, "--sign-with")


def signing_options(
    sign_with: str | None,
    sign_kid: str | None,
    issuer: str | None,
    audience: str | None,
    expires_in: int,
) -> dict[str, Any]:
    """The `RequestEncryptor` keywords for these options (empty without --sign-with)."""
    if sign_with is None:
        if sign_kid is not None:
            raise CLIError("--sign-kid needs --sign-with (the sender's private signing set)")
        return {}
    key = open_signing_key(sign_with)
    if key is not None and sign_kid is not None:
        raise CLIError("--sign-kid picks a key of a set; a pkcs11: or aws-kms: URI names one key")
    return {
        "sign_with": key or signing_document(Path(sign_with)),
        "sign_kid": sign_kid,
        "issuer": issuer,
        "audience": audience,
        "expires_in": expires_in,
    }


def verification_keys(value: str | list[str] | tuple[str, ...]) -> VerificationKeys:
    """The senders' keys: a remote JWKS for a URL, a key's public half for a pkcs11: or
    aws-kms: URI, else the signing set in the file; several are merged by kid."""
    return open_verification_keys(value, _verification_file)


def _verification_file(value: str) -> VerificationKeys:
    document = _signing_set(Path(value), "--verify-with")
    if is_private_set(document) and key_set_kind(document) == "sig":
        secret = all(jwk.get("kty") == "oct" for jwk in document["keys"])
        if not secret:
            warn(
                f"{value} holds private signing keys; a receiver needs only the senders' "
                f"public set ({PROG} keys public {quoted(value)})"
            )
    keys = SigningKeySet(document)
    if not len(keys):
        raise CLIError(f"{value} holds no keys: give the senders' public signing set")
    return keys
