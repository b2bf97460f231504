"""`request-crypto`: key sets for operators, bodies for debugging, and a guided demo.

Commands are thin: they parse options, call the library and `keyfile`, and print. Results go
to stdout (exact, for scripts); notes, warnings and errors go to stderr (for the person).
Every RequestCryptoError becomes one `error:` line and exit code 1 in one place
(`_Group.invoke`, through `_cli_common.reported`), so no command can show a traceback, or the
key material a traceback's locals could hold. No command prints private key parameters.
What `serve` and `send` share with these commands (input, key sets, errors) is in `_cli_common`.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import shlex
import tempfile
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from typer.core import TyperGroup

from . import __version__
from ._cli_common import (
    PROG,
    STDOUT,
    CLIError,
    Input,
    PrivateSet,
    encrypt_document,
    input_name,
    kid_list,
    load_private,
    load_set,
    note,
    one_line,
    output_stream,
    quoted,
    read_input,
    read_json_input,
    reported,
    require_kid,
    shown,
)
from ._cli_sealed import describe_sealed
from ._cli_sealed import register as register_sealed_commands
from .errors import DecryptionError, MalformedBodyError, NoKeyFoundError
from .formats import Format, detect_format
from .keys.jwks import DECRYPT_OPS, JWKManager
from .keyset import KeySetFile
from .kids import DEFAULT_KID_PREFIX, kid_prefix, next_kid
from .limits import DEFAULT_MAX_BODY_SIZE
from .request import RequestDecryptor

__all__ = ["DEFAULT_KID_PREFIX", "CLIError", "app", "kid_prefix", "main", "next_kid"]


class _Group(TyperGroup):
    """The root command group: turns library errors into one line and exit code 1."""

    def invoke(self, ctx: Any) -> Any:  # Any: typer's Context base is in its private click
        with reported():
            return super().invoke(ctx)


def _json_bytes(value: Any) -> bytes:
    """Indented JSON, UTF-8; escaped ASCII only if the value holds lone surrogates."""
    try:
        return json.dumps(value, indent=2, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value, indent=2).encode("ascii")


def _echo_json(value: Any) -> None:
    typer.echo(_json_bytes(value))


app = typer.Typer(
    cls=_Group,
    name=PROG,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
keys_app = typer.Typer(
    help="Create, rotate, list and publish key sets.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(keys_app, name="keys")


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"{PROG} {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """Hybrid RSA/AES request encryption with JWK key sets.

    Byte-compatible with @elastic/request-crypto 2.x. New here? Run: request-crypto demo
    """


# ---------------------------------------------------------------------------------------------
# Options shared by several commands

KeySetPath = Annotated[
    Path, typer.Argument(metavar="PATH", help="The key-set file.", show_default=False)
]
Kid = Annotated[str, typer.Option("--kid", help="The key id.", show_default=False)]
KeySize = Annotated[Literal[2048, 3072, 4096], typer.Option("--size", help="RSA modulus bits.")]
Alg = Annotated[
    Literal["RSA-OAEP", "RSA-OAEP-256"],
    typer.Option("--alg", help="Key management algorithm (the JavaScript library uses RSA-OAEP)."),
]
MaxBody = Annotated[
    int,
    typer.Option(
        "--max-body",
        min=1,
        metavar="BYTES",
        help="Refuse a body over this size; reading stops one byte past it.",
    ),
]


# ---------------------------------------------------------------------------------------------
# What the commands do, as functions `demo` can call too


def _utc_today() -> date:
    return datetime.now(timezone.utc).date()


def _require_file(path: Path) -> KeySetFile:
    """The key set at `path`, which must exist: a missing one is most likely a typo."""
    if not path.exists():
        raise CLIError(
            f"{path}: no such key-set file; create it with: "
            f"{PROG} keys init {quoted(path)} --kid KID"
        )
    return KeySetFile(path)


def _init_set(path: Path, kid: str, size: int, alg: str, force: bool) -> None:
    if path.exists() and not force:  # the library checks again under the lock
        raise CLIError(
            f"{path} already exists; pass --force to replace it (its keys are then lost, "
            "and bodies encrypted to them can no longer be decrypted)"
        )
    KeySetFile.init(path, kid, size=size, alg=alg, force=force)


def _key_rows(manager: JWKManager) -> list[dict[str, Any]]:
    """What `keys list` shows; never a private parameter."""
    kids = manager.kids()
    rows = []
    for kid in kids:
        meta = manager.key_metadata(kid)
        assert meta is not None
        rows.append(
            {
                "kid": kid,
                "kty": meta["kty"],
                "alg": meta["alg"],
                "use": meta["use"],
                "size": meta["length"],
                "private": manager.has_private_key(kid),
                "thumbprint": manager.thumbprint(kid),
                "newest": kid == kids[-1],
            }
        )
    return rows


def _table(rows: list[dict[str, Any]]) -> str:
    def cell(row: dict[str, Any], column: str) -> str:
        value = row[column]
        if isinstance(value, bool):
            return ("yes" if value else "no") if column == "private" else ("*" if value else "")
        return one_line(str(value))

    columns = ["kid", "kty", "alg", "use", "size", "private", "thumbprint", "newest"]
    cells = [[column.upper() for column in columns]]
    cells += [[cell(row, column) for column in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return "\n".join(
        "  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)).rstrip()
        for line in cells
    )


@contextlib.contextmanager
def _explained(path: Path, manager: JWKManager) -> Iterator[None]:
    """Say what a body failure most likely means for this operator, and what to try."""
    try:
        yield
    except NoKeyFoundError as exc:
        wanted = "names no kid" if exc.kid is None else f"is for kid {shown(exc.kid)}"
        if (
            exc.kid is not None
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


def _decrypt(path: Path, body: bytes, max_body: int = DEFAULT_MAX_BODY_SIZE) -> Any:
    manager = load_private(path, "decrypt")
    with _explained(path, manager):
        return RequestDecryptor(manager, max_body_size=max_body).decrypt(body)


def _inspect(path: Path, body: bytes, max_body: int = DEFAULT_MAX_BODY_SIZE) -> dict[str, Any]:
    """The body's key and format, once the whole body decrypted (its payload is discarded)."""
    manager = load_private(path, "inspect")
    with _explained(path, manager):
        metadata = RequestDecryptor(manager, max_body_size=max_body).get_jwk_metadata(body)
        return {"format": detect_format(body).value, **metadata.to_dict()}


