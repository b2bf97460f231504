"""`serve` as a real process in the receiver tests: start it, read its log, stop it."""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

STARTUP = re.compile(r"listening on (http://[^ ]+) ")


def clean_env() -> dict[str, str]:
    """This environment without proxies (loopback only) and with unbuffered output."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def post_each(url: str, bodies: Sequence[str], *, threads: int = 8) -> list[httpx.Response]:
    """POST each body to `url` on its own new connection, `threads` at a time (so a server's
    workers all get some), answers in order."""

    def post(body: str) -> httpx.Response:
        with httpx.Client(trust_env=False, timeout=30) as http:
            return http.post(url, content=body)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(post, bodies))


def console_script() -> list[str]:
    script = Path(sys.executable).parent / "request-crypto"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "request_crypto"]


class Server:
    """A `serve` subprocess; stderr is drained continuously (request lines go there)."""

    def __init__(self, command: list[str], cwd: Path) -> None:
        self.process = subprocess.Popen(
            command,
            cwd=cwd,
            env=clean_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        assert self.process.stderr is not None
        stream = self.process.stderr
        self._reader = threading.Thread(target=self._drain, args=(stream,), daemon=True)
        self._reader.start()

    def _drain(self, stream: Any) -> None:
        for line in stream:
            self.stderr.append(line)
            self.lines.put(line)

    def wait_listening(self, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.process.poll() is not None:
                    pytest.fail(f"serve exited {self.process.returncode}: {''.join(self.stderr)}")
                continue
            match = STARTUP.search(line)
            if match:
                url = match.group(1)
                with httpx.Client(trust_env=False, timeout=30) as http:
                    assert http.get(f"{url}/healthz").json()["status"] == "ok"
                return url
        pytest.fail(f"no startup line within {timeout} s: {''.join(self.stderr)}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
            pytest.fail("serve did not stop within 30 s of SIGTERM")
        finally:
            self._reader.join(10)
            assert self.process.stderr is not None
            self.process.stderr.close()
        return code


def run_cli(
    command: list[str], cwd: Path, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=cwd, env=clean_env(), input=stdin, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
