"""`request-crypto serve` and `request-crypto send`.

CliRunner checks the commands' answers and errors against a receiver in a thread; real
subprocesses run the console script (serve, send, keys rotate) and the multi-worker server.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import signal
import socket
import sqlite3
import sys
import time
import uuid
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from typer.testing import CliRunner, Result

from request_crypto import JWKManager, RequestEncryptor
from request_crypto.keyfile import write_jwks
from request_crypto.receiver import ReceiverConfig, create_app
from request_crypto.receiver import cli as receiver_cli_module
from request_crypto.receiver.cli import register
from request_crypto.receiver.config import ENV_PREFIX
from request_crypto.receiver.testing import ReceiverThread
from tests.receiver.processes import Server, console_script, run_cli

runner = CliRunner()
PROXY_VARIABLES = [
    name for base in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY") for name in (base, base.lower())
]


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """`send` runs in this process and honours proxy variables: loopback must stay direct."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def receiver_cli() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def run(*args: str, stdin: str | None = None) -> Result:
    return runner.invoke(receiver_cli(), list(args), input=stdin)


def assert_fails(result: Result, *needles: str) -> str:
    """Exit 1, exactly one `error:` line on stderr saying what is wrong."""
    assert result.exit_code == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for needle in needles:
        assert needle in lines[0]
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def keys() -> JWKManager:
    manager = JWKManager()
    manager.add_key("cli-old")
    manager.add_key("cli-new")
    return manager


@pytest.fixture
def key_files(tmp_path: Path, keys: JWKManager) -> tuple[Path, Path]:
    private, public = tmp_path / "private.json", tmp_path / "public.json"
    write_jwks(private, keys.get_private_jwks())
    write_jwks(public, keys.get_public_jwks())
    return private, public


@pytest.fixture
def receiver(tmp_path: Path, keys: JWKManager) -> Iterator[tuple[ReceiverThread, Path]]:
    db = tmp_path / "payloads.db"
    with ReceiverThread(create_app(keys.get_private_jwks(), sink=f"sqlite:///{db}")) as thread:
        yield thread, db


def rows(db: Path) -> list[tuple[str, str, str, Any]]:
    """The stored rows, in the order they were received."""
    with contextlib.closing(sqlite3.connect(db)) as connection:
        found = connection.execute(
            "SELECT id, kid, format, payload FROM payloads ORDER BY received_at, rowid"
        ).fetchall()
    return [(i, k, f, json.loads(p)) for i, k, f, p in found]


# ---------------------------------------------------------------------------------------------
# send, through CliRunner


def test_send_encrypts_posts_and_prints_the_answer(
    tmp_path: Path, key_files: tuple[Path, Path], receiver: tuple[ReceiverThread, Path]
) -> None:
    _, public = key_files
    thread, db = receiver
    document = {"cluster_uuid": str(uuid.uuid4()), "count": 3}
    source = tmp_path / "doc.json"
    source.write_text(json.dumps(document))

    result = run("send", "--jwks", str(public), "--url", thread.url, str(source))
    assert result.exit_code == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["kid"] == "cli-new"  # the newest (last) kid by default
    assert answer["format"] == "elastic"

    piped = run(
        "send", "--jwks", str(public), "--url", f"{thread.url}/v1/payloads",
        "--kid", "cli-old", "--format", "jwe", "-",
        stdin=json.dumps([1, "two"]),
    )  # fmt: skip
    assert piped.exit_code == 0, piped.stderr
    assert (json.loads(piped.stdout)["kid"], json.loads(piped.stdout)["format"]) == (
        "cli-old",
        "jwe",
    )
    stored = {row[0]: row[1:] for row in rows(db)}
    assert stored[answer["id"]] == ("cli-new", "elastic", document)
    assert stored[json.loads(piped.stdout)["id"]] == ("cli-old", "jwe", [1, "two"])


def test_send_errors(
    tmp_path: Path, key_files: tuple[Path, Path], receiver: tuple[ReceiverThread, Path]
) -> None:
    _, public = key_files
    thread, db = receiver
    good = tmp_path / "doc.json"
    good.write_text('{"a": 1}')

    # the receiver refuses: a set whose kid it does not hold -> 422, exit 1, its message
    stranger = JWKManager()
    stranger.add_key("stranger")
    foreign = tmp_path / "foreign.json"
    write_jwks(foreign, stranger.get_public_jwks())
    line = assert_fails(
        run("send", "--jwks", str(foreign), "--url", thread.url, str(good)),
        "422",
        "no key found",
    )
    assert "stranger" not in line  # the receiver never echoes a body's (untrusted) kid

    # nobody listening
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        free_port = closed.getsockname()[1]
    assert_fails(
        run("send", "--jwks", str(public), "--url", f"http://127.0.0.1:{free_port}", str(good)),
        "cannot send to",
    )
    # a 404 is an error status too
    assert_fails(
        run("send", "--jwks", str(public), "--url", f"{thread.url}/elsewhere", str(good)),
        "404",
    )
    assert_fails(run("send", "--jwks", str(public), "--url", thread.url, "-", stdin="{nope"),
                 "not valid JSON", "line 1 column 2")  # fmt: skip
    assert_fails(run("send", "--jwks", str(public), "--url", thread.url, "-",
                     stdin="[" * 100_000), "nested too deeply")  # fmt: skip
    assert_fails(
        run("send", "--jwks", str(public), "--url", thread.url, str(tmp_path / "missing.json")),
        "missing.json: no such file",
    )
    # the same helpful message as `request-crypto encrypt --kid nope`: the kids it could use
    assert_fails(
        run("send", "--jwks", str(public), "--url", thread.url, "--kid", "nope", str(good)),
        "has no key 'nope'",
        "'cli-old', 'cli-new'",
    )
    assert_fails(
        run("send", "--jwks", str(tmp_path / "none.json"), "--url", thread.url, str(good)),
        "none.json",
    )
    assert_fails(run("send", "--jwks", str(public), "--url", "ftp://x", str(good)), "http")
    # usage errors exit 2
    assert run("send", "--jwks", str(public), "--url", thread.url, "--format", "xml").exit_code == 2
    assert run("send", "--url", thread.url, str(good)).exit_code == 2
    assert rows(db) == []