# ---------------------------------------------------------------------------------------------
# INPUT


def _read_body(source: str, max_body: int) -> bytes:
    body = read_input(source, max_body).strip()
    if not body:
        raise CLIError(f"{input_name(source)} is empty; pass the body the sender sent")
    return body


# ---------------------------------------------------------------------------------------------
# keys ...


@keys_app.command("init")
def keys_init(
    path: KeySetPath,
    kid: Kid,
    size: KeySize = 2048,
    alg: Alg = "RSA-OAEP",
    force: Annotated[bool, typer.Option("--force", help="Replace an existing file.")] = False,
) -> None:
    """Create a private key set holding one new key (mode 0600)."""
    _init_set(path, kid, size, alg, force)
    note(f"created {path} (mode 0600) with key {shown(kid)}; keep it on receivers only")
    note(f"publish its public half with: {PROG} keys public {quoted(path)} -o public_jwks.json")


@keys_app.command("add")
def keys_add(path: KeySetPath, kid: Kid, size: KeySize = 2048, alg: Alg = "RSA-OAEP") -> None:
    """Add a new key under a new kid; it becomes the newest."""
    _require_file(path).add(kid, size=size, alg=alg)
    note(f"added key {shown(kid)} to {path}; it is now the newest")


@keys_app.command("rotate")
def keys_rotate(
    path: KeySetPath,
    kid: Annotated[
        str | None,
        typer.Option(
            "--kid",
            help="The new key's id (default: common prefix + UTC date).",
            show_default=False,
        ),
    ] = None,
    size: KeySize = 2048,
    alg: Alg = "RSA-OAEP",
) -> None:
    """Add a new newest key and print its kid. Older keys stay, so old bodies still decrypt."""
    new_kid = _require_file(path).rotate(kid=kid, size=size, alg=alg, today=_utc_today())
    typer.echo(new_kid)
    note(
        f"added {shown(new_kid)} to {path}. Next: deploy it to every receiver, then ship "
        f"`{PROG} keys public {quoted(path)}` to senders; remove old keys only once no sender "
        "uses them"
    )


