"""`request-crypto keys init|add|rotate|list|public|remove`: key-set files for operators.

Thin calls to `KeySetFile` (locked, atomic, mode 0600). `demo` runs the same steps through
`init_set`, `key_rows` and `table`. No command here prints private key parameters.
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from ..keyfile import write_jwks
from ..keys.jwks import DEFAULT_ALG, JWKManager
from ..keys.signing import SIGNING_ALGORITHMS
from ..keys.source import KeySource, public_set
from ..keys.uri import (
    SIGNING_SCHEMES,
    is_signing_key_uri,
    open_key_source,
    open_signing_key,
    scheme_module,
)
from ..keyset import KeySetFile
from ..kids import thumbprint
from ._common import (
    PROG,
    STDOUT,
    CLIError,
    PasswordFile,
    echo_json,
    is_uri,
    json_bytes,
    kid_list,
    load_private,
    load_set,
    note,
    one_line,
    output_stream,
    password_of,
    quoted,
    require_kid,
    shown,
)

__all__ = ["init_set", "key_rows", "keys_app", "register", "table", "utc_today"]

keys_app = typer.Typer(
    help="Create, rotate, list and publish key sets.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def register(app: typer.Typer) -> None:
    """Add the `keys` command group to a Typer app (the main CLI)."""
    app.add_typer(keys_app, name="keys")


# ---------------------------------------------------------------------------------------------
# Options

KeySetPath = Annotated[
    Path, typer.Argument(metavar="PATH", help="The key-set file.", show_default=False)
]
KeyLocation = Annotated[
    str,
    typer.Argument(
        metavar="PATH|URI",
        help="The key-set file, or a key-source URI (pkcs11:..., aws-kms:...).",
        show_default=False,
    ),
]
Kid = Annotated[str, typer.Option("--kid", help="The key id.", show_default=False)]
WrapWith = Annotated[
    str | None,
    typer.Option(
        "--wrap-with",
        metavar="aws-kms:KEY",
        help="Write the private set wrapped by this symmetric KMS key (instead of a "
        "password); a wrapped file opens with no option and stays wrapped by its key.",
        show_default=False,
    ),
]
KeySize = Annotated[Literal[2048, 3072, 4096], typer.Option("--size", help="RSA modulus bits.")]
Alg = Annotated[
    Literal[
        "RSA-OAEP", "RSA-OAEP-256", "ES256", "ES384", "EdDSA", "RS256", "PS256", "HS256", "dir"
    ],
    typer.Option(
        "--alg",
        help="RSA-OAEP, RSA-OAEP-256: an encryption set (the JavaScript library uses "
        "RSA-OAEP). ES256, ES384, EdDSA, RS256, PS256: a sender's signing set; HS256: a "
        "shared signing secret; dir: a shared secret that encrypts bodies (A256GCM).",
    ),
]


# ---------------------------------------------------------------------------------------------
# What the commands do, as functions `demo` can call too


def utc_today() -> date:
    """Today's UTC date: the default kid of `keys rotate` ends with it."""
    return datetime.now(timezone.utc).date()


def _wrapping(wrap_with: str | None, password: bytes | None) -> str | None:
    """`--wrap-with`, checked: an aws-kms: URI, and not beside a password."""
    if wrap_with is None:
        return None
    if not wrap_with.startswith("aws-kms:"):
        raise CLIError(
            f"--wrap-with takes a KMS key, aws-kms:ARN or aws-kms:alias/NAME, not {wrap_with}"
        )
    if password is not None:
        raise CLIError(
            "give --password-file or --wrap-with, not both: a key set is protected one way"
        )
    return wrap_with


def _require_file(
    path: Path, password: bytes | None = None, wrap_with: str | None = None
) -> KeySetFile:
    """The key set at `path`, which must exist: a missing one is most likely a typo."""
    if is_uri(path):
        raise CLIError(
            f"{path} is a key-source URI: add a key to a token with {PROG} keys init URI or "
            f"{PROG} keys import PRIVATE_SET URI; KMS keys are made with AWS's own tools"
        )
    if not path.exists():
        raise CLIError(
            f"{path}: no such key-set file; create it with: "
            f"{PROG} keys init {quoted(path)} --kid KID"
        )
    return KeySetFile(path, password=password, wrap_with=_wrapping(wrap_with, password))


def init_set(
    path: Path,
    kid: str,
    size: int,
    alg: str,
    force: bool,
    *,
    password: bytes | None = None,
    wrap_with: str | None = None,
) -> None:
    """Create the set at `path`; an existing file needs `force` (its keys are then lost)."""
    if path.exists() and not force:  # the library checks again under the lock
        raise CLIError(
            f"{path} already exists; pass --force to replace it (its keys are then lost, "
            "and bodies encrypted to them can no longer be decrypted)"
        )
    wrap_with = _wrapping(wrap_with, password)
    KeySetFile.init(
        path, kid, size=size, alg=alg, force=force, password=password, wrap_with=wrap_with
    )


