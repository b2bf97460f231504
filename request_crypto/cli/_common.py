"""What every command module shares: one-line errors, JSON input and output, key sets.

The commands in `request_crypto.cli` (keys, encrypt, decrypt, inspect, seal, open, demo) and
`request_crypto.receiver.cli` (serve, send) all build on these, so the same mistake reads the
same in every command. The receiver's commands cannot import the app (`request_crypto.cli`
registers them: an import cycle), so what they share lives here.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shlex
import stat
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Annotated, Any, BinaryIO, Literal, NoReturn, TextIO

import typer

from .._files import file_kind
from .._json import loads_text
from ..errors import CLIError, RequestCryptoError
from ..formats import Format
from ..keyfile import is_private_set, read_jwks, require_private_keys
from ..keys.jwks import ENCRYPT_OPS, JWKManager, public_halves
from ..keys.pbes2 import PASSWORD_FILE_ENV, read_password_file
from ..keys.signing import DirectKeySet
from ..keys.source import KeySource
from ..keys.uri import is_key_source_uri, open_key_source, refuse_unknown_scheme
from ..keyset import KeySetFile, parse_key_set
from ..request import RequestEncryptor

__all__ = [
    "PASSWORD_FILE_ENV",
    "PROG",
    "STDOUT",
    "CLIError",
    "Input",
    "PasswordFile",
    "PrivateSet",
    "PrivateSource",
    "echo_json",
    "encrypt_document",
    "fail",
    "input_name",
    "is_direct_set",
    "is_uri",
    "json_bytes",
    "kid_list",
    "load_private",
    "load_set",
    "note",
    "one_line",
    "open_private",
    "output_stream",
    "password_of",
    "public_halves",
    "quoted",
    "read_input",
    "read_json_input",
    "reported",
    "require_kid",
    "sender_set",
    "shown",
    "warn",
    "with_keys",
]

PROG = "request-crypto"
_logger = logging.getLogger("request_crypto")


#: Arguments several commands take.
PrivateSet = Annotated[
    Path,
    typer.Option(
        "--jwks", metavar="PRIVATE_SET", help="The receiver's private key set.", show_default=False
    ),
]
PrivateSource = Annotated[
    str,
    typer.Option(
        "--jwks",
        metavar="PRIVATE_SET|URI",
        help="The receiver's private key set: a file, or a key-source URI (pkcs11:..., "
        "aws-kms:...; see docs/key-sources.md).",
        show_default=False,
    ),
]
PasswordFile = Annotated[
    Path | None,
    typer.Option(
        "--password-file",
        envvar=PASSWORD_FILE_ENV,
        metavar="FILE",
        help="The password of a key-set file encrypted at rest (written encrypted with it).",
        show_default=False,
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


def json_bytes(value: Any) -> bytes:
    """Indented JSON, UTF-8; escaped ASCII only if the value holds lone surrogates."""
    try:
        return json.dumps(value, indent=2, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value, indent=2).encode("ascii")


def echo_json(value: Any) -> None:
    """A command's JSON result, on stdout."""
    typer.echo(json_bytes(value))


# ---------------------------------------------------------------------------------------------
# Errors and warnings


def warn(message: str) -> None:
    """One `warning:` line on stderr (control characters escaped); the command goes on."""
    typer.echo(f"warning: {one_line(message)}", err=True)


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
        message = record.getMessage()
        if message not in self.shown:
            self.shown.add(message)
            warn(message)


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
        with warnings.catch_warnings():
            shown = warnings.showwarning

            def show(  # noqa: PLR0917 - warnings.showwarning's own signature
                message: Warning | str,
                category: type[Warning],
                filename: str,
                lineno: int,
                file: TextIO | None = None,
                line: str | None = None,
            ) -> None:
                if issubclass(category, RequestCryptoError):  # ours: one `warning:` line
                    handler.emit(logging.makeLogRecord({"msg": str(message)}))
                else:
                    shown(message, category, filename, lineno, file, line)

            warnings.showwarning = show
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


#: How much of an INPUT is read at a time: a bounded read holds at most the cap plus this.
READ_CHUNK = 1024 * 1024


def read_input(source: str, limit: int | None = None) -> bytes:
    """INPUT's bytes; with `limit`, refused once one byte past it is read (never read whole).

    A size cap that reads everything first bounds nothing: 300 MB piped into `decrypt` would
    cost 300 MB before the library refused it. Files and stdin are read the same way.
    """
    if source == "-":
        stdin = typer.get_binary_stream("stdin")
        if stdin.isatty():
            note("reading from stdin; end with Ctrl-D")
        return _read_capped(stdin, source, limit)
    try:
        with Path(source).open("rb") as handle:
            return _read_capped(handle, source, limit)
    except FileNotFoundError:
        raise CLIError(f"{source}: no such file; pass an existing file, or - for stdin") from None
    except IsADirectoryError:
        raise CLIError(f"{source}: is a directory; pass a file, or - for stdin") from None
    except OSError as exc:
        raise CLIError(f"{source}: cannot read it ({exc.strerror or exc})") from None