@keys_app.command("list")
def keys_list(
    path: KeySetPath,
    as_json: Annotated[bool, typer.Option("--json", help="A JSON array, for scripts.")] = False,
) -> None:
    """Show each key: kid, kty, alg, use, size, private part, RFC 7638 thumbprint, newest."""
    rows = _key_rows(load_set(path))
    if as_json:
        _echo_json(rows)
    elif rows:
        typer.echo(_table(rows))
    else:
        note(f"{path} holds no keys; add one with: {PROG} keys add {quoted(path)} --kid KID")


@keys_app.command("public")
def keys_public(
    path: KeySetPath,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            metavar="OUT",
            help="Write here (a file: mode 0644, replaced atomically; a device or FIFO: written "
            "into) instead of stdout; - is stdout.",
        ),
    ] = None,
) -> None:
    """Write the public set senders ship: only `kty kid use alg e n` per key."""
    with output_stream(output) as stream:
        public = KeySetFile(path).publish(output if stream is None else None)
        if stream is not None:
            stream.write(_json_bytes(public) + b"\n")
    if output is not None and output != STDOUT:
        kids = [jwk["kid"] for jwk in public["keys"]]
        note(f"wrote the public set ({kid_list(kids)}) to {output}; ship it to senders")


def _confirm(question: str, *, refused: str) -> None:
    """Ask on stderr; without a terminal, the answer is read from stdin if it holds one.

    Nothing to read (stdin at its end, e.g. `< /dev/null` or a cron job) is an error naming
    the option that skips the question, rather than click's bare "Aborted!".
    """
    stdin = typer.get_text_stream("stdin")
    if stdin.isatty():
        typer.confirm(question, abort=True, err=True)
        return
    note(f"{question} [y/N]: ")
    answer = stdin.readline()
    if not answer:
        raise CLIError(f"no terminal to confirm on and no answer on stdin; {refused}")
    if answer.strip().lower() not in ("y", "yes"):
        raise typer.Abort()


