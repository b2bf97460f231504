"""What `seal` and `open` do, without Typer; and the console script's entry point.

`main()` runs a well-formed `request-crypto seal ...` or `open ...` straight from `sys.argv`,
without Typer: on this machine Typer's option handling alone imports pydantic and costs
0.1-0.4 s, a fifth to a half of a whole 1 GiB seal. Anything else (any other command,
`--help`, an unknown or malformed option) goes to the full Typer CLI, which owns help and
usage errors; `sealed` declares the same options for it and calls the same functions.

INPUT and OUTPUT may be `s3://BUCKET/KEY` (`request_crypto.s3`), a recipient `aws-kms:...`
(`keys.aws_kms_data_key`), and the opening key any key source (`keys.uri.open_sealed_keys`:
a key-set file, plain or encrypted at rest, `pkcs11:...`, `aws-kms:...`): boto3 and
python-pkcs11 are imported only for those.
"""

# Imports inside functions are deliberate here: start-up time is part of every file's time.
# ruff: noqa: PLC0415

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ..errors import InputError, InvalidArgumentError, RequestCryptoError

if TYPE_CHECKING:
    from ..keys.jwks import JWKManager

__all__ = [
    "COMMANDS",
    "DEFAULT_SEGMENT_SIZE",
    "STDIO",
    "InputError",
    "key_set",
    "main",
    "open_files",
    "opened_input",
    "opening_keys",
    "seal_files",
    "sealed_files",
]

COMMANDS = ("seal", "open")
STDIO = "-"
DEFAULT_SEGMENT_SIZE = 64 * 1024


def seal_files(
    jwks: Path | None,
    source: str,
    kids: Sequence[str],
    output: str,
    segment_size: int,
    *,
    recipients: Sequence[str] = (),
) -> None:
    """Seal `source` (a path, s3:// or -) to `kids` of the set at `jwks` (default: its newest
    key) and to a KMS key named `aws-kms:...` in `recipients`."""
    from ..sealed import seal

    kms = None
    if recipients:
        kms = _data_key(recipients)
    if jwks is None and (kids or kms is None):
        raise InvalidArgumentError("seal needs --jwks PUBLIC_SET, or --recipient aws-kms:KEY")
    public = [] if jwks is None else _public_keys(jwks, kids)
    with opened_input(source) as src, _output(output, binary_to_terminal=False) as dst:
        seal(src, dst, public, segment_size=segment_size, kms=kms)


def _public_keys(jwks: Path, kids: Sequence[str]) -> list[dict[str, Any]]:
    keys = key_set(jwks)
    chosen = list(dict.fromkeys(kids)) if kids else keys.kids()[-1:]
    missing = [kid for kid in chosen if kid not in keys]
    if not chosen or missing:
        raise InvalidArgumentError(
            f"{jwks} has no key {', '.join(map(repr, missing or ['(any)']))}; its kids are "
            f"{', '.join(map(repr, keys.kids())) or '(none)'}"
        )
    return [keys.get_public_jwk(kid) or {} for kid in chosen]


def _data_key(recipients: Sequence[str]) -> Any:
    """The one `aws-kms:` --recipient as a KMS data-key source."""
    from ..keys.uri import open_data_key

    kms = open_data_key(recipients[0]) if len(recipients) == 1 else None
    if kms is None:
        raise InvalidArgumentError(
            "--recipient takes one aws-kms:ARN-OR-alias/NAME (RSA recipients are --kid of "
            f"--jwks), not {', '.join(map(repr, recipients))}"
        )
    return kms


def open_files(
    jwks: Path | str, source: str, output: str, *, password: bytes | None = None
) -> None:
    """Open `source` (a path, s3://, a directory of sealed files, or -) with the key source
    `jwks` names (see `opening_keys`) into `output`.

    A directory (the receiver's sealed archive) gives every ``*.sealed`` file in it, in name
    order, one after the other; to a file, the output appears once the last one is open.
    """
    from .._atomic import atomic_output
    from ..sealed import open_sealed

    keys = opening_keys(jwks, password)
    if source != STDIO and not source.startswith("s3://") and os.path.isdir(source):
        files = sealed_files(source)
        with _output(output, binary_to_terminal=True) as given, contextlib.ExitStack() as stack:
            dst = stack.enter_context(atomic_output(given)) if isinstance(given, str) else given
            for path in files:
                with opened_input(str(path)) as src:
                    open_sealed(src, dst, keys)
        return
    with opened_input(source) as src, _output(output, binary_to_terminal=True) as dst:
        open_sealed(src, dst, keys)


def opening_keys(jwks: Path | str, password: bytes | None = None) -> Any:
    """What opens a sealed file: any key source `jwks` names (a private set file, plain or
    encrypted at rest with `password`; `pkcs11:...`; an RSA key `aws-kms:...`), or the
    symmetric KMS key of an aws-kms recipient (`keys.uri.open_sealed_keys`)."""
    from ..keyfile import require_private_keys
    from ..keys.jwks import JWKManager
    from ..keys.uri import open_sealed_keys

    with _naming(jwks):
        keys = open_sealed_keys(jwks, password=password)
    if isinstance(keys, JWKManager):
        require_private_keys(keys, Path(jwks), "open")
    return keys