def _read_capped(stream: BinaryIO, source: str, limit: int | None) -> bytes:
    if limit is None:
        return stream.read()
    # Chunks joined once at the end: a growing buffer may be copied as it grows, which
    # measured up to twice the cap at the peak.
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = stream.read(min(READ_CHUNK, limit + 1 - size))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
    del chunks
    raise CLIError(
        f"{input_name(source)} holds more than {limit} bytes (--max-body); "
        "pass a larger --max-body if bodies this big are expected"
    )


def input_name(source: str) -> str:
    return "stdin" if source == "-" else source


def read_json_input(source: str, command: str) -> Any:
    """The one JSON document INPUT holds; a CLIError saying what is wrong with it otherwise."""
    data = read_input(source)
    name = input_name(source)
    try:
        # Decoded as json.loads(bytes) decodes (UTF-8, -16 or -32; a BOM allowed).
        return loads_text(data.decode(json.detect_encoding(data), "surrogatepass"))
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise CLIError(
            f"{name} is not valid JSON ({exc.msg} at {where}); {command} takes one JSON document"
        ) from None
    except UnicodeDecodeError:
        raise CLIError(f"{name} is not UTF-8 JSON; {command} takes one JSON document") from None
    except ValueError as exc:  # NaN, Infinity, 1e400 (json.loads would read them as floats)
        raise CLIError(
            f"{name} is not a JSON value ({exc}); {command} takes one JSON document"
        ) from None
    except RecursionError:
        raise CLIError(
            f"{name} is nested too deeply to parse; {command} takes one JSON document"
        ) from None


# ---------------------------------------------------------------------------------------------
# OUT: a file, a device, or - for stdout

#: What `-o -` parses to: standard output, as everywhere a command takes a file or `-`.
STDOUT = Path("-")
#: Opening a device or FIFO to write into it: never created, truncated, or reached by a link.
_INTO = os.O_WRONLY | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC


@contextlib.contextmanager
def output_stream(output: Path | None) -> Iterator[IO[bytes] | None]:
    """Where `-o OUT` writes: a stream to write into, or None for a file the caller replaces.

    Standard output for no OUT, ``-``, or a link to this process's stdout or stderr
    (``/dev/stdout``: that stream, whatever it is). A character device or FIFO named
    directly (``/dev/null``, a FIFO a reader waits on) is written into, as a shell
    redirection would, and never replaced: the old `keys public -o /dev/null` run by root
    renamed a regular file over /dev/null. None for a regular file, a new path or any other
    link: the caller writes it atomically with `keyfile.write_jwks`, which refuses links
    (naming the real file). A directory, socket or block device is refused.
    """
    if output is None or output == STDOUT:
        stream = typer.get_binary_stream("stdout")
        yield stream
        stream.flush()
        return
    try:
        info = os.lstat(output)
    except FileNotFoundError:
        yield None
        return
    except OSError as exc:
        raise CLIError(f"{output}: cannot write there ({exc.strerror})") from None
    if stat.S_ISLNK(info.st_mode):
        standard = _standard_stream(output)
        yield standard
        if standard is not None:
            standard.flush()
        return
    if stat.S_ISREG(info.st_mode):
        yield None
        return
    if not (stat.S_ISCHR(info.st_mode) or stat.S_ISFIFO(info.st_mode)):
        raise CLIError(
            f"{output} is {file_kind(info.st_mode)}; -o takes a file, a character device or "
            "FIFO to write into, or - for stdout"
        )
    try:
        # Non-blocking: a FIFO nobody reads would otherwise hold the command (root's, say)
        # forever in open(); with no reader it fails at once with ENXIO.
        fd = os.open(output, _INTO | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            raise CLIError(
                f"{output} is a FIFO that nobody reads; start its reader first"
            ) from None
        raise CLIError(f"{output}: cannot open it for writing ({exc.strerror})") from None
    os.set_blocking(fd, True)  # a reader exists: write as to any pipe
    with os.fdopen(fd, "wb") as stream:
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)):
            raise CLIError(f"{output} changed while it was opened; run the command again")
        yield stream


def _standard_stream(link: Path) -> IO[bytes] | None:
    """This process's stdout or stderr if the link leads to it (``/dev/stdout``), else None."""
    try:
        target = os.stat(link)
    except OSError:
        return None
    streams: tuple[tuple[int, Literal["stdout", "stderr"]], ...] = ((1, "stdout"), (2, "stderr"))
    for fd, name in streams:
        with contextlib.suppress(OSError):
            info = os.fstat(fd)
            if (info.st_dev, info.st_ino) == (target.st_dev, target.st_ino):
                return typer.get_binary_stream(name)
    return None


