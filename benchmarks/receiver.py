"""Receiver throughput measured as users measure servers: `wrk` against `serve` and a bare app.

One run starts ``request-crypto serve`` (SQLite sink in a temporary folder, request logging on,
as deployed) and a bare Starlette app under Uvicorn with the same settings, which reads each
POST and answers ``202``. `wrk` (16 connections, a Lua script rotating through pre-made
bodies) loads each in turn with `jwe` and then `elastic` bodies. For each: bodies/s, p50/p99
latency, the cores each process kept busy and its CPU per request, and

    ceiling = cores / (bare app's CPU per request + wrk's CPU per request + the crypto)

where the crypto is one RSA-2048 decrypt (`jwe`) or PBKDF2 + RSA (`elastic`), timed here: the
most bodies/s this machine can take if `serve` cost nothing beyond a bare app and the crypto.
Beside it, cores / (serve's CPU per body + wrk's): the rate serve's own cost allows, a figure
that other load on a shared machine moves far less than bodies/s. Every term is CPU time (the
crypto by its thread's CPU clock), so waiting for a busy core never lowers the ceiling.
Where `wrk` is missing it says so and loads with a Python client (httpx threads) instead.

    python -m benchmarks.receiver [--quick] [--client python]   # this part alone, as JSON
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import re
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from request_crypto import RequestEncryptor
from request_crypto.receiver.sinks import idempotency_key

from .core import (
    CORES,
    ROOT,
    Context,
    Row,
    Section,
    Target,
    cpu_rate,
    fixture_jwks,
    serial_bound,
    telemetry,
)
from .elastic import primitive_calls

if TYPE_CHECKING:
    from starlette.applications import Starlette

PATH = "/v1/payloads"
FORMATS = ("jwe", "elastic")
CONNECTIONS = 16
BODIES = 64  # distinct pre-made bodies per format, sent in turn
#: The Uvicorn settings `serve` runs with (request_crypto/receiver/cli.py), for the bare app:
#: its loop Uvicorn's "auto" (uvloop, a dependency of the `server` extra where it has wheels);
#: its HTTP parser is serve's `--http auto` (httptools when installed, else h11), added when run.
UVICORN_SETTINGS = [
    *["--loop", "auto"],
    *["--log-level", "warning", "--no-access-log", "--lifespan", "on"],
    *["--limit-concurrency", "1000", "--timeout-graceful-shutdown", "30"],
]
#: Each wrk thread reads the bodies (one a line) and sends them in turn, from its own offset.
WRK_SCRIPT = """\
local requests = {}
local index = 0
function init(args)
  for line in io.lines(args[1]) do
    requests[#requests + 1] = wrk.format("POST", nil, nil, line)
  end
  index = math.random(#requests)
end
function request()
  index = index % #requests + 1
  return requests[index]
end
"""
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass
class Load:
    """One load run against one server: what the client saw and the CPU both sides used."""

    requests: int
    seconds: float
    bodies_per_s: float
    p50_ms: float
    p99_ms: float
    failures: int  # answers other than 2xx, and socket errors
    server_cpu_s: float | None = None
    client_cpu_s: float | None = None

    def per_request(self, cpu: float | None) -> float | None:
        return cpu / self.requests if cpu is not None and self.requests else None

    def summary(self) -> dict[str, Any]:
        server, client = self.per_request(self.server_cpu_s), self.per_request(self.client_cpu_s)
        return {
            **asdict(self),
            "server_cores_busy": self.server_cpu_s / self.seconds if self.server_cpu_s else None,
            "server_cpu_ms_per_request": server * 1000 if server else None,
            "client_cpu_ms_per_request": client * 1000 if client else None,
        }


# --- the load generators ---------------------------------------------------------------------


def _seconds(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not match:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match[1]) * _UNITS[match[2]]


def parse_wrk(output: str) -> Load:
    """The figures of `wrk --latency` output: requests, duration, rate, p50/p99, failures."""
    total = re.search(r"(\d+) requests in ([\d.]+\w+),", output)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    latency = dict(re.findall(r"^\s+(50|99)(?:\.0+)?%\s+([\d.]+\w+)\s*$", output, re.M))
    if not total or not rate or set(latency) != {"50", "99"}:
        raise ValueError(f"wrk printed no figures:\n{output}")
    failures = sum(map(int, re.findall(r"(?:connect|read|write|timeout) (\d+)", output)))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return Load(
        requests=int(total[1]),
        seconds=_seconds(total[2]),
        bodies_per_s=float(rate[1]),
        p50_ms=_seconds(latency["50"]) * 1000,
        p99_ms=_seconds(latency["99"]) * 1000,
        failures=failures + (int(non_2xx[1]) if non_2xx else 0),
    )


def children_cpu() -> float:
    """CPU seconds used by this process's finished (waited-for) children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wrk_load(wrk: str, url: str, bodies_file: Path, seconds: float, folder: Path) -> Load:
    script = folder / "rotate.lua"
    script.write_text(WRK_SCRIPT)
    command = [
        wrk,
        "-t1",
        f"-c{CONNECTIONS}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        "--timeout",
        "10s",
    ]
    before = children_cpu()
    done = subprocess.run(
        [*command, "-s", str(script), url + PATH, "--", str(bodies_file)],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    )
    load = parse_wrk(done.stdout)
    load.client_cpu_s = children_cpu() - before
    return load


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, round(fraction * (len(sorted_values) - 1)))
    return sorted_values[index]


def python_load(url: str, bodies: Sequence[str], seconds: float) -> Load:
    """The fallback: `CONNECTIONS` threads, a keep-alive httpx client each, for `seconds`."""
    import httpx

    lock = threading.Lock()
    latencies: list[float] = []
    failures = 0
    ready = threading.Barrier(CONNECTIONS + 1)
    deadline = 0.0

    def client(offset: int) -> None:
        nonlocal failures
        with httpx.Client(trust_env=False, timeout=60) as http:
            http.get(f"{url}/healthz")  # connect before the clock starts
            ready.wait()
            index = offset
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                try:
                    status = http.post(url + PATH, content=bodies[index % len(bodies)]).status_code
                except httpx.HTTPError:
                    status = 0
                elapsed = (time.perf_counter() - start) * 1000
                index += 1
                with lock:
                    latencies.append(elapsed)
                    failures += not 200 <= status < 300

    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(CONNECTIONS)]
    for thread in threads:
        thread.start()
    cpu = time.process_time()
    deadline = time.perf_counter() + seconds
    ready.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    latencies.sort()
    return Load(
        requests=len(latencies),
        seconds=elapsed,
        bodies_per_s=len(latencies) / elapsed,
        p50_ms=percentile(latencies, 0.50),
        p99_ms=percentile(latencies, 0.99),
        failures=failures,
        client_cpu_s=time.process_time() - cpu,
    )


