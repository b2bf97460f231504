"""`request-crypto seal` and `open`: sealed files from the command line, and the entry point.

`register(app)` adds both commands to the main CLI (`request_crypto.cli`). `main()` is the
console script: for `seal` and `open` it runs them without importing the rest of the CLI,
because start-up is part of every file's time (~0.1 s saved, a fifth of a 1 GiB seal);
every other command goes to `request_crypto.cli`. Heavy imports stay inside the commands.
"""

# Imports inside functions are deliberate here: start-up time is part of every file's time.
# ruff: noqa: PLC0415

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

from .errors import InvalidArgumentError, RequestCryptoError

if TYPE_CHECKING:
    from .jwks import JWKManager

__all__ = ["COMMANDS", "describe_sealed", "main", "register"]

PROG = "request-crypto"
COMMANDS = ("seal", "open")
_STDIO = "-"


class InputError(RequestCryptoError, OSError):
    """The INPUT file cannot be read, or the output cannot be written."""


# ---------------------------------------------------------------------------------------------
# Arguments

Input = Annotated[
    str, typer.Argument(metavar="[INPUT|-]", help="A file, or - (the default) for stdin.")
]
Output = Annotated[
    str,
    typer.Option(
        "-o",
        "--output",
        metavar="OUTPUT|-",
        help="A file (written whole or not at all), or - (the default) for stdout.",
    ),
]
PublicSet = Annotated[
    Path,
    typer.Option(
        "--jwks", metavar="PUBLIC_SET", help="The recipients' key set.", show_default=False
    ),
]
PrivateSet = Annotated[
    Path,
    typer.Option(
        "--jwks", metavar="PRIVATE_SET", help="The receiver's private key set.", show_default=False
    ),
]
Kids = Annotated[
    list[str] | None,
    typer.Option(
        "--kid",
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
    jwks: PublicSet,
    source: Input = _STDIO,
    kid: Kids = None,
    output: Output = _STDIO,
    segment_size: SegmentSize = 64 * 1024,
) -> None:
    """Seal a file or stdin of any size to one or more recipients (constant memory)."""
    from .sealed import seal

    keys = _key_set(jwks)
    kids = list(dict.fromkeys(kid)) if kid else keys.kids()[-1:]
    missing = [k for k in kids if k not in keys]
    if not kids or missing:
        raise InvalidArgumentError(
            f"{jwks} has no key {', '.join(map(repr, missing or ['(any)']))}; its kids are "
            f"{', '.join(map(repr, keys.kids())) or '(none)'}"
        )
    recipients = [keys.get_public_jwk(k) or {} for k in kids]
    with _input(source) as src, _output(output, binary_to_terminal=False) as dst:
        seal(src, dst, recipients, segment_size=segment_size)


def open_command(jwks: PrivateSet, source: Input = _STDIO, output: Output = _STDIO) -> None:
    """Open a sealed file: every byte is written only after it was authenticated.

    To a file, the data goes to a temporary file next to it, renamed into place after the
    final segment authenticated; on any failure nothing is left behind. To stdout, a file
    cut short still fails (exit 1) after the authenticated part was written.
    """
    from .keyfile import require_private_keys
    from .sealed import open_sealed

    keys = _key_set(jwks)
    require_private_keys(keys, jwks, "open")
    with _input(source) as src, _output(output, binary_to_terminal=True) as dst:
        open_sealed(src, dst, keys)


def describe_sealed(source: str, jwks: Path | None = None) -> dict[str, Any] | None:
    """`inspect` of a sealed file: None if `source` is not one (it is then left unread).

    Without a key set, what the file says (unauthenticated); with one, the header and the
    final segment are authenticated first, and so is the length (files only: a stream is
    not read twice).
    """
    from .sealed import MAGIC, SealedReader, inspect_sealed, is_sealed

    if source == _STDIO:
        stdin = typer.get_binary_stream("stdin")
        peek = getattr(stdin, "peek", None)
        if peek is None or not is_sealed(peek(len(MAGIC))[: len(MAGIC)]):
            return None
        return inspect_sealed(stdin).to_dict()
    with _input(source) as handle:
        if not is_sealed(handle.read(len(MAGIC))):
            return None
        handle.seek(0)
        described = inspect_sealed(handle).to_dict()
        if jwks is not None:
            with SealedReader(handle, _key_set(jwks)) as reader:
                described["plaintext_length"] = reader.length
                described["authenticated"] = True
        return described


def register(app: typer.Typer) -> None:
    """Add `seal` and `open` to a Typer app (the main CLI, or `main`'s own)."""
    app.command("seal")(seal_command)
    app.command("open")(open_command)


# ---------------------------------------------------------------------------------------------
# Files and key sets


def _key_set(path: Path) -> JWKManager:
    from .errors import InvalidJWKSError
    from .jwks import JWKManager
    from .keyfile import read_jwks

    try:
        return JWKManager(read_jwks(path))
    except InvalidJWKSError as exc:
        raise InvalidJWKSError(f"{path}: {exc}") from None


@contextlib.contextmanager
def _input(source: str) -> Iterator[IO[bytes]]:
    if source == _STDIO:
        stdin = typer.get_binary_stream("stdin")
        try:
            fd = stdin.fileno()
        except (OSError, ValueError):  # a test runner's in-memory stdin
            yield stdin
            return
        # Unbuffered: the sealed layer reads ~1 MiB at a time into its own buffers.
        with open(fd, "rb", buffering=0, closefd=False) as raw:
            yield raw
        return
    try:
        handle = open(source, "rb", buffering=0)  # noqa: SIM115 - closed below
    except FileNotFoundError:
        raise InputError(f"{source}: no such file; pass an existing file, or - for stdin") from None
    except OSError as exc:
        raise InputError(f"{source}: cannot read it ({exc.strerror or exc})") from None
    with handle:
        yield handle


@contextlib.contextmanager
def _output(output: str, *, binary_to_terminal: bool) -> Iterator[Any]:
    """stdout (`-`), refusing to put sealed bytes on a terminal; else the path, as given."""
    if output != _STDIO:
        yield output
        return
    stdout = typer.get_binary_stream("stdout")
    if not binary_to_terminal and stdout.isatty():
        raise InvalidArgumentError(
            "refusing to write a sealed file to a terminal; redirect it or pass -o FILE"
        )
    try:
        yield stdout
        stdout.flush()
    except BrokenPipeError:
        # The reader went away: say so once, and keep Python from complaining again at exit.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise InputError("stdout was closed before all the data was written") from None


# ---------------------------------------------------------------------------------------------
# Entry point


class _Commands(TyperGroup):
    """`main`'s own group: a library error is one `error:` line and exit code 1."""

    def invoke(self, ctx: Any) -> Any:  # Any: typer's Context base is in its private click
        try:
            return super().invoke(ctx)
        except RequestCryptoError as exc:
            from ._cli_common import fail  # only on this path: it imports the whole library

            fail(str(exc))


def main() -> None:
    """The `request-crypto` console script."""
    if len(sys.argv) > 1 and sys.argv[1] in COMMANDS:
        logging.basicConfig(format="warning: %(message)s", level=logging.WARNING)
        app = typer.Typer(
            cls=_Commands,
            name=PROG,
            pretty_exceptions_show_locals=False,
            context_settings={"help_option_names": ["-h", "--help"]},
        )
        register(app)
        app(prog_name=PROG)
        return
    from .cli import main as everything

    everything()
