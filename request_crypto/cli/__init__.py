"""`request-crypto`: key sets for operators, bodies for debugging, sealed files, and a demo.

The console script is `main`: a plain `seal`/`open` command line runs without Typer
(`_fast`); anything else goes to the Typer `app` (`_app`), imported only then, so that a
sealed file's start-up costs no Typer. Where each command lives:

- `keys`: keys init/add/rotate/list/public/remove (key-set files)
- `crypto`: encrypt/decrypt/inspect (request bodies)
- `sealed`: seal/open (files and streams of any size)
- `demo`: the guided walk-through
- `_common`: what every command shares, the receiver's `serve`/`send` included (those live in
  `request_crypto.receiver.cli` and are registered when the `server` extra is installed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import CLIError
from ..kids import DEFAULT_KID_PREFIX, kid_prefix, next_kid
from ._fast import main

if TYPE_CHECKING:
    from ._app import app

__all__ = ["DEFAULT_KID_PREFIX", "CLIError", "app", "kid_prefix", "main", "next_kid"]


def __getattr__(name: str) -> Any:
    # The Typer app, built on first use: `main` needs it only for commands Typer parses.
    if name == "app":
        from ._app import app  # noqa: PLC0415

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
