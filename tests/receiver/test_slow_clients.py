"""`request-crypto serve` against slow clients, keep-alive latency, and a key file gone bad.

Each test runs the real `serve` process (the `Server` helper of test_receiver_cli) on a free
loopback port, with short timeouts; the slow-client tests run on each HTTP parser (`--http`).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import resource
import select
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from request_crypto import JWKManager, RequestEncryptor
from request_crypto.keyfile import write_jwks
from request_crypto.receiver import ReceiverConfig
from request_crypto.receiver.app import SMALL_BODY
from request_crypto.receiver.config import ENV_PREFIX
from request_crypto.receiver.protocol import ReceiverH11Protocol, http_protocol, resolve_http
from tests.receiver.processes import Server, console_script
from tests.receiver.test_cli import run

SLOW_HEADS = 400  # trickle a request head, a byte at a time, never finishing it
SILENT = 100  # connect and send nothing
HEADER_TIMEOUT = 4.0
BODY_TIMEOUT = 2.0
#: The default number of large-body slots of a receiver on this machine (see app.py).
LARGE_BODY_SLOTS = 2 * max(2, os.cpu_count() or 1)


@pytest.fixture(scope="module")
def keys() -> JWKManager:
    manager = JWKManager()
    manager.add_key("slow-1")
    return manager


@pytest.fixture(params=["h11", "httptools"])
def parser(request: pytest.FixtureRequest) -> str:
    """Each parser `serve` can run, with the same protections (request_crypto/receiver/protocol)."""
    return str(request.param)


@pytest.fixture
def private_file(tmp_path: Path, keys: JWKManager) -> Path:
    path = tmp_path / "private.json"
    write_jwks(path, keys.get_private_jwks())
    return path


@contextlib.contextmanager
def serving(tmp_path: Path, private: Path, *options: str) -> Iterator[str]:
    """A `serve` process with these options; yields its URL and checks it stops cleanly."""
    command = [*console_script(), "serve", "--jwks", str(private), "--port", "0"]
    server = Server([*command, "--sink", f"sqlite:///{tmp_path / 'p.db'}", *options], tmp_path)
    try:
        yield server.wait_listening()
    finally:
        code = server.stop()
    assert code == 0, "".join(server.stderr)


def address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


def is_closed(sock: socket.socket) -> bool:
    """Whether the server closed (or reset) this connection; reads what it sent; never blocks."""
    while select.select([sock], [], [], 0)[0]:
        try:
            if sock.recv(65536) == b"":
                return True
        except ConnectionError:
            return True
    return False


def read_until_closed(sock: socket.socket, timeout: float) -> bytes:
    """Everything the server sends until it closes the connection (or `timeout` passes)."""
    sock.settimeout(timeout)
    received = b""
    with contextlib.suppress(ConnectionError):
        while chunk := sock.recv(65536):
            received += chunk
    return received


@pytest.fixture
def enough_descriptors() -> None:
    """This test process holds 500+ sockets at once."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < 2048:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))


class Trickler:
    """Feeds slow connections one byte of a never-ending request head every `interval` s."""

    HEAD = b"POST /v1/payloads HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100_000

    def __init__(self, sockets: list[socket.socket], interval: float = 0.5) -> None:
        self.sockets = sockets
        self.interval = interval
        self.sent = [0] * len(sockets)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            for i, sock in enumerate(self.sockets):
                if self.sent[i] < 0:
                    continue
                try:
                    sock.send(self.HEAD[self.sent[i] : self.sent[i] + 1])
                    self.sent[i] += 1
                except OSError:
                    self.sent[i] = -1  # closed by the server


