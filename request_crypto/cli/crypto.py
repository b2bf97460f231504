"""`request-crypto encrypt|decrypt|inspect`: request bodies, for debugging and for senders.

A body failure is explained for the operator who holds the key set (`_explained`): which kid
the body is for, what the set holds, what to try. `inspect` of a sealed file is in `sealed`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import DecryptionError, MalformedBodyError, NoKeyFoundError, RequestCryptoError
from ..formats import Format, detect_format
from ..keyfile import read_jwks
from ..keys.jwks import DECRYPT_OPS, JWKManager
from ..keys.source import KeySource
from ..limits import DEFAULT_MAX_BODY_SIZE, parse_size
from ..nested import DEFAULT_EXPIRES_IN
from ..request import RequestDecryptor
from ..sealed import is_sealed
from ._common import (
    PROG,
    CLIError,
    Input,
    PasswordFile,
    PrivateSource,
    echo_json,
    encrypt_document,
    input_name,
    is_direct_set,
    kid_list,
    open_private,
    password_of,
    quoted,
    read_input,
    read_json_input,
    shown,
)
from .sealed import describe_sealed
from .signing import (
    Audience,
    ExpiresIn,
    Issuer,
    Leeway,
    SignKid,
    SignWith,
    VerifyWith,
    signing_options,
    verification_keys,
)

__all__ = ["decrypt_body", "inspect_body", "register"]


def _size(text: str | int) -> int:
    """`--max-body` as `serve` takes it: 1048576, 512KiB, 10MB, 32MiB."""
    if isinstance(text, int):
        return text
    try:
        return parse_size(text)
    except RequestCryptoError as exc:
        raise typer.BadParameter(str(exc)) from None


MaxBody = Annotated[
    int,
    typer.Option(
        "--max-body",
        parser=_size,
        metavar="SIZE",
        help="Refuse a body over this size (32MiB, 512KiB, 1048576...); reading stops one "
        "byte past it.",
    ),
]


@contextlib.contextmanager
def _explained(path: str | Path, manager: KeySource) -> Iterator[None]:
    """Say what a body failure most likely means for this operator, and what to try."""
    try:
        yield
    except NoKeyFoundError as exc:
        wanted = "names no kid" if exc.kid is None else f"is for kid {shown(exc.kid)}"
        if (
            exc.kid is not None
            and isinstance(manager, JWKManager)
            and manager.has_private_key(exc.kid)
            and not manager.can_decrypt(exc.kid)
        ):
            raise CLIError(  # the operator's own set: no oracle to avoid here
                f"no key found: the body {wanted}, whose key_ops in {path} allow neither "
                f"{' nor '.join(DECRYPT_OPS)}; add unwrapKey to them to decrypt it"
            ) from None
        raise CLIError(
            f"no key found: the body {wanted}, and {path} holds no private key for it "
            f"(its kids: {kid_list(manager.kids())}); use the key set that has it"
        ) from None
    except MalformedBodyError as exc:
        raise CLIError(f"{exc}; pass the body exactly as the sender sent it") from None
    except DecryptionError as exc:
        raise CLIError(
            f"{exc}; check the sender used the public half of {path} and the body is unedited"
        ) from None


def _decryptor(
    path: str | Path, command: str, max_body: int, password: bytes | None, **verify: Any
) -> tuple[RequestDecryptor, KeySource]:
    """The receiver's keys at `path` (a file, a key-source URI, or dir secrets) as a
    decryptor, and the key source (for `_explained`)."""
    if is_direct_set(path, password):
        secrets = read_jwks(path, password=password)
        return RequestDecryptor(secrets, max_body_size=max_body, **verify), JWKManager()
    manager = open_private(str(path), command, password)
    return RequestDecryptor(manager, max_body_size=max_body, **verify), manager


def decrypt_body(
    path: str | Path,
    body: bytes,
    max_body: int = DEFAULT_MAX_BODY_SIZE,
    password: bytes | None = None,
    **verify: Any,
) -> Any:
    """The payload of `body`, opened with the private keys at `path` (a file or a key-source
    URI); failures explained.

    `verify`: RequestDecryptor's verify_with, issuer, audience, leeway (a signed body's
    claims are the payload; with verify_with an unsigned body is refused).
    """
    decryptor, manager = _decryptor(path, "decrypt", max_body, password, **verify)
    with _explained(path, manager):
        return decryptor.decrypt(body)


def inspect_body(
    path: str | Path,
    body: bytes,
    max_body: int = DEFAULT_MAX_BODY_SIZE,
    password: bytes | None = None,
    **verify: Any,
) -> dict[str, Any]:
    """The body's key and format, once the whole body decrypted (its payload is discarded).

    A signed body also shows its signer (kid, alg) and registered claims: verified with
    `verify_with`, else read and labelled `"verified": false`.
    """
    decryptor, manager = _decryptor(
        path, "inspect", max_body, password, require_signature=False, **verify
    )
    with _explained(path, manager):
        metadata = decryptor.get_jwk_metadata(body)
        described = {"format": detect_format(body).value, **metadata.to_dict()}
        signer = decryptor.describe_signer(body)
        if signer is not None:
            described["signer"] = signer
        return described


def _read_body(source: str, max_body: int) -> bytes:
    body = read_input(source, max_body).strip()
    if not body:
        raise CLIError(f"{input_name(source)} is empty; pass the body the sender sent")
    if is_sealed(body[:64]):
        raise CLIError(
            f"{input_name(source)} is a sealed file, not a request body; open it with: "
            f"{PROG} open --jwks PRIVATE_SET {quoted(input_name(source))}"
        )
    return body


# ---------------------------------------------------------------------------------------------
# Commands


def encrypt(
    *,
    jwks: Annotated[
        Path,
        typer.Option(
            "--jwks", metavar="PUBLIC_SET", help="The public key set.", show_default=False
        ),
    ],
    source: Input = "-",
    kid: Annotated[
        str | None,
        typer.Option(
            "--kid", help="Encrypt to this key (default: the newest).", show_default=False
        ),
    ] = None,
    body_format: Annotated[
        Format | None,
        typer.Option(
            "--format",
            help="elastic: JavaScript-compatible (the default); jwe: compact JWE (the default "
            "with --sign-with or a dir set).",
            show_default=False,
        ),
    ] = None,
    sign_with: SignWith = None,
    sign_kid: SignKid = None,
    issuer: Issuer = None,
    audience: Audience = None,
    expires_in: ExpiresIn = DEFAULT_EXPIRES_IN,
) -> None:
    """Encrypt a JSON document (as a sender would) and write the body to stdout.

    With --sign-with the document (a JSON object) is first signed as a JWT (iat, exp, a
    random jti, and --issuer/--audience), then encrypted as a jwe body (cty JWT). --jwks may
    be a set of dir secrets: the body is then encrypted with the shared secret.
    """
    signing = signing_options(sign_with, sign_kid, issuer, audience, expires_in)
    document = read_json_input(source, "encrypt")
    typer.echo(encrypt_document(jwks, document, kid, body_format, signing)[1])


def decrypt(
    *,
    jwks: PrivateSource,
    source: Input = "-",
    max_body: MaxBody = DEFAULT_MAX_BODY_SIZE,
    password_file: PasswordFile = None,
    verify_with: VerifyWith = None,
    issuer: Issuer = None,
    audience: Audience = None,
    leeway: Leeway = 0,
) -> None:
    """Decrypt a body (either format) and write its JSON payload to stdout.

    With --verify-with the body must be signed: its signature is verified with the senders'
    set and its claims checked (exp, nbf, --issuer, --audience); the verified claims are
    printed. An unsigned body is then refused (exit 1).
    """
    verify = _verify_options(verify_with, issuer, audience, leeway)
    body = _read_body(source, max_body)
    echo_json(decrypt_body(jwks, body, max_body, password_of(password_file), **verify))


def _verify_options(
    verify_with: str | None, issuer: str | None, audience: str | None, leeway: float
) -> dict[str, Any]:
    if verify_with is None:
        if issuer is not None or audience is not None:
            raise CLIError(
                "--issuer and --audience are checked on signed bodies: give --verify-with"
            )
        return {}
    keys = verification_keys(verify_with)
    return {"verify_with": keys, "issuer": issuer, "audience": audience, "leeway": leeway}


def inspect(
    *,
    jwks: Annotated[
        str | None,
        typer.Option(
            "--jwks",
            metavar="PRIVATE_SET|URI",
            help="The receiver's private keys: a file or a key-source URI (optional for a "
            "sealed file, which also takes the symmetric KMS key of its aws-kms recipient).",
            show_default=False,
        ),
    ] = None,
    source: Input = "-",
    max_body: MaxBody = DEFAULT_MAX_BODY_SIZE,
    verify_with: VerifyWith = None,
    password_file: PasswordFile = None,
) -> None:
    """Show which key a body is for (JWK metadata) and its format (and a signed body's signer).

    The whole body is decrypted first (the payload is discarded), so a body altered anywhere
    fails here as it would in decrypt. For a sealed file: its recipients' kids, segment size
    and plaintext length, with no key (unauthenticated), or authenticated with --jwks.
    """
    password = None if jwks is None else password_of(password_file)
    sealed = describe_sealed(source, jwks, password)
    if sealed is not None:
        echo_json(sealed)
        return
    if jwks is None:  # a usage error (exit 2), as when --jwks was required
        raise typer.BadParameter(
            "a request body needs the private key set (a sealed file needs none)",
            param_hint="'--jwks'",
        )
    verify = _verify_options(verify_with, None, None, 0)
    body = _read_body(source, max_body)
    echo_json(inspect_body(jwks, body, max_body, password, **verify))


def register(app: typer.Typer) -> None:
    """Add `encrypt`, `decrypt` and `inspect` to a Typer app (the main CLI)."""
    for command in (encrypt, decrypt, inspect):
        app.command()(command)