def _init_in_module(uri: str, kid: str | None, size: int, alg: str) -> dict[str, Any]:
    """`keys init pkcs11:...`: a non-extractable key generated in the token."""
    if not uri.startswith("pkcs11:"):
        raise CLIError(
            f"{PROG} keys init makes keys in PKCS#11 tokens only; create a KMS key with AWS's "
            "tools (aws kms create-key --key-spec RSA_2048 --key-usage ENCRYPT_DECRYPT)"
        )
    path, _, query = uri.partition("?")
    if kid is not None and ";object=" not in f";{path[len('pkcs11:') :]}":
        path += f";object={kid}"
    if alg in SIGNING_ALGORITHMS:  # a signing key pair: ES256, RS256 or PS256
        signing = scheme_module("pkcs11", SIGNING_SCHEMES)
        generated: dict[str, Any] = signing.generate_signing_key(f"{path}?{query}", alg, size=size)
        return generated
    if alg != DEFAULT_ALG and "alg=" not in query:
        query += f"&alg={alg}"
    public: dict[str, Any] = scheme_module("pkcs11").generate_key(f"{path}?{query}", size=size)
    return public


def public_of_uri(location: str) -> dict[str, Any]:
    """The public set of the key(s) a pkcs11: or aws-kms: URI names: a signing key's public
    JWK (`use: sig`), or the decryption keys' public halves."""
    if is_signing_key_uri(location):
        key = open_signing_key(location)
        assert key is not None
        return {"keys": [key.public_jwk]}
    return public_set(open_key_source(location))


def key_rows(manager: KeySource) -> list[dict[str, Any]]:
    """What `keys list` shows; never a private parameter."""
    kids = manager.kids()
    rows = []
    for kid in kids:
        meta, jwk = manager.key_metadata(kid), manager.public_jwk(kid)
        assert meta is not None and jwk is not None
        private = (
            manager.has_private_key(kid)
            if isinstance(manager, JWKManager)
            else manager.can_decrypt(kid)
        )
        rows.append(
            {
                "kid": kid,
                "kty": meta["kty"],
                "alg": meta["alg"],
                "use": meta["use"],
                "size": meta["length"],
                "private": private,
                "thumbprint": thumbprint(jwk),
                "newest": kid == kids[-1],
            }
        )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """`key_rows` as an aligned text table (control characters in kids escaped)."""

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


# ---------------------------------------------------------------------------------------------
# Commands


@keys_app.command("init")
def keys_init(
    location: KeyLocation,
    *,
    kid: Annotated[
        str | None,
        typer.Option(
            "--kid", help="The key id (a pkcs11: URI's object= names it).", show_default=False
        ),
    ] = None,
    size: KeySize = 2048,
    alg: Alg = "RSA-OAEP",
    force: Annotated[bool, typer.Option("--force", help="Replace an existing file.")] = False,
    password_file: PasswordFile = None,
    wrap_with: WrapWith = None,
) -> None:
    """Create a private key set holding one new key (mode 0600): encryption, signing or dir;
    or generate a non-extractable key in a PKCS#11 token (pkcs11:...;object=KID?...)."""
    if is_uri(location):
        public = _init_in_module(location, kid, size, alg)
        note(f"generated key {shown(public['kid'])} in the token (not extractable)")
        if public.get("use") == "sig" and public["alg"] != "ES256":
            note(f"name it with alg={public['alg']} in the URI: the token does not record it")
        note(f"publish its public half with: {PROG} keys public {quoted(location)}")
        return
    if kid is None:
        raise typer.BadParameter("a key-set file's new key needs its id", param_hint="'--kid'")
    path = Path(location)
    init_set(path, kid, size, alg, force, password=password_of(password_file), wrap_with=wrap_with)
    if alg in ("HS256", "dir"):
        note(
            f"created {path} (mode 0600) with the secret {shown(kid)}; give it to the other "
            "party over a trusted channel: a secret has no public half"
        )
        return
    holder = "the sender" if alg not in ("RSA-OAEP", "RSA-OAEP-256") else "receivers"
    note(f"created {path} (mode 0600) with key {shown(kid)}; keep it on {holder} only")
    note(f"publish its public half with: {PROG} keys public {quoted(path)} -o public_jwks.json")


@keys_app.command("add")
def keys_add(
    path: KeySetPath,
    kid: Kid,
    *,
    size: KeySize = 2048,
    alg: Alg = "RSA-OAEP",
    password_file: PasswordFile = None,
    wrap_with: WrapWith = None,
) -> None:
    """Add a new key under a new kid; it becomes the newest."""
    _require_file(path, password_of(password_file), wrap_with).add(kid, size=size, alg=alg)
    note(f"added key {shown(kid)} to {path}; it is now the newest")