@pytest.mark.slow
def test_slow_clients_are_cut_off_while_senders_are_served(
    tmp_path: Path, private_file: Path, keys: JWKManager, enough_descriptors: None, parser: str
) -> None:
    encryptor = RequestEncryptor(keys.get_public_jwks())
    small = [encryptor.encrypt("slow-1", {"i": i}) for i in range(10)]
    large = encryptor.encrypt("slow-1", {"pad": "x" * SMALL_BODY})  # needs a large-body slot
    options = ["--header-timeout", str(HEADER_TIMEOUT), "--body-timeout", str(BODY_TIMEOUT)]
    options += ["--http", parser]
    with serving(tmp_path, private_file, *options) as url:
        host_port = address(url)
        slow = [socket.create_connection(host_port) for _ in range(SLOW_HEADS)]
        silent = [socket.create_connection(host_port) for _ in range(SILENT)]
        opened = time.monotonic()
        trickler = Trickler(slow)
        trickler.thread.start()
        # Announce a large body and send none of it: each holds a large-body slot.
        stalled = [socket.create_connection(host_port) for _ in range(LARGE_BODY_SLOTS)]
        for sock in stalled:
            sock.sendall(
                b"POST /v1/payloads HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n"
            )
        try:
            with httpx.Client(trust_env=False, timeout=30) as client:
                times = []
                for body in small:
                    start = time.monotonic()
                    assert client.post(f"{url}/v1/payloads", content=body).status_code == 202
                    times.append(time.monotonic() - start)
                served = time.monotonic()
                still_open = sum(not is_closed(sock) for sock in slow + silent)
                # Senders were served while all 500 slow connections were open.
                assert served - opened < HEADER_TIMEOUT, "too slow to show anything"
                assert still_open == SLOW_HEADS + SILENT
                assert max(times) < 2.0, times

                # A large body waits for a slot until the stalled bodies time out.
                start = time.monotonic()
                assert client.post(f"{url}/v1/payloads", content=large).status_code == 202
                large_wait = time.monotonic() - start

            # The stalled bodies got 408 and were closed.
            for sock in stalled:
                answer = read_until_closed(sock, 30)
                assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
                assert b"connection: close" in answer.lower()
            # Every slow head was cut off, within the timeout plus a generous margin.
            deadline = opened + HEADER_TIMEOUT + 30
            while time.monotonic() < deadline:
                open_now = [sock for sock in slow + silent if not is_closed(sock)]
                if not open_now:
                    break
                time.sleep(0.2)
            assert open_now == [], f"{len(open_now)} slow connections still open"
            cut_off = time.monotonic() - opened
            print(f"small: max {max(times) * 1000:.1f} ms; large waited {large_wait:.2f} s; "
                  f"all slow cut off within {cut_off:.1f} s")  # fmt: skip
        finally:
            trickler.stop.set()
            trickler.thread.join(5)
            for sock in slow + silent + stalled:
                sock.close()
        # Served as ever once they are gone.
        assert httpx.post(f"{url}/v1/payloads", content=small[0], timeout=30).status_code == 202


@pytest.mark.slow
def test_unread_bodies_and_second_heads_are_timed_too(
    tmp_path: Path, private_file: Path, parser: str
) -> None:
    """A body answered unread (413) is not drained forever; a kept-alive connection's next
    head gets the same deadline as the first."""
    options = ["--header-timeout", "1.5", "--body-timeout", "1.5", "--max-body", "1KiB"]
    options += ["--http", parser]
    with serving(tmp_path, private_file, *options) as url:
        with socket.create_connection(address(url)) as sock:
            sock.sendall(b"POST /v1/payloads HTTP/1.1\r\nHost: x\r\nContent-Length: 99999\r\n\r\n")
            start = time.monotonic()
            sock.settimeout(30)
            assert sock.recv(65536).startswith(b"HTTP/1.1 413 ")
            with contextlib.suppress(OSError):  # trickles on after the answer
                while time.monotonic() - start < 40 and not is_closed(sock):
                    sock.send(b"x")
                    time.sleep(0.1)
            assert is_closed(sock)
            assert 1.0 < time.monotonic() - start < 30

        with socket.create_connection(address(url)) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.settimeout(30)
            first = b""
            while not first.endswith(b"}"):  # head and body may come in two segments
                first += sock.recv(65536)
            assert first.startswith(b"HTTP/1.1 200 ")
            sock.sendall(b"GET /hea")  # the next head, never finished
            start = time.monotonic()
            answer = read_until_closed(sock, 30)
            assert answer.startswith(b"HTTP/1.1 408 "), answer
            assert 1.0 < time.monotonic() - start < 25


def test_a_head_too_large_is_refused_and_the_connection_closed(
    tmp_path: Path, private_file: Path, parser: str
) -> None:
    """h11 bounds a request head itself; httptools does not, so serve's protocol does."""
    with serving(tmp_path, private_file, "--http", parser) as url:
        with socket.create_connection(address(url)) as sock:
            sock.sendall(b"POST /v1/payloads HTTP/1.1\r\nHost: x\r\nX-Big: ")
            with contextlib.suppress(OSError):  # the server may close while we still send
                for _ in range(64):  # 1 MiB of one header, sent fast: no deadline involved
                    sock.sendall(b"a" * 16384)
            answer = read_until_closed(sock, 30)
            assert answer.startswith((b"HTTP/1.1 400 ", b"HTTP/1.1 431 ")), answer[:100]
        # Other clients are served as ever.
        assert httpx.get(f"{url}/healthz", timeout=30).status_code == 200