# --- the servers -----------------------------------------------------------------------------


def bare_app() -> Starlette:
    """The baseline: Starlette reading each POSTed body and answering 202, nothing else."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def receive(request: Request) -> Response:
        await request.body()
        return JSONResponse({"accepted": True}, status_code=202)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route(PATH, receive, methods=["POST"]), Route("/healthz", healthz)])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def process_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) a running process has used: /proc, else psutil, else None."""
    with contextlib.suppress(OSError, IndexError, ValueError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    try:
        import psutil  # type: ignore[import-untyped]
    except ImportError:
        return None
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


@contextlib.contextmanager
def running(command: list[str], log: Path, env: dict[str, str]) -> Iterator[tuple[str, int]]:
    """Start a server on a free port, wait for /healthz, yield (url, pid), stop it (SIGTERM)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as handle:
        process = subprocess.Popen(
            [*command, "--port", str(port)],
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=handle,
            env=env,
        )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"{command[2]} exited ({process.returncode}): {log.read_text()[-2000:]}"
                )
            with contextlib.suppress(OSError):
                opener.open(f"{url}/healthz", timeout=5).close()
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{command[2]} did not answer within 60 s")
            time.sleep(0.05)
        yield url, process.pid
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- the measurement -------------------------------------------------------------------------


def crypto_seconds(private_jwks: dict[str, Any], kid: str, seconds: float) -> dict[str, float]:
    """The primitives' CPU time per body for each format, timed now (one thread).

    By the thread's CPU clock, not the wall clock: on a loaded machine the wall clock counts
    time spent waiting for a core, which would make the crypto look dearer and the ceiling
    lower (an easier target) than the machine's limit.
    """
    calls = primitive_calls(private_jwks, kid)
    rate = {
        key: cpu_rate(calls[key], seconds)
        for key in ("bound.pbkdf2.cryptography", "bound.rsa.decrypt")
    }
    elastic = serial_bound(rate["bound.pbkdf2.cryptography"], rate["bound.rsa.decrypt"])
    assert elastic is not None
    return {"jwe": 1 / rate["bound.rsa.decrypt"], "elastic": 1 / elastic}


def measure_receiver(
    private_jwks: dict[str, Any],
    public_jwks: dict[str, Any],
    kid: str,
    payload: Any,
    *,
    seconds: float = 5.0,
    client: str = "auto",
    log: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """Load `serve` and the bare app with each format's bodies; figures as a JSON-able dict.

    `client`: "wrk", "python" or "auto" (wrk when on PATH). Raises when `serve` stored a body
    it was not sent, or a body twice. The bodies rotate, and a body sent again is stored once
    (the receiver's exactly-once rule), so after the first pass the sink takes the duplicate
    path (an insert that conflicts, then a lookup); benchmarks/postgres.py sends distinct bodies.
    """
    from request_crypto.receiver.protocol import resolve_http  # the server extra

    wrk = shutil.which("wrk") if client in ("auto", "wrk") else None
    if client == "wrk" and wrk is None:
        raise RuntimeError("wrk is not on PATH (Debian: apt-get install wrk)")
    figures: dict[str, Any] = {
        "client": "wrk" if wrk else "python (httpx threads)",
        "note": None if wrk or client == "python" else "wrk not found: loaded by the Python client",
        "connections": CONNECTIONS,
        "seconds": seconds,
        "cores": CORES,
    }
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    with tempfile.TemporaryDirectory(prefix="request-crypto-bench-") as directory:
        folder = Path(directory)
        key_file, db = folder / "private.json", folder / "payloads.db"
        key_file.write_text(json.dumps(private_jwks))
        key_file.chmod(0o600)
        bodies = {
            fmt: RequestEncryptor(public_jwks, format=fmt).encrypt_many([(kid, payload)] * BODIES)
            for fmt in FORMATS
        }
        for fmt, texts in bodies.items():
            (folder / f"{fmt}.txt").write_text("\n".join(texts) + "\n")
        serve = [
            sys.executable,
            "-m",
            "request_crypto",
            "serve",
            "--jwks",
            str(key_file),
            "--sink",
            f"sqlite:///{db}",
            "--host",
            "127.0.0.1",
        ]
        bare = [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "benchmarks.receiver:bare_app",
            "--host",
            "127.0.0.1",
            *["--http", resolve_http("auto")],
            *UVICORN_SETTINGS,
        ]
        accepted = 0
        with (
            running(serve, folder / "serve.log", env) as (serve_url, serve_pid),
            running(bare, folder / "bare.log", env) as (bare_url, bare_pid),
        ):

            def load(url: str, pid: int, fmt: str, duration: float) -> Load:
                before = process_cpu(pid)
                if wrk:
                    result = wrk_load(wrk, url, folder / f"{fmt}.txt", duration, folder)
                else:
                    result = python_load(url, bodies[fmt], duration)
                after = process_cpu(pid)
                if before is not None and after is not None:
                    result.server_cpu_s = after - before
                return result

            warm = load(
                serve_url, serve_pid, "jwe", min(1.0, seconds)
            )  # imports, caches, connections
            accepted += warm.requests - warm.failures
            load(bare_url, bare_pid, "jwe", min(1.0, seconds))
            crypto = crypto_seconds(private_jwks, kid, min(1.0, seconds / 2))
            for fmt in FORMATS:
                log(f"  receiver: {fmt} bodies, {figures['client']}, {seconds:g}s each")
                served = load(serve_url, serve_pid, fmt, seconds)
                baseline = load(bare_url, bare_pid, fmt, seconds)
                accepted += served.requests - served.failures
                figures[fmt] = summarize(served, baseline, crypto[fmt])
        with contextlib.closing(sqlite3.connect(db)) as connection:
            keys = [row[0] for row in connection.execute("SELECT idempotency_key FROM payloads")]
        sent = {idempotency_key(body.encode()) for texts in bodies.values() for body in texts}
    stored = len(keys)
    if len(set(keys)) != stored or not set(keys) <= sent:
        raise RuntimeError(f"{stored} rows: a body stored twice, or one that was never sent")
    if accepted and not stored:
        raise RuntimeError(f"{accepted} bodies accepted, none stored")
    figures["stored"], figures["accepted"] = stored, accepted
    return figures


def summarize(served: Load, baseline: Load, crypto: float) -> dict[str, Any]:
    """One format's figures, with the ceiling and where `serve` stands against it."""
    bare_cpu = baseline.per_request(baseline.server_cpu_s)
    client_cpu = served.per_request(served.client_cpu_s)
    ceiling = CORES / (bare_cpu + client_cpu + crypto) if bare_cpu and client_cpu else None
    # serve's rate if its CPU per body were all it took: less sensitive to a shared machine's
    # load than bodies/s (other work slows the rate, not the CPU a body costs).
    serve_cpu = served.per_request(served.server_cpu_s)
    cpu_bound = CORES / (serve_cpu + client_cpu) if serve_cpu and client_cpu else None
    return {
        "serve": served.summary(),
        "bare": baseline.summary(),
        "crypto_ms": crypto * 1000,
        "ceiling_bodies_per_s": ceiling,
        "serve_vs_bare": (
            served.bodies_per_s / baseline.bodies_per_s if baseline.bodies_per_s else None
        ),
        "serve_vs_ceiling": served.bodies_per_s / ceiling if ceiling else None,
        "serve_cpu_bound_bodies_per_s": cpu_bound,
        "cores_x_crypto_bodies_per_s": CORES / crypto,
    }


#: Issue 13's receiver targets: serve's bodies/s over this limit, at least this fraction.
#: `jwe`: min(bare app, the ceiling above); `elastic`: min(bare app, cores x one-core decrypt
#: bound), the decrypt bound being PBKDF2 + RSA.
RECEIVER_TARGETS = {
    "jwe": ("ceiling_bodies_per_s", 0.5),
    "elastic": ("cores_x_crypto_bodies_per_s", 0.8),
}


def receiver_target(fmt: str, figures: dict[str, Any]) -> Target:
    """`serve` against min(bare app, the format's limit), as issue 13 states it."""
    limit_key, threshold = RECEIVER_TARGETS[fmt]
    f = figures[fmt]
    limits = [f["bare"]["bodies_per_s"], f[limit_key]]
    limit = min(x for x in limits if x) if any(limits) else None
    name = "ceiling" if fmt == "jwe" else f"{CORES} x decrypt bound"
    return Target(
        f"receiver {fmt} >= {threshold:.0%} of min(bare app, {name})",
        f["serve"]["bodies_per_s"] / limit if limit else None,
        threshold,
        notes=[f"{f['serve']['bodies_per_s']:,.0f} of {limit:,.0f} bodies/s"] if limit else [],
    )


def _cpu_note(load: dict[str, Any]) -> str:
    if load["server_cores_busy"] is None:
        return ""
    return (
        f"; {load['server_cores_busy']:.2f} cores, {load['server_cpu_ms_per_request']:.2f} ms "
        f"CPU/req, client {load['client_cpu_ms_per_request'] or 0:.2f} ms/req"
    )


class Receiver(Section):
    title = f"Receiver over loopback HTTP, {CONNECTIONS} connections, SQLite sink (bodies/s)"

    def declare(self, ctx: Context) -> None:
        if not all(importlib.util.find_spec(name) for name in ("httpx", "starlette", "uvicorn")):
            return  # the server extra is not installed: the row says so
        seconds = 2.0 if ctx.quick else 5.0
        ctx.add_once(
            "receiver",
            lambda: measure_receiver(
                ctx.private_jwks,
                ctx.public_jwks,
                ctx.kid,
                ctx.payloads["1KB"],
                seconds=seconds,
                log=_stderr,
            ),
        )

    def targets(self, ctx: Context) -> list[Target]:
        figures = ctx.values.get("receiver")
        return [receiver_target(fmt, figures) for fmt in FORMATS] if figures else []

    def rows(self, ctx: Context) -> list[Row]:
        figures = ctx.values.get("receiver")
        if not figures:
            return [Row("receiver (needs the server extra)", None)]
        client = figures["client"] + (f" ({figures['note']})" if figures["note"] else "")
        rows = [Row(f"load: {client}, {figures['seconds']:g}s a run", None)]
        for fmt in FORMATS:
            f = figures[fmt]
            serve, bare = f["serve"], f["bare"]
            latency = f"p50 {serve['p50_ms']:.1f} ms, p99 {serve['p99_ms']:.1f} ms"
            rows.append(
                Row(
                    f"{fmt} 1KB bodies, serve",
                    serve["bodies_per_s"],
                    unit="bodies/s",
                    note=latency + _cpu_note(serve),
                )
            )
            rows.append(
                Row(
                    f"bare Starlette 202, {fmt} bodies",
                    bare["bodies_per_s"],
                    unit="req/s",
                    note=f"p50 {bare['p50_ms']:.1f} ms, p99 {bare['p99_ms']:.1f} ms"
                    + _cpu_note(bare),
                )
            )
            ceiling = f["ceiling_bodies_per_s"]
            ratio = f["serve_vs_bare"]
            vs = f"serve/bare {ratio:.2f}x" if ratio is not None else "bare app: no answer"
            if ceiling:
                vs += f", serve/ceiling {f['serve_vs_ceiling'] * 100:.0f}%"
            if f.get("serve_cpu_bound_bodies_per_s"):
                vs += f"; serve's CPU/body allows {f['serve_cpu_bound_bodies_per_s']:,.0f}/s"
            rows.append(
                Row(
                    f"ceiling {fmt}: cores/(bare+client+crypto)",
                    ceiling,
                    unit="bodies/s",
                    note=f"crypto {f['crypto_ms']:.2f} ms; {vs}",
                )
            )
        return rows


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 s a run instead of 5")
    parser.add_argument("--seconds", type=float, help="seconds a load run")
    parser.add_argument("--client", choices=["auto", "wrk", "python"], default="auto")
    args = parser.parse_args(argv)
    seconds = args.seconds or (2.0 if args.quick else 5.0)
    payload = telemetry(1000)
    private = fixture_jwks("private")
    public = fixture_jwks("public")
    figures = measure_receiver(
        private,
        public,
        public["keys"][0]["kid"],
        payload,
        seconds=seconds,
        client=args.client,
        log=_stderr,
    )
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