@keys_app.command("rotate")
def keys_rotate(
    path: KeySetPath,
    *,
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
    password_file: PasswordFile = None,
    wrap_with: WrapWith = None,
) -> None:
    """Add a new newest key and print its kid. Older keys stay, so old bodies still decrypt.

    A file wrapped by a KMS key stays wrapped by it (a new data key); --wrap-with re-wraps it
    by another key."""
    keys = _require_file(path, password_of(password_file), wrap_with)
    new_kid = keys.rotate(kid=kid, size=size, alg=alg, today=utc_today())
    typer.echo(new_kid)
    note(
        f"added {shown(new_kid)} to {path}. Next: deploy it to every receiver, then ship "
        f"`{PROG} keys public {quoted(path)}` to senders; remove old keys only once no sender "
        "uses them"
    )


@keys_app.command("list")
def keys_list(
    location: KeyLocation,
    as_json: Annotated[bool, typer.Option("--json", help="A JSON array, for scripts.")] = False,
    password_file: PasswordFile = None,
) -> None:
    """Show each key: kid, kty, alg, use, size, private part, RFC 7638 thumbprint, newest."""
    path = location
    if is_uri(location):
        rows = key_rows(open_key_source(location))
    else:
        keys = KeySetFile(Path(location), password=password_of(password_file))
        if keys.kind() == "enc":
            rows = key_rows(load_set(Path(location), password=password_of(password_file)))
        else:
            rows = keys.describe()
    if as_json:
        echo_json(rows)
    elif rows:
        typer.echo(table(rows))
    else:
        note(f"{path} holds no keys; add one with: {PROG} keys add {quoted(path)} --kid KID")


@keys_app.command("public")
def keys_public(
    location: KeyLocation,
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
    password_file: PasswordFile = None,
) -> None:
    """Write the public set others ship: each key's public members only (of a file, or read
    from an HSM or KMS).

    `kty kid use alg e n` per RSA key, `crv x y` for EC and OKP (Ed25519) signing keys. A set
    of secrets (HS256, dir) has no public half: refused.
    """
    with output_stream(output) as stream:
        if is_uri(location):
            public = public_of_uri(location)
            if stream is None and output is not None:
                write_jwks(output, public)
        else:
            keys = KeySetFile(location, password=password_of(password_file))
            public = keys.publish(output if stream is None else None)
        if stream is not None:
            stream.write(json_bytes(public) + b"\n")
    if output is not None and output != STDOUT:
        kids = [jwk["kid"] for jwk in public["keys"]]
        note(f"wrote the public set ({kid_list(kids)}) to {output}; ship it to senders")


@keys_app.command("remove")
def keys_remove(
    path: KeySetPath,
    kid: Kid,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    password_file: PasswordFile = None,
) -> None:
    """Remove a key. Bodies encrypted to it can no longer be decrypted with this set."""
    password = password_of(password_file)
    kids = _require_file(path, password).kids()
    if kid not in kids:
        raise CLIError(
            f"{path} has no key {shown(kid)}; its kids are {kid_list(kids)} "
            f"(see: {PROG} keys list {quoted(path)})"
        )
    if not yes:
        _confirm(
            f"Remove key {shown(kid)} from {path}? Bodies encrypted to it can no longer be "
            "decrypted with this set",
            refused=f"pass --yes to remove {shown(kid)} without asking",
        )
    left = KeySetFile(path, password=password).remove(kid)
    newest = f"the newest is now {shown(left[-1])}" if left else "the set is now empty"
    note(
        f"removed {shown(kid)} from {path}: bodies encrypted to it can no longer be "
        f"decrypted with this set; {newest}"
    )


@keys_app.command("import")
def keys_import(
    private_set: KeySetPath,
    uri: Annotated[
        str,
        typer.Argument(
            metavar="URI",
            help="pkcs11:token=...?module-path=...&pin-source=... (object= only with --kid).",
            show_default=False,
        ),
    ],
    kid: Annotated[
        str | None,
        typer.Option("--kid", help="Import only this key (default: every private key)."),
    ] = None,
    password_file: PasswordFile = None,
) -> None:
    """Move private keys from a JSON set into a PKCS#11 token (non-extractable there), each
    under its kid, so senders keep their public set. Delete the file once the token serves."""
    if not uri.startswith("pkcs11:"):
        raise CLIError(f"{PROG} keys import writes into PKCS#11 tokens only (pkcs11:...)")
    manager = load_private(private_set, "keys import", password_of(password_file))
    kids = [k for k in manager.kids() if manager.has_private_key(k)]
    if kid is not None:
        require_kid(private_set, manager, kid)
        kids = [kid]
    elif len(kids) > 1 and ";object=" in f";{uri.partition('?')[0][len('pkcs11:') :]}":
        raise CLIError(f"{uri.partition('?')[0]} names one object; pass --kid to pick one key")
    for each in kids:
        jwk = manager.get_private_jwk(each)
        assert jwk is not None
        scheme_module("pkcs11").import_key(uri, jwk)
        note(f"imported key {shown(each)} into the token (not extractable there)")
    note(
        f"the token now serves {kid_list(kids)}; once a receiver decrypts with it, delete "
        f"{private_set} (the token cannot give the keys back)"
    )