@keys_app.command("remove")
def keys_remove(
    path: KeySetPath,
    kid: Kid,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Remove a key. Bodies encrypted to it can no longer be decrypted with this set."""
    require_kid(path, load_set(path, private=False), kid)
    if not yes:
        _confirm(
            f"Remove key {shown(kid)} from {path}? Bodies encrypted to it can no longer be "
            "decrypted with this set",
            refused=f"pass --yes to remove {shown(kid)} without asking",
        )
    left = KeySetFile(path).remove(kid)
    newest = f"the newest is now {shown(left[-1])}" if left else "the set is now empty"
    note(
        f"removed {shown(kid)} from {path}: bodies encrypted to it can no longer be "
        f"decrypted with this set; {newest}"
    )


# ---------------------------------------------------------------------------------------------
# Bodies


@app.command()
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


@app.command()
def decrypt(
    jwks: PrivateSet, source: Input = "-", max_body: MaxBody = DEFAULT_MAX_BODY_SIZE
) -> None:
    """Decrypt a body (either format) and write its JSON payload to stdout."""
    _echo_json(_decrypt(jwks, _read_body(source, max_body), max_body))


@app.command()
def inspect(
    jwks: Annotated[
        Path | None,
        typer.Option(
            "--jwks",
            metavar="PRIVATE_SET",
            help="The receiver's private key set (optional for a sealed file).",
            show_default=False,
        ),
    ] = None,
    source: Input = "-",
    max_body: MaxBody = DEFAULT_MAX_BODY_SIZE,
) -> None:
    """Show which key a body is for (JWK metadata) and its format.

    The whole body is decrypted first (the payload is discarded), so a body altered anywhere
    fails here as it would in decrypt. For a sealed file: its recipients' kids, segment size
    and plaintext length, with no key (unauthenticated), or authenticated with --jwks.
    """
    sealed = describe_sealed(source, jwks)
    if sealed is not None:
        _echo_json(sealed)
        return
    if jwks is None:  # a usage error (exit 2), as when --jwks was required
        raise typer.BadParameter(
            "a request body needs the private key set (a sealed file needs none)",
            param_hint="'--jwks'",
        )
    _echo_json(_inspect(jwks, _read_body(source, max_body), max_body))


# ---------------------------------------------------------------------------------------------
# demo

DEMO_PAYLOAD: dict[str, Any] = {
    "cluster_uuid": "5b2de169-2785-441b",
    "version": "8.15.0",
    "usage": {"dashboards": 12, "spaces": 2},
}


class _Demo:
    """Prints each step the way a newcomer would type it, and runs it for real."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.step = 0

    def title(self, text: str) -> None:
        self.step += 1
        typer.echo("")
        typer.secho(f"{self.step}. {text}", bold=True)

    def command(self, *args: str, redirect: str = "") -> None:
        line = " ".join([PROG, *map(shlex.quote, args)])
        self.shell(f"{line}{f' > {redirect}' if redirect else ''}")

    @staticmethod
    def shell(line: str) -> None:
        """One shell line, exactly as the demo runs it in its directory: copy-pasteable."""
        typer.secho(f"   $ {line}", fg=typer.colors.CYAN)

    def write(self, name: str, text: str) -> None:
        """Create a file the way the command shown (`echo TEXT > NAME`) would."""
        self.shell(f"echo {shlex.quote(text)} > {name}")
        self.path(name).write_text(text + "\n")

    def say(self, text: str) -> None:
        for line in text.splitlines():
            typer.echo(f"     {line}")

    def path(self, name: str) -> Path:
        return self.directory / name

    def save(self, name: str, body: str) -> str:
        """Keep the body where the command shown would have put it."""
        self.path(name).write_text(body + "\n")
        return body

    @staticmethod
    def mode(path: Path) -> str:
        return f"{path.stat().st_mode & 0o777:04o}"


def _run_demo(demo: _Demo) -> None:
    private, public, payload = (
        demo.path("private_jwks.json"),
        demo.path("public_jwks.json"),
        demo.path("payload.json"),
    )
    old_kid = f"telemetry-{_utc_today() - timedelta(days=30)}"
    demo.shell('cd "$(mktemp -d)"')

    demo.title("Receiver: make a private key set (one RSA-2048 key)")
    demo.command("keys", "init", private.name, "--kid", old_kid)
    _init_set(private, old_kid, 2048, "RSA-OAEP", force=False)
    demo.say(f"{private.name}: mode {demo.mode(private)}, only the receiver may read it")

    demo.title("Receiver: publish the public half; senders ship this file")
    demo.command("keys", "public", private.name, "-o", public.name)
    members = " ".join(KeySetFile(private).publish(public)["keys"][0])
    demo.say(f"{public.name}: mode {demo.mode(public)}, members {members} (nothing secret)")

    demo.title("Sender: encrypt a telemetry payload with the public set")
    demo.write(payload.name, json.dumps(DEMO_PAYLOAD))
    demo.command("encrypt", "--jwks", public.name, payload.name, redirect="body.txt")
    old_body = demo.save(
        "body.txt", encrypt_document(public, DEMO_PAYLOAD, None, Format.ELASTIC)[1]
    )
    demo.say(f"body ({len(old_body)} chars, elastic format): {old_body[:60]}...")

    demo.title("Receiver: decrypt it with the private set")
    demo.command("decrypt", "--jwks", private.name, "body.txt")
    _show_decrypted(demo, private, old_body, show=True)

    demo.title("Receiver: see which key it was encrypted to")
    demo.command("inspect", "--jwks", private.name, "body.txt")
    demo.say(_json_members(_inspect(private, old_body.encode())))

    demo.title("Rotate: add a new key on (every) receiver first, then publish the public set")
    demo.command("keys", "rotate", private.name)
    demo.say(KeySetFile(private).rotate(today=_utc_today()))
    demo.command("keys", "public", private.name, "-o", public.name)
    KeySetFile(private).publish(public)
    demo.command("keys", "list", private.name)
    demo.say(_table(_key_rows(load_set(private))))

    demo.title("Senders now encrypt to the newest key; the old body still decrypts")
    demo.command("encrypt", "--jwks", public.name, payload.name, redirect="body2.txt")
    used, new_body = encrypt_document(public, DEMO_PAYLOAD, None, Format.ELASTIC)
    demo.save("body2.txt", new_body)
    demo.say(f"encrypted to {used}, the newest (pick another with --kid)")
    demo.command("decrypt", "--jwks", private.name, "body.txt")
    _show_decrypted(demo, private, old_body)

    demo.title("The standard format: one compact JWE that any JOSE library reads")
    demo.command(
        "encrypt", "--jwks", public.name, "--format", "jwe", payload.name, redirect="jwe.txt"
    )
    jwe_body = demo.save("jwe.txt", encrypt_document(public, DEMO_PAYLOAD, None, Format.JWE)[1])
    demo.say(f"body ({len(jwe_body)} chars, jwe format): {jwe_body[:60]}...")
    demo.command("decrypt", "--jwks", private.name, "jwe.txt")
    _show_decrypted(demo, private, jwe_body)
    demo.say("a receiver accepts both formats at once and tells them apart by shape")


def _show_decrypted(demo: _Demo, private: Path, body: str, *, show: bool = False) -> None:
    """Decrypt for real and check the payload came back unchanged."""
    payload = _decrypt(private, body.encode())
    if payload != DEMO_PAYLOAD:
        raise CLIError("the demo payload did not round-trip; please report this as a bug")
    if show:
        demo.say(json.dumps(payload))
    kid = _inspect(private, body.encode())["key"]["kid"]
    demo.say(f"ok: the same payload, opened with key {kid}")


def _json_members(document: dict[str, Any]) -> str:
    """JSON with one top-level member per line: what `inspect` prints, but short."""
    members = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in document.items())
    return f"{{\n{members}\n}}"