# ---------------------------------------------------------------------------------------------
# Key sets: loading with checks a person understands


def password_of(path: Path | None) -> bytes | None:
    """The password in `path` (--password-file / REQUEST_CRYPTO_PASSWORD_FILE), if given."""
    return None if path is None else read_password_file(path)


def is_uri(location: str | Path) -> bool:
    """Whether `location` names a key-source URI (pkcs11:, aws-kms:) rather than a file."""
    return is_key_source_uri(location)


def load_set(path: Path, *, private: bool = True, password: bytes | None = None) -> JWKManager:
    """The set at `path`; with `private=False` only its public halves (see `public_halves`)."""
    return KeySetFile(path, password=password).load(private=private)


def with_keys(path: Path, *, private: bool = True, password: bytes | None = None) -> JWKManager:
    return _not_empty(path, load_set(path, private=private, password=password))


def _not_empty(path: Path, manager: JWKManager) -> JWKManager:
    if not len(manager):
        raise CLIError(
            f"{path} holds no keys; add one with: {PROG} keys add {quoted(path)} --kid KID"
        )
    return manager


def is_direct_set(location: str | Path, password: bytes | None = None) -> bool:
    """Whether `location` is a file of `dir` secrets (`keys init --alg dir`): opened with
    `DirectKeySet`, not checked for private RSA keys."""
    return Path(location).is_file() and KeySetFile(location, password=password).kind() == "dir"


def load_private(path: Path, command: str, password: bytes | None = None) -> JWKManager:
    """A set that can decrypt: a public set here is the most likely operator mistake."""
    manager = with_keys(path, password=password)
    require_private_keys(manager, path, command)
    return manager


def open_private(location: str, command: str, password: bytes | None = None) -> KeySource:
    """The private keys `location` names: a key-source URI, else a key-set file (checked as
    `load_private` does)."""
    if is_uri(location):
        return open_key_source(location)
    refuse_unknown_scheme(location)
    return load_private(Path(location), command, password)


def require_kid(path: Path, manager: JWKManager, kid: str) -> None:
    if kid not in manager:
        raise CLIError(
            f"{path} has no key {shown(kid)}; its kids are {kid_list(manager.kids())} "
            f"(see: {PROG} keys list {quoted(path)})"
        )


def sender_set(path: Path) -> JWKManager:
    """The public halves of the set at `path`, with a warning if it holds private keys.

    Only the public halves are parsed and kept, but a sender host holding the private set
    is a mistake worth saying: whoever reads it there can decrypt every body.
    """
    document = read_jwks(path)
    if is_private_set(document):
        warn(
            f"{path} holds private keys; senders need only the public set "
            f"({PROG} keys public {quoted(path)}); only its public halves are used"
        )
    return _not_empty(path, parse_key_set(path, public_halves(document)))


def encrypt_document(
    path: Path,
    document: Any,
    kid: str | None,
    body_format: Format | None,
    signing: dict[str, Any] | None = None,
) -> tuple[str, str]:
    """Encrypt to `kid`, or to the newest (last) key of the set at `path` that may encrypt.

    `path` is the receiver's public RSA set, or a set of `dir` secrets; `signing` holds
    `RequestEncryptor`'s signing keywords (a signed body is always `jwe`).
    """
    signing = signing or {}
    if signing and body_format is Format.ELASTIC:
        raise CLIError(
            "--sign-with needs the jwe format: the elastic format (the JavaScript library's) "
            "has no signatures; drop --format elastic"
        )
    kind = KeySetFile(path).kind()
    if kind == "sig":
        raise CLIError(
            f"{path} is a signing set: encrypt to the receiver's set (--jwks) and sign with "
            "this one (--sign-with)"
        )
    if kind == "dir":
        secrets = DirectKeySet(read_jwks(path))
        kid = kid or (secrets.kids() or [""])[-1]
        if kid not in secrets:
            raise CLIError(
                f"{path} has no key {shown(kid)}; its kids are {kid_list(secrets.kids())}"
            )
        if body_format is Format.ELASTIC:
            raise CLIError(f"{path} holds dir secrets: they make jwe bodies; drop --format elastic")
        return kid, RequestEncryptor(secrets, format=body_format, **signing).encrypt(kid, document)
    manager = sender_set(path)
    if kid is None:
        usable = [kid for kid in manager.kids() if manager.can_encrypt(kid)]
        if not usable:
            raise CLIError(
                f"{path} has no key for encryption: every key's key_ops lack "
                f"{' and '.join(ENCRYPT_OPS)}"
            )
        kid = usable[-1]
    require_kid(path, manager, kid)
    return kid, RequestEncryptor(manager, format=body_format, **signing).encrypt(kid, document)
