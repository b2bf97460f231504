"""Receiver throughput: bodies per second through a real `serve` process on loopback.

`measure_receiver_throughput()` makes a key set in a temporary directory, starts
``python -m request_crypto.receiver serve`` on a free 127.0.0.1 port (SQLite sink by default,
request logging on, as deployed), pre-encrypts the bodies, then POSTs them from `clients`
threads (one keep-alive httpx client each) and times each format separately. Every answer must
be ``202`` and every body must be in the sink afterwards, or it raises. The clients run on the
same machine and take CPU from the server, so the figures are a floor for a dedicated host.

Needs the ``server`` extra (httpx, starlette, uvicorn).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..jwks import JWKManager
from ..keyfile import write_jwks
from ..request import RequestEncryptor

__all__ = ["measure_receiver_throughput"]

DEFAULT_PAYLOAD: dict[str, Any] = {
    "cluster_uuid": "5b2de169-2785-441b-ae8c-186a1936b17d",
    "timestamp": "2026-11-23T10:00:00.000Z",
    "stack_stats": {"kibana": {"count": 3, "versions": ["8.15.0"], "plugins": {"apm": True}}},
    "license": {"type": "basic", "status": "active"},
}
_STARTUP_MARK = "listening on http://"


def _percentile(sorted_values: Sequence[float], fraction: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, round(fraction * (len(sorted_values) - 1)))
    return sorted_values[index]


def _wait_for_url(process: subprocess.Popen[bytes], log: Path, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(encoding="utf-8", errors="replace")
        start = text.find(_STARTUP_MARK)
        if start >= 0 and " " in text[start + len(_STARTUP_MARK) :]:
            address = text[start + len("listening on ") :].split(" ", 1)[0]
            return address
        if process.poll() is not None:
            raise RuntimeError(f"the receiver exited ({process.returncode}): {text[-2000:]}")
        time.sleep(0.05)
    raise TimeoutError(f"the receiver did not start within {timeout} s")


def _post_all(url: str, bodies: Sequence[str], clients: int) -> tuple[float, list[float], int]:
    """POST every body once from `clients` threads; (seconds, latencies in ms, failures)."""
    import httpx  # noqa: PLC0415 (the server extra)

    lock = threading.Lock()
    cursor = 0
    latencies: list[float] = []
    failures = 0
    ready = threading.Barrier(clients + 1)

    def client() -> None:
        nonlocal cursor, failures
        with httpx.Client(trust_env=False, timeout=60) as http:
            http.get(f"{url}/healthz")  # connect before the clock starts
            ready.wait()
            while True:
                with lock:
                    index = cursor
                    cursor += 1
                if index >= len(bodies):
                    return
                start = time.perf_counter()
                try:
                    status = http.post(f"{url}/v1/payloads", content=bodies[index]).status_code
                except httpx.HTTPError:
                    status = 0
                elapsed = (time.perf_counter() - start) * 1000
                with lock:
                    latencies.append(elapsed)
                    failures += status != 202

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    ready.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start, sorted(latencies), failures


def measure_receiver_throughput(
    *,
    bodies: int = 400,
    clients: int = 16,
    formats: Sequence[str] = ("elastic", "jwe"),
    workers: int = 1,
    payload: Any = None,
    startup_timeout: float = 60.0,
) -> dict[str, Any]:
    """Bodies/s the receiver sustains on loopback, per format.

    `bodies`: how many bodies per format; `clients`: concurrent senders; `workers`: receiver
    processes (``serve --workers``). Returns::

        {"clients": 16, "workers": 1, "cores": 2, "sink": "sqlite", "payload_bytes": 230,
         "stored": 800,
         "elastic": {"bodies": 400, "seconds": 3.1, "bodies_per_s": 129.0,
                     "latency_ms_p50": 120.5, "latency_ms_p99": 180.2},
         "jwe": {...}}
    """
    document = DEFAULT_PAYLOAD if payload is None else payload
    manager = JWKManager()
    manager.add_key("bench")
    with tempfile.TemporaryDirectory(prefix="request-crypto-bench-") as directory:
        folder = Path(directory)
        key_file, db, log = folder / "private.json", folder / "payloads.db", folder / "serve.log"
        write_jwks(key_file, manager.get_private_jwks())
        prepared = {
            body_format: RequestEncryptor(
                manager.get_public_jwks(), format=body_format
            ).encrypt_many([("bench", document)] * bodies)
            for body_format in formats
        }
        command = [
            *[sys.executable, "-m", "request_crypto.receiver", "serve", "--jwks", str(key_file)],
            *["--port", "0", "--workers", str(workers), "--sink", f"sqlite:///{db}"],
        ]
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        with log.open("wb") as log_handle:
            process = subprocess.Popen(  # noqa: S603 (our own module, no shell)
                command, stdin=subprocess.DEVNULL, stdout=log_handle, stderr=log_handle, env=env
            )
        results: dict[str, Any] = {
            "clients": clients,
            "workers": workers,
            "cores": os.cpu_count(),
            "sink": "sqlite",
            "payload_bytes": len(json.dumps(document, separators=(",", ":"))),
        }
        try:
            url = _wait_for_url(process, log, startup_timeout)
            _post_all(url, prepared[formats[0]][: min(clients, bodies)], clients)  # warm up
            warmed = min(clients, bodies)
            for body_format in formats:
                seconds, latencies, failures = _post_all(url, prepared[body_format], clients)
                if failures:
                    raise RuntimeError(f"{failures} {body_format} bodies were not accepted")
                results[body_format] = {
                    "bodies": bodies,
                    "seconds": round(seconds, 3),
                    "bodies_per_s": round(bodies / seconds, 1),
                    "latency_ms_p50": round(_percentile(latencies, 0.50), 1),
                    "latency_ms_p99": round(_percentile(latencies, 0.99), 1),
                }
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        with contextlib.closing(sqlite3.connect(db)) as connection:
            stored = connection.execute("SELECT COUNT(*) FROM payloads").fetchone()[0]
        expected = warmed + bodies * len(formats)
        if stored != expected:
            raise RuntimeError(f"{stored} payloads stored, {expected} accepted")
        results["stored"] = stored
    return results