@app.command()
def demo() -> None:
    """Run the whole flow in a temporary directory, step by step: keys, encrypt, decrypt, rotate."""
    with tempfile.TemporaryDirectory(prefix="request-crypto-demo-") as directory:
        typer.echo(
            f"Working in {directory} (removed when the demo ends). Each $ line is a command "
            "it runs there, as shown: paste them in order into a shell to do the same."
        )
        # Resolved: key files are written without following links (macOS's /var is one).
        _run_demo(_Demo(Path(directory).resolve()))
    typer.echo("")
    typer.echo(
        "Done. For real key sets, follow the key-rotation runbook in docs/key-rotation.md; "
        f"`{PROG} --help` lists every command."
    )


# ---------------------------------------------------------------------------------------------
# Entry points


RECEIVER_COMMANDS = f"{__package__}.receiver.cli"


def _register_receiver_commands(module_name: str = RECEIVER_COMMANDS) -> None:
    """Add `serve` and `send` when the receiver module is installed; the CLI works without it.

    Only that module (or its package) being absent is tolerated: an import failing inside it
    is a bug or a broken install, and is raised rather than turned into two missing commands.
    """
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        missing = exc.name or ""
        if missing != module_name and not module_name.startswith(f"{missing}."):
            raise
        return
    register: Callable[[typer.Typer], None] = module.register
    register(app)


register_sealed_commands(app)
_register_receiver_commands()


def main() -> None:
    """The `request-crypto` console script."""
    app(prog_name=PROG)


if __name__ == "__main__":  # pragma: no cover
    main()
