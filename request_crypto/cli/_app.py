"""The Typer app: the root group, `--version`, and every command module registered on it.

Commands are thin: they parse options, call the library and `keyfile`, and print. Results go
to stdout (exact, for scripts); notes, warnings and errors go to stderr (for the person).
Every RequestCryptoError becomes one `error:` line and exit code 1 in one place
(`_Group.invoke`, through `_common.reported`), so no command can show a traceback, or the
key material a traceback's locals could hold. No command prints private key parameters.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from .. import __version__
from . import crypto, demo, keys, sealed
from ._common import PROG, reported

__all__ = ["RECEIVER_COMMANDS", "app", "main"]


class _Group(TyperGroup):
    """The root command group: turns library errors into one line and exit code 1."""

    def invoke(self, ctx: Any) -> Any:  # Any: typer's Context base is in its private click
        with reported():
            return super().invoke(ctx)


app = typer.Typer(
    cls=_Group,
    name=PROG,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


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


RECEIVER_COMMANDS = "request_crypto.receiver.cli"


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


for _commands in (keys, crypto, demo, sealed):
    _commands.register(app)
_register_receiver_commands()


def main() -> None:
    """Run the Typer app as `request-crypto` (the console script's path for most commands)."""
    app(prog_name=PROG)