def hostile_receiver() -> Starlette:
    """Answers every POST 400 with an `error` that tries to rewrite the terminal."""

    async def refuse(request: Request) -> JSONResponse:
        return JSONResponse({"error": "bad\x1b[2J\r\nerror: forged line\u202e"}, 400)

    return Starlette(routes=[Route("/v1/payloads", refuse, methods=["POST"])])


def test_send_escapes_the_receivers_error_text(
    tmp_path: Path, key_files: tuple[Path, Path]
) -> None:
    _, public = key_files
    good = tmp_path / "doc.json"
    good.write_text("{}")
    with ReceiverThread(hostile_receiver()) as thread:
        line = assert_fails(
            run("send", "--jwks", str(public), "--url", thread.url, str(good)), "answered 400"
        )
    assert "\x1b" not in line and "\r" not in line and "\u202e" not in line
    assert "bad\\x1b[2J\\r\\nerror: forged line\\u202e" in line


# ---------------------------------------------------------------------------------------------
# serve: errors before it listens, through CliRunner


def receiver_settings() -> tuple[dict[str, str], Any, list[Any]]:
    """What `serve` changes in the process while it runs; none of it may outlive it."""
    environment = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIX)}
    return environment, signal.getsignal(signal.SIGTERM), list(warnings.filters)


