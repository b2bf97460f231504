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
from ..keys.jwks import DECRYPT_OPS, JWKManager
from ..keys.source import KeySource
from ..limits import DEFAULT_MAX_BODY_SIZE, parse_size
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
    kid_list,
    open_private,
    password_of,
    quoted,
    read_input,
    read_json_input,
    shown,
)
from .sealed import describe_sealed

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


def decrypt_body(
    path: str | Path,
    body: bytes,
    max_body: int = DEFAULT_MAX_BODY_SIZE,
    password: bytes | None = None,
) -> Any:
    """The payload of `body`, opened with the private keys at `path` (a file or a key-source
    URI); failures explained."""
    manager = open_private(str(path), "decrypt", password)
    with _explained(path, manager):
        return RequestDecryptor(manager, max_body_size=max_body).decrypt(body)


def inspect_body(
    path: str | Path,
    body: bytes,
    max_body: int = DEFAULT_MAX_BODY_SIZE,
    password: bytes | None = None,
) -> dict[str, Any]:
    """The body's key and format, once the whole body decrypted (its payload is discarded)."""
    manager = open_private(str(path), "inspect", password)
    with _explained(path, manager):
        metadata = RequestDecryptor(manager, max_body_size=max_body).get_jwk_metadata(body)
        return {"format": detect_format(body).value, **metadata.to_dict()}


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
        Format, typer.Option("--format", help="elastic: JavaScript-compatible; jwe: compact JWE.")
    ] = Format.ELASTIC,
) -> None:
    """Encrypt a JSON document (as a sender would) and write the body to stdout."""
    typer.echo(encrypt_document(jwks, read_json_input(source, "encrypt"), kid, body_format)[1])


def decrypt(
    jwks: PrivateSource,
    source: Input = "-",
    max_body: MaxBody = DEFAULT_MAX_BODY_SIZE,
    password_file: PasswordFile = None,
) -> None:
    """Decrypt a body (either format) and write its JSON payload to stdout."""
    body = _read_body(source, max_body)
    echo_json(decrypt_body(jwks, body, max_body, password_of(password_file)))


def inspect(
    jwks: Annotated[
        str | None,
        typer.Option(
            "--jwks",
            metavar="PRIVATE_SET|URI",
            help="The receiver's private keys: a file or a key-source URI (optional for a "
            "sealed file, which takes a file).",
            show_default=False,
        ),
    ] = None,
    source: Input = "-",
    max_body: MaxBody = DEFAULT_MAX_BODY_SIZE,
    password_file: PasswordFile = None,
) -> None:
    """Show which key a body is for (JWK metadata) and its format.

    The whole body is decrypted first (the payload is discarded), so a body altered anywhere
    fails here as it would in decrypt. For a sealed file: its recipients' kids, segment size
    and plaintext length, with no key (unauthenticated), or authenticated with --jwks.
    """
    sealed = describe_sealed(source, None if jwks is None else Path(jwks))
    if sealed is not None:
        echo_json(sealed)
        return
    if jwks is None:  # a usage error (exit 2), as when --jwks was required
        raise typer.BadParameter(
            "a request body needs the private key set (a sealed file needs none)",
            param_hint="'--jwks'",
        )
    body = _read_body(source, max_body)
    echo_json(inspect_body(jwks, body, max_body, password_of(password_file)))


def register(app: typer.Typer) -> None:
    """Add `encrypt`, `decrypt` and `inspect` to a Typer app (the main CLI)."""
    for command in (encrypt, decrypt, inspect):
        app.command()(command)
