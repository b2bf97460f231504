"""`request-crypto demo`: the whole flow in a temporary directory, each step shown and run.

Every step prints the command a newcomer would type, then does that command's work through
the same functions the commands use (`keys`, `crypto`), so the demo cannot drift from them.
"""

from __future__ import annotations

import json
import shlex
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import typer

from ..formats import Format
from ..keyset import KeySetFile
from ._common import PROG, CLIError, encrypt_document, load_set
from .crypto import decrypt_body, inspect_body
from .keys import init_set, key_rows, table, utc_today

__all__ = ["DEMO_PAYLOAD", "demo", "register"]

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
    old_kid = f"telemetry-{utc_today() - timedelta(days=30)}"
    demo.shell('cd "$(mktemp -d)"')

    demo.title("Receiver: make a private key set (one RSA-2048 key)")
    demo.command("keys", "init", private.name, "--kid", old_kid)
    init_set(private, old_kid, 2048, "RSA-OAEP", force=False)
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
    demo.say(_json_members(inspect_body(private, old_body.encode())))

    demo.title("Rotate: add a new key on (every) receiver first, then publish the public set")
    demo.command("keys", "rotate", private.name)
    demo.say(KeySetFile(private).rotate(today=utc_today()))
    demo.command("keys", "public", private.name, "-o", public.name)
    KeySetFile(private).publish(public)
    demo.command("keys", "list", private.name)
    demo.say(table(key_rows(load_set(private))))

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
    payload = decrypt_body(private, body.encode())
    if payload != DEMO_PAYLOAD:
        raise CLIError("the demo payload did not round-trip; please report this as a bug")
    if show:
        demo.say(json.dumps(payload))
    kid = inspect_body(private, body.encode())["key"]["kid"]
    demo.say(f"ok: the same payload, opened with key {kid}")


def _json_members(document: dict[str, Any]) -> str:
    """JSON with one top-level member per line: what `inspect` prints, but short."""
    members = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in document.items())
    return f"{{\n{members}\n}}"


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


def register(app: typer.Typer) -> None:
    """Add `demo` to a Typer app (the main CLI)."""
    app.command()(demo)
