"""The PostgreSQL sink under load, beside SQLite, and replicas behind HAProxy.

Three runs, each with `wrk` (as benchmarks/receiver.py: 16 connections, a Lua script
rotating through pre-made bodies) against real ``request-crypto serve`` processes:

- one replica, SQLite sink (the embedded default) -> bodies/s, p50, p99;
- one replica, PostgreSQL sink (a throwaway cluster, `PostgresCluster`) -> the same, and its
  ratio to SQLite (target >= 0.9);
- three replicas on the PostgreSQL sink behind HAProxy -> the same, per core.

Every body is distinct (a retried body is stored once, so rotating a few bodies would measure
the duplicate path). The bodies are `jwe` (one RSA-2048 decrypt each). The machine's cores are
shared by wrk, HAProxy, PostgreSQL and the replicas, so on a small machine three replicas add
little: the figures say what one core buys, not what a cluster would do.

`Replica` and `HAProxy` are also what tests/receiver/test_deployment.py starts.

    python -m benchmarks.postgres [--seconds 5] [--bodies 20000]   # JSON on stdout
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from request_crypto import RequestEncryptor

from .core import CORES, ROOT, fixture_jwks, telemetry
from .receiver import free_port, process_cpu, wrk_load

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """The status a GET of `url` answers, or None when nothing answers."""
    try:
        with _OPENER.open(url, timeout=timeout) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def wait_for(url: str, status: int = 200, timeout: float = 60.0) -> None:
    """Poll `url` until it answers `status`."""
    deadline = time.monotonic() + timeout
    while http_status(url) != status:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer {status} within {timeout:g} s")
        time.sleep(0.05)


class Replica:
    """One ``request-crypto serve`` process on a fixed loopback port (so it can come back)."""

    def __init__(self, key_file: Path, sink: str, log: Path, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.command = [
            sys.executable, "-m", "request_crypto", "serve",
            "--jwks", str(key_file), "--sink", sink,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--log-level", "warning", *extra,
        ]  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, health: str = "/healthz") -> Replica:
        """Start it and wait until `health` answers 200."""
        with self.log.open("ab") as handle:
            self.process = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=handle,
                env=_environment(),
            )
        try:
            wait_for(self.url + health)
        except TimeoutError:
            raise RuntimeError(f"serve did not start: {self.log.read_text()[-2000:]}") from None
        return self

    def kill(self) -> None:
        """``kill -9``: no shutdown, no drain, whatever it was doing."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        """SIGTERM (graceful), then SIGKILL after 30 s."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()

    @property
    def pid(self) -> int:
        """The running process's id."""
        assert self.process is not None
        return self.process.pid


HAPROXY_CONFIG = """\
global
    maxconn 4096
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    retries 2
    option redispatch
frontend receivers
    bind 127.0.0.1:{port}
    default_backend replicas
backend replicas
    balance roundrobin
    option httpchk GET {health}
    http-check expect status 200
    default-server inter 250ms fall 2 rise 1
{servers}
"""


class HAProxy:
    """HAProxy (Debian's ``haproxy``) in front of replicas, health-checking `health`."""

    def __init__(self, backends: Sequence[Replica], folder: Path, health: str = "/healthz") -> None:
        binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        if not Path(binary).exists():
            raise RuntimeError("haproxy is not installed (Debian: apt-get install haproxy)")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        servers = "\n".join(
            f"    server r{i} 127.0.0.1:{b.port} check" for i, b in enumerate(backends)
        )
        self.config = folder / "haproxy.cfg"
        self.config.write_text(
            HAPROXY_CONFIG.format(port=self.port, health=health, servers=servers)
        )
        self.log = folder / "haproxy.log"
        self.command = [binary, "-db", "-f", str(self.config)]
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> HAProxy:
        with self.log.open("ab") as handle:
            self.process = subprocess.Popen(
                self.command, stdin=subprocess.DEVNULL, stdout=handle, stderr=handle
            )
        wait_for(self.url + "/healthz")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextlib.contextmanager
def replicas(
    count: int, key_file: Path, sink: str, folder: Path, *extra: str
) -> Iterator[list[Replica]]:
    """`count` started replicas on one sink; all stopped on exit."""
    started: list[Replica] = []
    try:
        for i in range(count):
            started.append(Replica(key_file, sink, folder / f"serve-{i}.log", *extra).start())
        yield started
    finally:
        for replica in started:
            replica.stop()


def _load(url: str, pids: Sequence[int], bodies: Path, seconds: float, folder: Path) -> Any:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("wrk is not on PATH (Debian: apt-get install wrk)")
    before = [process_cpu(pid) or 0.0 for pid in pids]
    load = wrk_load(wrk, url, bodies, seconds, folder)
    after = [process_cpu(pid) or 0.0 for pid in pids]
    busy = sum(after) - sum(before)
    return {
        "bodies_per_s": load.bodies_per_s,
        "p50_ms": round(load.p50_ms, 2),
        "p99_ms": round(load.p99_ms, 2),
        "failures": load.failures,
        "replica_cores_busy": round(busy / load.seconds, 2) if load.seconds else None,
        "bodies_per_replica_core_s": round(load.bodies_per_s * load.seconds / busy)
        if busy
        else None,
    }


def measure(seconds: float, body_count: int) -> dict[str, Any]:
    """The three runs (see the module docstring), as a JSON-able dict."""
    from request_crypto.receiver.pgtesting import PostgresCluster

    private_jwks, public_jwks = fixture_jwks("private"), fixture_jwks("public")
    kid = public_jwks["keys"][0]["kid"]
    payload = telemetry(1000)
    figures: dict[str, Any] = {"cores": CORES, "seconds": seconds, "bodies": body_count}
    with (
        tempfile.TemporaryDirectory(prefix="request-crypto-pgbench-") as directory,
        PostgresCluster() as cluster,
    ):
        folder = Path(directory)
        key_file = folder / "private.json"
        key_file.write_text(json.dumps(private_jwks))
        key_file.chmod(0o600)
        encryptor = RequestEncryptor(public_jwks, format="jwe")

        def bodies(name: str) -> Path:
            # Fresh bodies per run: a body already stored would take the duplicate path.
            path = folder / f"{name}.txt"
            texts = encryptor.encrypt_many([(kid, payload)] * body_count)
            path.write_text("\n".join(texts) + "\n")
            return path

        sqlite_sink = f"sqlite:///{folder / 'payloads.db'}"
        with replicas(1, key_file, sqlite_sink, folder) as (one,):
            figures["sqlite_1"] = _load(one.url, [one.pid], bodies("sqlite"), seconds, folder)
        pg = cluster.create_database("bench")
        with replicas(1, key_file, pg, folder) as (one,):
            figures["postgres_1"] = _load(one.url, [one.pid], bodies("pg1"), seconds, folder)
        with replicas(3, key_file, pg, folder) as three, HAProxy(three, folder) as proxy:
            pids = [r.pid for r in three]
            figures["postgres_3_haproxy"] = _load(proxy.url, pids, bodies("pg3"), seconds, folder)
    sqlite_rate = figures["sqlite_1"]["bodies_per_s"]
    if sqlite_rate:
        figures["postgres_to_sqlite"] = round(
            figures["postgres_1"]["bodies_per_s"] / sqlite_rate, 2
        )
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.postgres", description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--bodies", type=int, default=20000)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.seconds, args.bodies), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