def sealed_files(directory: str) -> list[Path]:
    """A directory's ``*.sealed`` files in name order; hidden (temporary) files left out."""
    try:
        names = sorted(os.listdir(directory))
    except OSError as exc:
        raise InputError(f"{directory}: cannot list it ({exc.strerror or exc})") from None
    files = [Path(directory, n) for n in names if n.endswith(".sealed") and not n.startswith(".")]
    if not files:
        raise InputError(
            f"{directory} holds no .sealed file; pass a sealed file or an archive directory"
        )
    return files


def key_set(path: Path) -> JWKManager:
    """The key set at `path`; errors name the file."""
    from ..keyfile import read_jwks
    from ..keys.jwks import JWKManager

    with _naming(path):
        return JWKManager(read_jwks(path))


@contextlib.contextmanager
def _naming(location: Path | str) -> Iterator[None]:
    """An InvalidJWKSError raised inside names `location` (a URI without its PIN), once."""
    from ..errors import InvalidJWKSError

    try:
        yield
    except InvalidJWKSError as exc:
        from ..keys.uri import shown_location  # not before it is needed: it loads every source

        where, message = shown_location(location), str(exc)
        named = message if message.startswith(where) else f"{where}: {message}"
        raise InvalidJWKSError(named) from None


@contextlib.contextmanager
def opened_input(source: str, *, sequential: bool = True) -> Iterator[IO[bytes]]:
    """INPUT opened for reading: the file, an S3 object, or stdin for `-` (unbuffered).

    An S3 object read `sequential`ly (seal, open) is one streaming GET; else (inspect) small
    ranged GETs, as a SealedReader seeks.
    """
    if source.startswith("s3://"):
        from ..s3 import DEFAULT_READ_AHEAD, MAX_READ_AHEAD, S3ObjectReader

        read_ahead = MAX_READ_AHEAD if sequential else DEFAULT_READ_AHEAD
        with S3ObjectReader(source, read_ahead=read_ahead) as reader:
            yield reader  # type: ignore[misc]
        return
    if source == STDIO:
        stdin = sys.stdin.buffer
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
    if output.startswith("s3://"):
        from ..s3 import s3_upload

        with s3_upload(output) as upload:
            yield upload
        return
    if output != STDIO:
        yield output
        return
    stdout = sys.stdout.buffer
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

_VALUED = {
    "--jwks": "jwks",
    "--password-file": "password_file",
    "--kid": "kid",
    "--recipient": "recipient",
    "-o": "output",
    "--output": "output",
}


def _plain_arguments(argv: Sequence[str]) -> dict[str, Any] | None:
    """`seal`/`open` arguments when they are plainly well formed, else None (Typer's turn).

    None for anything unusual: `--help`, an unknown option, a value given twice or empty,
    `--kid` or `--segment-size` on `open`, `--password-file` on `seal`, no `--jwks`. Typer
    then parses the same line and answers with its help or usage error.
    """
    if not argv or argv[0] not in COMMANDS:
        return None
    found: dict[str, Any] = {
        "command": argv[0],
        "kid": [],
        "recipient": [],
        "output": STDIO,
        "source": None,
    }
    sealing = argv[0] == "seal"
    segment_size = str(DEFAULT_SEGMENT_SIZE)
    rest = list(argv[1:])
    plain = True
    while rest and plain:
        word = rest.pop(0)
        name, equals, value = word.partition("=") if word.startswith("--") else (word, "", "")
        if name in (*_VALUED, "--segment-size") and (value if equals else rest):
            value = value if equals else rest.pop(0)
            if name == "--segment-size":
                plain = sealing and value.isdigit()
                segment_size = value
            elif name in ("--kid", "--recipient"):
                plain = sealing
                found[_VALUED[name]].append(value)
            elif name == "--password-file":
                plain = not sealing and "password_file" not in found
                found[_VALUED[name]] = value
            else:
                plain = found.get(_VALUED[name], STDIO) == STDIO  # not given twice
                found[_VALUED[name]] = value
        else:
            plain = (word == STDIO or not word.startswith("-")) and found["source"] is None
            found["source"] = word
    if not plain or ("jwks" not in found and not found["recipient"]):
        return None
    found["segment_size"] = int(segment_size)
    found["source"] = found["source"] or STDIO
    return found


def _password(path: str | None) -> bytes | None:
    """The password of `--password-file`, else of the file REQUEST_CRYPTO_PASSWORD_FILE
    names (as the Typer option reads it), else None."""
    from ..keys.pbes2 import PASSWORD_FILE_ENV, read_password_file

    path = path or os.environ.get(PASSWORD_FILE_ENV) or None
    return None if path is None else read_password_file(path)


def main() -> None:
    """The `request-crypto` console script."""
    arguments = _plain_arguments(sys.argv[1:])
    if arguments is None:
        from ._app import main as typer_main

        typer_main()
        return
    import logging

    logging.basicConfig(format="warning: %(message)s", level=logging.WARNING)
    try:
        if arguments["command"] == "seal":
            jwks = arguments.get("jwks")
            seal_files(
                None if jwks is None else Path(jwks),
                arguments["source"],
                arguments["kid"],
                arguments["output"],
                arguments["segment_size"],
                recipients=arguments["recipient"],
            )
        else:
            open_files(
                arguments["jwks"],
                arguments["source"],
                arguments["output"],
                password=_password(arguments.get("password_file")),
            )
    except RequestCryptoError as exc:
        from ._common import one_line  # only on this path: it imports the whole library

        print(f"error: {one_line(str(exc))}", file=sys.stderr)
        sys.exit(1)
