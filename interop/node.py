"""Install the pinned npm packages into a cache directory and run `harness.mjs` with node.

`npm ci` installs exactly what the committed package-lock.json pins, into
``.cache/interop`` at the repository root (or ``$REQUEST_CRYPTO_INTEROP_DIR``). The install is
redone only when the lock file changes, under a file lock so parallel test runs share it.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("REQUEST_CRYPTO_INTEROP_DIR", HERE.parent / ".cache" / "interop"))
FILES = ("package.json", "package-lock.json", "harness.mjs")


class NodeUnavailable(RuntimeError):
    """node or npm is missing, or the pinned packages could not be installed."""


def ensure_installed() -> Path:
    """Return the directory holding harness.mjs and its node_modules, installing if needed."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            raise NodeUnavailable(f"{tool} is not on PATH; install Node.js 20+ to run interop")
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        lock_file = (HERE / "package-lock.json").read_bytes()
        stamp = CACHE / "node_modules" / ".installed-lock.json"
        if not stamp.exists() or stamp.read_bytes() != lock_file:
            for name in FILES[:2]:
                shutil.copyfile(HERE / name, CACHE / name)
            result = subprocess.run(
                ["npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"],
                cwd=CACHE,
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            if result.returncode != 0:
                raise NodeUnavailable(f"npm ci failed:\n{result.stderr[-2000:]}")
            stamp.write_bytes(lock_file)
        shutil.copyfile(HERE / "harness.mjs", CACHE / "harness.mjs")
    return CACHE


def run(op: str, timeout: float = 600, **params: Any) -> Any:
    """Run one harness operation and return its JSON answer."""
    directory = ensure_installed()
    result = subprocess.run(
        ["node", str(directory / "harness.mjs")],
        input=json.dumps({"op": op, **params}),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"harness op {op!r} failed:\n{result.stderr[-4000:]}")
    return json.loads(result.stdout)
