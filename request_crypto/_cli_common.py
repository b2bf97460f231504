"""What both command-line modules share: one-line errors, JSON input, key sets, encrypting.

`request_crypto.cli` (keys, encrypt, decrypt, inspect, demo) and `request_crypto.receiver.cli`
(serve, send) both build on these, so the same mistake reads the same in every command. The
receiver's commands cannot import `cli` itself: `cli` registers them, an import cycle.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shlex
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from .envelope import Format
from .errors import InvalidJWKSError, RequestCryptoError
from .jwks import PUBLIC_MEMBERS, JWKManager
from .keyfile import read_jwks, require_private_keys
from .request import RequestEncryptor

__all__ = [
    "PROG",
    "CLIError",
    "Input",
    "PrivateSet",
    "encrypt_document",
    "fail",
    "input_name",
    "kid_list",
    "load_private",
    "load_set",
    "note",
    "one_line",
    "parse_set",
    "public_halves",
    "quoted",
    "read_input",
    "read_json_input",
    "reported",
    "require_kid",
    "shown",
    "with_keys",
]

PROG = "request-crypto"
_logger = logging.getLogger("request_crypto")


class CLIError(RequestCryptoError):
    """A problem with what the command line was given (an INPUT, a kid, a path)."""


#: Arguments several commands take.
PrivateSet = Annotated[
    Path,
    typer.Option(
        "--jwks", metavar="PRIVATE_SET", help="The receiver's private key set.", show_default=False
    ),
]
Input = Annotated[
    str,
    typer.Argument(metavar="[INPUT|-]", help="A file, or - (the default) for stdin."),
]


# ---------------------------------------------------------------------------------------------
# Text for a person


def one_line(text: str) -> str:
    """Escape control characters: messages can quote a body's kid, which anyone can choose."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def shown(value: object) -> str:
    return one_line(repr(value))


def quoted(path: Path | str) -> str:
    return shlex.quote(str(path))


def kid_list(kids: Sequence[str]) -> str:
    return ", ".join(shown(kid) for kid in kids) or "(none)"


def note(message: str) -> None:
    typer.echo(message, err=True)


# ---------------------------------------------------------------------------------------------
# Errors and warnings


def fail(message: str) -> NoReturn:
    """One `error:` line on stderr (control characters escaped), then exit code 1."""
    typer.echo(f"error: {one_line(message)}", err=True)
    raise typer.Exit(1) from None


class _StderrHandler(logging.Handler):
    """Library warnings (a private set readable by others) as one `warning:` line each.

    A command that reads a file twice (check, then locked update) still warns once.
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.shown: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        message = one_line(record.getMessage())
        if message not in self.shown:
            self.shown.add(message)
            typer.echo(f"warning: {message}", err=True)


@contextlib.contextmanager
def _warnings_on_stderr() -> Iterator[None]:
    """Show the library's warnings exactly once, and only while a command runs.

    Not propagating keeps a host's root handlers from printing them a second time; undoing it
    afterwards keeps the CLI from changing logging for code that imports it (tests, services).
    Nested (a receiver command run by the main CLI), the outer handler is the only one.
    """
    if any(isinstance(handler, _StderrHandler) for handler in _logger.handlers):
        yield
        return
    handler = _StderrHandler()
    propagate = _logger.propagate
    _logger.addHandler(handler)
    _logger.propagate = False
    try:
        yield
    finally:
        _logger.removeHandler(handler)
        _logger.propagate = propagate


@contextlib.contextmanager
def reported() -> Iterator[None]:
    """Run a command: warnings once each on stderr, a RequestCryptoError as `fail(...)`.

    Only RequestCryptoError: anything else is a bug and keeps its traceback. No message of
    the library carries key material, so the one line never shows any.
    """
    with _warnings_on_stderr():
        try:
            yield
        except RequestCryptoError as exc:
            fail(str(exc))


# ---------------------------------------------------------------------------------------------
# INPUT: a file, or - for stdin


def read_input(source: str) -> bytes:
    if source == "-":
        stdin = typer.get_binary_stream("stdin")
        if stdin.isatty():
            note("reading from stdin; end with Ctrl-D")
        return stdin.read()
    try:
        return Path(source).read_bytes()
    except FileNotFoundError:
        raise CLIError(f"{source}: no such file; pass an existing file, or - for stdin") from None
    except OSError as exc:
        raise CLIError(f"{source}: cannot read it ({exc.strerror or exc})") from None


def input_name(source: str) -> str:
    return "stdin" if source == "-" else source


def read_json_input(source: str, command: str) -> Any:
    """The one JSON document INPUT holds; a CLIError saying what is wrong with it otherwise."""
    data = read_input(source)
    name = input_name(source)
    try:
        return json.loads(data)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise CLIError(
            f"{name} is not valid JSON ({exc.msg} at {where}); {command} takes one JSON document"
        ) from None
    except RecursionError:
        raise CLIError(
            f"{name} is nested too deeply to parse; {command} takes one JSON document"
        ) from None
    except ValueError:
        raise CLIError(f"{name} is not UTF-8 JSON; {command} takes one JSON document") from None


# ---------------------------------------------------------------------------------------------
# Key sets: loading with checks a person understands


def load_set(path: Path, *, private: bool = True) -> JWKManager:
    """The set at `path`; with `private=False` only its public halves (see `public_halves`)."""
    document = read_jwks(path)
    return parse_set(path, document if private else public_halves(document))


def public_halves(document: dict[str, Any]) -> dict[str, Any]:
    """The set without private members: enough to check its shape and kids, or to encrypt.

    Building an RSA private key validates it, ~20-50 ms each: a command that neither decrypts
    nor lists should not pay that for every key, least of all while it holds the file's lock.
    """
    return {
        "keys": [
            {m: jwk[m] for m in PUBLIC_MEMBERS if m in jwk} if isinstance(jwk, dict) else jwk
            for jwk in document["keys"]
        ]
    }


def parse_set(path: Path, document: dict[str, Any]) -> JWKManager:
    """Validate a key set; errors name the file."""
    try:
        return JWKManager(document)
    except InvalidJWKSError as exc:
        raise InvalidJWKSError(f"{path}: {exc}") from None


def with_keys(path: Path, *, private: bool = True) -> JWKManager:
    manager = load_set(path, private=private)
    if not len(manager):
        raise CLIError(
            f"{path} holds no keys; add one with: {PROG} keys add {quoted(path)} --kid KID"
        )
    return manager


def load_private(path: Path, command: str) -> JWKManager:
    """A set that can decrypt: a public set here is the most likely operator mistake."""
    manager = with_keys(path)
    require_private_keys(manager, path, command)
    return manager


def require_kid(path: Path, manager: JWKManager, kid: str) -> None:
    if kid not in manager:
        raise CLIError(
            f"{path} has no key {shown(kid)}; its kids are {kid_list(manager.kids())} "
            f"(see: {PROG} keys list {quoted(path)})"
        )


def encrypt_document(
    path: Path, document: Any, kid: str | None, body_format: Format
) -> tuple[str, str]:
    """Encrypt to `kid`, or to the newest (last) key of the set at `path`; (kid, body)."""
    manager = with_keys(path, private=False)
    kid = manager.kids()[-1] if kid is None else kid
    require_kid(path, manager, kid)
    return kid, RequestEncryptor(manager, format=body_format).encrypt(kid, document)