def test_serve_runs_the_parser_asked_for(tmp_path: Path, private_file: Path) -> None:
    """`--http auto` is httptools when installed (it is, with the server extra); bad names fail."""
    assert resolve_http("auto") == "httptools"
    assert http_protocol("h11").func is ReceiverH11Protocol
    assert http_protocol("auto").func.__name__ == "ReceiverHttpToolsProtocol"
    result = run("serve", "--jwks", str(private_file), "--http", "zttp")
    assert result.exit_code != 0
    assert "http" in result.stderr


def test_serve_refuses_bad_timeouts(private_file: Path) -> None:
    for option, value in [
        ("--header-timeout", "0"),
        ("--body-timeout", "-1"),
        ("--min-body-rate", "fast"),
        ("--key-reload-grace", "-1"),
    ]:
        result = run("serve", "--jwks", str(private_file), option, value)
        assert result.exit_code == 2, (option, result.stderr)
        assert option in result.stderr


@pytest.mark.slow
def test_keep_alive_round_trips_do_not_wait_for_delayed_acks(
    tmp_path: Path, private_file: Path, parser: str
) -> None:
    """Without TCP_NODELAY each answer (head and body: two writes) waits ~40 ms for an ACK."""
    with serving(tmp_path, private_file, "--http", parser) as url:
        connection = http.client.HTTPConnection(*address(url), timeout=30)
        try:
            times = []
            for _ in range(21):
                start = time.perf_counter()
                connection.request("GET", "/healthz")
                response = connection.getresponse()
                assert response.status == 200
                response.read()
                times.append(time.perf_counter() - start)
        finally:
            connection.close()
    median = statistics.median(times[1:])  # the first one also opens the connection
    print(f"keep-alive round trip: median {median * 1000:.2f} ms")
    assert median < 0.020, [round(t * 1000, 1) for t in times]


@pytest.mark.slow
def test_healthz_fails_while_the_key_file_cannot_be_reloaded(
    tmp_path: Path, private_file: Path, keys: JWKManager
) -> None:
    grace = 1.5
    with (
        serving(tmp_path, private_file, "--key-reload-grace", str(grace)) as url,
        httpx.Client(trust_env=False, timeout=30) as client,
    ):
        good = private_file.read_bytes()
        private_file.write_text('{"keys": [', encoding="utf-8")  # a rotation gone wrong
        broken = time.monotonic()
        deadline = broken + grace + 30
        while (health := client.get(f"{url}/healthz")).status_code == 200:
            assert time.monotonic() < deadline, "healthz stayed ok"
            time.sleep(0.1)
        assert time.monotonic() - broken >= grace  # not before the grace period is over
        assert health.status_code == 503
        answer = health.json()
        assert answer["status"] == "unavailable"
        assert "key file" in answer["reason"]
        assert answer["keys"] == 1  # the old keys are still in use

        private_file.write_bytes(good.replace(b"slow-1", b"slow-2"))  # fixed (a new kid)
        deadline = time.monotonic() + 30
        while (health := client.get(f"{url}/healthz")).status_code == 503:
            assert time.monotonic() < deadline, "healthz stayed 503 after the fix"
            time.sleep(0.1)
        assert health.status_code == 200
        assert health.json() == {"status": "ok", "keys": 1}


def test_timeouts_travel_to_worker_processes(tmp_path: Path) -> None:
    config = ReceiverConfig(
        jwks=tmp_path / "k.json",
        header_timeout=3.5,
        body_timeout=7.0,
        min_body_rate=1024,
        key_reload_grace=12.0,
    )
    environment = config.to_env()
    assert environment[f"{ENV_PREFIX}HEADER_TIMEOUT"] == "3.5"
    back = ReceiverConfig.from_env(environment)
    assert (back.header_timeout, back.body_timeout, back.min_body_rate, back.key_reload_grace) == (
        3.5,
        7.0,
        1024,
        12.0,
    )
