"""The options of signed bodies, shared by `encrypt`/`decrypt`/`inspect` and `serve`/`send`.

A sender signs with its private signing set (`--sign-with`); a receiver verifies with the
senders' public set, a file or an `https://`/`http://` URL (`--verify-with`). Loading checks
the set's kind, so an encryption set given where a signing set belongs is named as such.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..keyfile import is_private_set, read_jwks
from ..keys.remote import RemoteJWKS
from ..keys.signing import SigningKeySet, VerificationKeys, key_set_kind
from ._common import PROG, CLIError, quoted, warn

__all__ = [
    "Audience",
    "ExpiresIn",
    "Issuer",
    "Leeway",
    "SignKid",
    "SignWith",
    "VerifyWith",
    "signing_document",
    "signing_options",
    "verification_keys",
]

SignWith = Annotated[
    Path | None,
    typer.Option(
        "--sign-with",
        metavar="SENDER_SET",
        help="Sign the payload (a JSON object) as a JWT with this private signing set; "
        "selects the jwe format.",
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
VerifyWith = Annotated[
    str | None,
    typer.Option(
        "--verify-with",
        metavar="SET_OR_URL",
        help="Verify signed bodies with the senders' public signing set (a file, or an "
        "https:// or http:// URL of a JWKS).",
        show_default=False,
    ),
]
Leeway = Annotated[
    float,
    typer.Option("--leeway", min=0, metavar="SECONDS", help="Clock skew allowed on exp and nbf."),
]


def _signing_set(path: Path, role: str) -> dict[str, Any]:
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
    sign_with: Path | None,
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
    return {
        "sign_with": signing_document(sign_with),
        "sign_kid": sign_kid,
        "issuer": issuer,
        "audience": audience,
        "expires_in": expires_in,
    }


def verification_keys(value: str) -> VerificationKeys:
    """The senders' keys: a remote JWKS for a URL, else the signing set in the file."""
    if value.startswith(("https://", "http://")):
        return RemoteJWKS(value)
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
