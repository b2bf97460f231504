"""The installed `request-crypto` console script in real processes: what operators run."""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(sys.executable).parent / "request-crypto"
#: The console script when installed next to this Python, else the module entry point.
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "request_crypto"]
PAYLOAD = {"cluster_uuid": "abc", "count": 3, "name": "café"}


def run(
    *args: object, stdin: str | None = None, cwd: Path | None = None, umask: int = -1
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *map(str, args)],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        umask=umask,
        timeout=120,
        check=False,
    )


def ok(*args: object, **kwargs: Any) -> str:
    result = run(*args, **kwargs)
    assert result.returncode == 0, result.stderr
    return result.stdout


def kids(path: Path) -> list[str]:
    return [jwk["kid"] for jwk in json.loads(path.read_text())["keys"]]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_demo_runs_from_an_empty_directory_and_cleans_up(tmp_path: Path) -> None:
    result = run("demo", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "Traceback" not in result.stdout
    assert result.stdout.count("ok: the same payload") == 3
    directory = re.search(r"Working in (\S+) ", result.stdout)
    assert directory is not None
    assert not Path(directory.group(1)).exists()  # the temporary directory is gone
    assert list(tmp_path.iterdir()) == []  # and nothing was left where it ran


def test_module_entry_point() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "request_crypto", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("request-crypto ")


def test_a_full_rotation(tmp_path: Path) -> None:
    """The README runbook: init, publish, rotate, republish, both bodies decrypt, retire."""
    private, public = tmp_path / "private.json", tmp_path / "public.json"
    before = datetime.now(timezone.utc).date()
    ok("keys", "init", private, "--kid", "telemetry-2026-01-01")
    ok("keys", "public", private, "-o", public)
    old_body = ok("encrypt", "--jwks", public, stdin=json.dumps(PAYLOAD))

    new_kid = ok("keys", "rotate", private).strip()
    after = datetime.now(timezone.utc).date()
    assert new_kid in {f"telemetry-{day}" for day in (before, after)}
    ok("keys", "public", private, "-o", public)
    assert kids(public) == ["telemetry-2026-01-01", new_kid]
    new_body = ok("encrypt", "--jwks", public, stdin=json.dumps([1, 2]))

    rows = json.loads(ok("keys", "list", private, "--json"))
    assert [(row["kid"], row["newest"]) for row in rows] == [
        ("telemetry-2026-01-01", False),
        (new_kid, True),
    ]
    assert json.loads(ok("decrypt", "--jwks", private, stdin=old_body)) == PAYLOAD
    assert json.loads(ok("inspect", "--jwks", private, stdin=new_body))["key"]["kid"] == new_kid

    ok("keys", "remove", private, "--kid", "telemetry-2026-01-01", "--yes")
    retired = run("decrypt", "--jwks", private, stdin=old_body)
    assert retired.returncode == 1
    assert retired.stderr.startswith("error: no key found")
    assert len(retired.stderr.splitlines()) == 1
    assert "Traceback" not in retired.stderr
    assert json.loads(ok("decrypt", "--jwks", private, stdin=new_body)) == [1, 2]


def test_encrypt_piped_into_decrypt(tmp_path: Path) -> None:
    private, public = tmp_path / "private.json", tmp_path / "public.json"
    ok("keys", "init", private, "--kid", "k")
    ok("keys", "public", private, "-o", public)
    (tmp_path / "payload.json").write_text(json.dumps(PAYLOAD), encoding="utf-8")
    script = (
        f"{' '.join(COMMAND)} encrypt --jwks public.json payload.json"
        f" | {' '.join(COMMAND)} decrypt --jwks private.json"
    )
    result = subprocess.run(
        ["bash", "-o", "pipefail", "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == PAYLOAD


def test_file_modes_do_not_depend_on_the_umask(tmp_path: Path) -> None:
    """0600 even when the umask would allow everything; 0644 even when it would allow nothing."""
    private, public = tmp_path / "private.json", tmp_path / "public.json"
    ok("keys", "init", private, "--kid", "k", umask=0o000)
    assert mode(private) == 0o600
    ok("keys", "public", private, "-o", public, umask=0o077)
    assert mode(public) == 0o644
    ok("keys", "add", private, "--kid", "k2", umask=0o000)
    assert mode(private) == 0o600
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.slow
def test_twenty_concurrent_adds_all_land(tmp_path: Path) -> None:
    private = tmp_path / "private.json"
    ok("keys", "init", private, "--kid", "base")
    new = [f"concurrent-{i:02d}" for i in range(20)]
    processes = [
        subprocess.Popen(
            [*COMMAND, "keys", "add", str(private), "--kid", kid],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for kid in new
    ]
    errors = [process.communicate(timeout=120)[1] for process in processes]
    assert [process.returncode for process in processes] == [0] * 20, errors
    assert sorted(kids(private)) == sorted(["base", *new])
    assert mode(private) == 0o600
    ok("keys", "list", private)  # and the file is a valid set
