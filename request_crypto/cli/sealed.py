"""`request-crypto seal` and `open` as Typer commands, and `inspect` of sealed files.

`register(app)` adds both commands to the main CLI (`request_crypto.cli`). The work is in
`_fast`, which the console script also calls directly for a plain `seal`/`open` command
line, without Typer's start-up cost; the options here must stay those it accepts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import InputError
from ..sealed import MAGIC, SealedReader, inspect_sealed, is_sealed
from ._common import PasswordFile, password_of
from ._fast import (
    DEFAULT_SEGMENT_SIZE,
    STDIO,
    open_files,
    opened_input,
    opening_keys,
    seal_files,
)

__all__ = ["describe_sealed", "register"]

# ---------------------------------------------------------------------------------------------
# Arguments

Output = Annotated[
    str,
    typer.Option(
        "-o",
        "--output",
        metavar="OUTPUT|-",
        help="A file or s3://BUCKET/KEY (written whole or not at all), or - (the default) "
        "for stdout.",
    ),
]
PublicSet = Annotated[
    Path | None,
    typer.Option(
        "--jwks",
        metavar="PUBLIC_SET",
        help="The recipients' key set (optional with --recipient aws-kms:...).",
        show_default=False,
    ),
]
Recipient = Annotated[
    list[str] | None,
    typer.Option(
        "--recipient",
        metavar="aws-kms:KEY",
        help="Also seal to this symmetric AWS KMS key (ARN or alias/NAME): the file key comes "
        "from its GenerateDataKey.",
        show_default=False,
    ),
]
OpeningSet = Annotated[
    str,
    typer.Option(
        "--jwks",
        metavar="PRIVATE_SET|URI",
        help="The receiver's private keys: a key-set file (plain, encrypted at rest or "
        "KMS-wrapped), a key-source URI (pkcs11:..., aws-kms:... RSA key; see "
        "docs/key-sources.md), or the symmetric KMS key of an aws-kms recipient.",
        show_default=False,
    ),
]
SealedInput = Annotated[
    str,
    typer.Argument(
        metavar="[INPUT|-]", help="A file, s3://BUCKET/KEY, or - (the default) for stdin."
    ),
]
Kids = Annotated[
    list[str] | None,
    typer.Option(
        "--kid",
        metavar="KID",
        help="Seal to this key; repeat for several recipients (default: the newest key).",
        show_default=False,
    ),
]
SegmentSize = Annotated[
    int, typer.Option("--segment-size", help="Plaintext bytes per segment (a power of two).")
]


# ---------------------------------------------------------------------------------------------
# Commands


def seal_command(
    *,
    jwks: PublicSet = None,
    source: SealedInput = STDIO,
    kid: Kids = None,
    recipient: Recipient = None,
    output: Output = STDIO,
    segment_size: SegmentSize = DEFAULT_SEGMENT_SIZE,
) -> None:
    """Seal a file or stdin of any size to one or more recipients (constant memory)."""
    seal_files(jwks, source, kid or [], output, segment_size, recipients=recipient or [])


def open_command(
    jwks: OpeningSet,
    source: SealedInput = STDIO,
    output: Output = STDIO,
    password_file: PasswordFile = None,
) -> None:
    """Open a sealed file: every byte is written only after it was authenticated.

    To a file, the data goes to a temporary file next to it, renamed into place after the
    final segment authenticated; on any failure nothing is left behind. To stdout, a file
    cut short still fails (exit 1) after the authenticated part was written. A directory
    (the receiver's sealed archive) opens every *.sealed file in it, in name order.
    """
    open_files(jwks, source, output, password=password_of(password_file))


def describe_sealed(
    source: str, jwks: str | None = None, password: bytes | None = None
) -> dict[str, Any] | None:
    """`inspect` of a sealed file: None if `source` is not one (it is then left unread).

    Without a key set, what the file says (unauthenticated); with one, the header and the
    final segment are authenticated first, and so is the length (files only: a stream is
    not read twice).
    """
    if source == STDIO:
        stdin = typer.get_binary_stream("stdin")
        peek = getattr(stdin, "peek", None)
        if peek is None or not is_sealed(peek(len(MAGIC))[: len(MAGIC)]):
            return None
        return inspect_sealed(stdin).to_dict()
    with opened_input(source, sequential=False) as handle:
        if not is_sealed(handle.read(len(MAGIC))):
            if source.startswith("s3://"):
                raise InputError(f"{source}: not a sealed file (s3:// inputs are sealed files)")
            return None
        handle.seek(0)
        described = inspect_sealed(handle).to_dict()
        if jwks is not None:
            with SealedReader(handle, opening_keys(jwks, password)) as reader:
                described["plaintext_length"] = reader.length
                described["authenticated"] = True
        return described


def register(app: typer.Typer) -> None:
    """Add `seal` and `open` to a Typer app (the main CLI)."""
    app.command("seal")(seal_command)
    app.command("open")(open_command)
