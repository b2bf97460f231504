"""`python -m request_crypto.receiver serve|send ...`: the receiver's two commands on their own.

The same commands as `request-crypto serve` / `request-crypto send`, for when only the receiver
part is wanted (or the main CLI is not installed as a console script).
"""

from __future__ import annotations

import typer

from .cli import register

app = typer.Typer(
    name="request-crypto-receiver",
    help="The request_crypto receiver service and its sending side.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals may hold keys or payloads
)
register(app)

if __name__ == "__main__":
    app()
