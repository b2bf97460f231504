"""The CLI through Typer's CliRunner: run a command and check how it ended (shared helpers)."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

from typer.testing import CliRunner, Result

from request_crypto.cli import app

PUBLIC_MEMBERS = ["kty", "kid", "use", "alg", "e", "n"]
PRIVATE_MEMBERS = ["d", "p", "q", "dp", "dq", "qi"]
OLD, NEW = "telemetry-2026-11-01", "telemetry-2026-11-02"
PAYLOAD = {"cluster_uuid": "abc", "count": 3, "name": "café ☕", "nested": [1, {"x": None}]}
LIST_FIELDS = ["kid", "kty", "alg", "use", "size", "private", "thumbprint", "newest"]

runner = CliRunner()


def invoke(*args: object, stdin: str | bytes | None = None) -> Result:
    result = runner.invoke(app, [str(arg) for arg in args], input=stdin)
    # A crash would also exit 1: make sure every exit was on purpose.
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def ok(*args: object, stdin: str | bytes | None = None) -> Result:
    result = invoke(*args, stdin=stdin)
    assert result.exit_code == 0, result.stderr
    return result


def fails(*args: object, stdin: str | bytes | None = None) -> str:
    """Run a command that must fail: exit 1, one `error:` line on stderr, nothing on stdout."""
    result = invoke(*args, stdin=stdin)
    assert result.exit_code == 1, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    errors = [line for line in lines if not line.startswith("warning: ")]
    assert len(errors) == 1, lines
    assert errors[0].startswith("error: ")
    assert "Traceback" not in result.output
    assert result.stdout == ""
    return errors[0]


def usage_error(*args: object) -> Result:
    result = invoke(*args)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    return result


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def kids(path: Path) -> list[str]:
    return [jwk["kid"] for jwk in load(path)["keys"]]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ---------------------------------------------------------------------------------------------


def inspect_kid(private: Path, body: str) -> str:
    kid: str = json.loads(ok("inspect", "--jwks", private, stdin=body).stdout)["key"]["kid"]
    return kid