def test_serve_refuses_bad_settings(
    tmp_path: Path, key_files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # where the default sink, sqlite:///payloads.db, would go
    private, public = key_files
    before = receiver_settings()
    assert run("serve", "--jwks", str(private), "--max-body", "lots").exit_code == 2
    assert run("serve", "--jwks", str(private), "--workers", "0").exit_code == 2
    assert run("serve", "--jwks", str(private), "--port", "70000").exit_code == 2
    assert run("serve", "--jwks", str(private), "--limit-concurrency", "0").exit_code == 2
    assert run("serve").exit_code == 2
    assert_fails(run("serve", "--jwks", str(tmp_path / "absent.json")), "absent.json")
    assert_fails(run("serve", "--jwks", str(public)), "no private key", "serve needs")
    empty = tmp_path / "empty.json"
    empty.write_text('{"keys": []}')
    assert_fails(run("serve", "--jwks", str(empty)), "holds no keys")
    assert not (tmp_path / "payloads.db").exists()  # a wrong key set leaves no database
    assert_fails(run("serve", "--jwks", str(private), "--sink", "mysql://db"), "sink")
    assert_fails(
        run("serve", "--jwks", str(private), "--sink", f"sqlite:///{tmp_path}/no/such/dir.db"),
        "cannot",
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert_fails(
            run("serve", "--jwks", str(private), "--port", str(port), "--sink", "-"),
            f"cannot listen on 127.0.0.1:{port}",
        )
    assert receiver_settings() == before

    real_import = importlib.import_module

    def without_uvicorn(name: str, package: str | None = None) -> Any:
        if name == "uvicorn":
            raise ImportError("No module named 'uvicorn'")
        return real_import(name, package)

    monkeypatch.setattr(importlib, "import_module", without_uvicorn)
    assert_fails(run("serve", "--jwks", str(private)), "request_crypto[server]")
    assert not (tmp_path / "payloads.db").exists()


def test_serving_settings_are_undone_even_after_a_failure(tmp_path: Path) -> None:
    config = ReceiverConfig(jwks=tmp_path / "keys.json", sink="-", max_body=1234)
    os.environ[f"{ENV_PREFIX}SINK"] = "jsonl:///before.jsonl"  # a value of the caller's own
    try:
        before = receiver_settings()
        with (
            pytest.raises(RuntimeError, match="startup failed"),
            receiver_cli_module._serving_settings(config) as stop,
        ):
            assert os.environ[f"{ENV_PREFIX}MAX_BODY"] == "1234"  # for the worker processes
            assert os.environ[f"{ENV_PREFIX}SINK"] == "-"
            assert signal.getsignal(signal.SIGTERM) is stop
            raise RuntimeError("startup failed")
        assert receiver_settings() == before
    finally:
        del os.environ[f"{ENV_PREFIX}SINK"]


# ---------------------------------------------------------------------------------------------
# real processes


@pytest.mark.slow
def test_console_script_serve_send_rotate(tmp_path: Path) -> None:
    """The README flow: serve a key set, send with the CLI, rotate, send to the new kid."""
    cli = console_script()
    first = JWKManager()
    first.add_key("telemetry-1")
    private, public, db = tmp_path / "private.json", tmp_path / "public.json", tmp_path / "p.db"
    write_jwks(private, first.get_private_jwks())
    assert (
        run_cli([*cli, "keys", "public", str(private), "-o", str(public)], tmp_path).returncode == 0
    )
    marker = str(uuid.uuid4())
    document = {"cluster_uuid": marker, "stats": {"nodes": 3, "name": "grüße"}}
    (tmp_path / "doc.json").write_text(json.dumps(document), encoding="utf-8")

    server = Server(
        [*cli, "serve", "--jwks", str(private), "--port", "0", "--sink", f"sqlite:///{db}"],
        tmp_path,
    )
    try:
        url = server.wait_listening()
        sent = run_cli([*cli, "send", "--jwks", str(public), "--url", url, "doc.json"], tmp_path)
        assert sent.returncode == 0, sent.stderr
        assert json.loads(sent.stdout)["kid"] == "telemetry-1"
        piped = run_cli(
            [*cli, "send", "--jwks", str(public), "--url", url, "--format", "jwe"],
            tmp_path,
            stdin=json.dumps(document),
        )
        assert piped.returncode == 0, piped.stderr

        rotated = run_cli([*cli, "keys", "rotate", str(private), "--kid", "telemetry-2"], tmp_path)
        assert rotated.returncode == 0, rotated.stderr
        assert (
            run_cli([*cli, "keys", "public", str(private), "-o", str(public)], tmp_path).returncode
            == 0
        )
        deadline = time.monotonic() + 20
        while True:  # each try is a new process (~0.5 s); the receiver needs < 2 s
            new = run_cli([*cli, "send", "--jwks", str(public), "--url", url, "doc.json"], tmp_path)
            if new.returncode == 0 or time.monotonic() > deadline:
                break
        assert new.returncode == 0, new.stderr
        assert json.loads(new.stdout)["kid"] == "telemetry-2"
    finally:
        code = server.stop()
    assert code == 0, "".join(server.stderr)

    stored = rows(db)
    assert [(kid, fmt) for _, kid, fmt, _ in stored] == [
        ("telemetry-1", "elastic"),
        ("telemetry-1", "jwe"),
        ("telemetry-2", "elastic"),
    ]
    assert all(payload == document for *_, payload in stored)
    log = "".join(server.stderr)
    assert "with 1 key (telemetry-1)" in log
    assert f"SQLite file {db}" in log
    assert log.count("status=202") == 3
    assert "reloaded: 2 keys" in log
    # One line at shutdown: the three bodies stored, and the sends refused before the reload.
    assert len(re.findall(r"receiver stopped: 3 bodies accepted, \d+ refused", log)) == 1
    assert marker not in log
    assert first.get_private_jwk("telemetry-1")["d"] not in log  # type: ignore[index]


@pytest.mark.slow
def test_serve_with_two_workers_shares_one_sqlite_file(tmp_path: Path) -> None:
    manager = JWKManager()
    manager.add_key("w-1")
    private, db = tmp_path / "private.json", tmp_path / "payloads.db"
    write_jwks(private, manager.get_private_jwks())
    command = [
        *[sys.executable, "-m", "request_crypto.receiver", "serve", "--jwks", str(private)],
        *["--port", "0", "--workers", "2", "--max-body", "4KiB", "--sink", f"sqlite:///{db}"],
    ]
    elastic = RequestEncryptor(manager.get_public_jwks())
    jwe = RequestEncryptor(manager.get_public_jwks(), format="jwe")
    bodies = [(elastic if i % 2 else jwe).encrypt("w-1", {"i": i}) for i in range(40)]
    too_big = jwe.encrypt("w-1", {"pad": "x" * 8192})

    server = Server(command, tmp_path)
    try:
        url = server.wait_listening()

        def post(body: str) -> int:
            with httpx.Client(trust_env=False, timeout=30) as http:
                return http.post(f"{url}/v1/payloads", content=body).status_code

        with ThreadPoolExecutor(max_workers=8) as pool:
            statuses = list(pool.map(post, bodies))
        assert statuses == [202] * len(bodies)
        assert post(too_big) == 413  # --max-body reached the worker processes
    finally:
        code = server.stop()
    assert code == 0, "".join(server.stderr)
    assert sorted(payload["i"] for *_, payload in rows(db)) == list(range(40))
    log = "".join(server.stderr)
    assert "2 workers" in log
    assert log.count("status=202") == 40
    stopped = re.findall(r"receiver stopped: (\d+) bodies accepted, (\d+) refused", log)
    assert len(stopped) == 2  # one line per worker
    assert [sum(int(line[i]) for line in stopped) for i in (0, 1)] == [40, 1]
