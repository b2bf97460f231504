"""The payload route's fast path (`ReceiverApp`) against the routed path, on the same inputs.

`ReceiverApp` sends ``POST /v1/payloads`` straight to its handler and access log, past
Starlette's middleware and router; ``fast_path = False`` routes it like every other request.
Both must answer every body, good or hostile, with the same status, JSON and headers, and log
the same fields.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from starlette.responses import JSONResponse

from request_crypto import JWKManager, RequestEncryptor
from request_crypto.receiver import create_app
from request_crypto.receiver._http import send_json
from request_crypto.receiver.app import ReceiverApp
from request_crypto.receiver.testing import ReceiverThread
from tests.receiver.helpers import (
    LOGGER,
    PAYLOADS,
    flip_part,
    swap_header,
    wait_for,
    write_private_set,
)

#: Answer headers whose values must match (content-length varies with ids and timestamps).
COMPARED_HEADERS = ("content-type", "retry-after", "connection", "allow", "location")
ACCEPTED = ("jwe", "jwe, OAEP-256, whitespace", "elastic")
#: Log fields that differ from request to request.
VARYING = ("id", "duration_ms")


def bodies(keys: JWKManager) -> Iterator[tuple[str, Callable[[], bytes]]]:
    """(case, a fresh body each call): fresh, so that neither path answers a retry."""
    public = keys.get_public_jwks()
    jwe = RequestEncryptor(public, format="jwe")
    elastic = RequestEncryptor(public, format="elastic")
    yield "jwe", lambda: jwe.encrypt("rx-a", {"n": 1}).encode()
    yield "jwe, OAEP-256, whitespace", lambda: b"\n " + jwe.encrypt("rx-b", [1]).encode() + b"\n"
    yield "elastic", lambda: elastic.encrypt("rx-a", {"e": "\u2028"}).encode()
    yield "unknown kid", lambda: swap_header(jwe.encrypt("rx-a", {}), {"kid": "nope"}).encode()
    yield "tampered tag", lambda: flip_part(jwe.encrypt("rx-a", {}), 4).encode()
    yield "malformed", lambda: b"not.a.jwe"
    yield "empty", lambda: b""
    yield "not utf-8", lambda: b"\xff\xfe" * 10
    yield "too large", lambda: b"x" * 5000
    yield "out of range number", lambda: keys.encrypt_jwe("rx-a", b'{"n":1e999}').encode()


@pytest.fixture
def app(tmp_path: Path, keys: JWKManager) -> Iterator[tuple[ReceiverApp, str]]:
    key_file = write_private_set(tmp_path / "private.json", keys)
    app = create_app(key_file, sink=f"sqlite:///{tmp_path / 'p.db'}", max_body=4096)
    assert isinstance(app, ReceiverApp)
    with ReceiverThread(app) as receiver:
        yield app, receiver.url


def answer(response: httpx.Response) -> dict[str, Any]:
    json_answer = response.headers.get("content-type") == "application/json"
    content = response.json() if json_answer else response.content
    if response.status_code == 202:
        assert set(content) == {"id", "kid", "format", "received_at"}
        content = {key: content[key] for key in ("kid", "format")}
    headers = {name: response.headers.get(name) for name in COMPARED_HEADERS}
    return {"status": response.status_code, "json": content, "headers": headers}


def logged(caplog: pytest.LogCaptureFixture) -> dict[str, Any]:
    """The request's one log line (written just after its answer: waited for)."""

    def lines() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == LOGGER and hasattr(r, "request_crypto")]

    wait_for(lambda: bool(lines()), 30, "the request's log line")
    time.sleep(0.05)  # and no second one
    assert len(lines()) == 1, [r.getMessage() for r in lines()]
    fields = dict(lines()[0].request_crypto)
    for name in VARYING:
        fields.pop(name, None)
    return {"level": lines()[0].levelno, **fields}


def test_fast_and_routed_paths_answer_and_log_alike(
    app: tuple[ReceiverApp, str], keys: JWKManager, caplog: pytest.LogCaptureFixture
) -> None:
    receiver, url = app
    caplog.set_level(logging.INFO, logger=LOGGER)
    cases = list(bodies(keys))
    requests: list[tuple[str, str, str, Callable[[], bytes] | None]] = [
        (case, "POST", PAYLOADS, make) for case, make in cases
    ]
    requests += [
        ("GET on the payload route", "GET", PAYLOADS, None),
        ("a trailing slash", "POST", PAYLOADS + "/", lambda: b"x"),
    ]
    with httpx.Client(trust_env=False, timeout=30) as client:
        for case, method, path, make in requests:
            seen = []
            for fast in (True, False):
                receiver.fast_path = fast
                caplog.clear()
                content = make() if make is not None else None
                response = client.request(method, url + path, content=content)
                seen.append((answer(response), logged(caplog)))
            assert seen[0] == seen[1], case
            assert (seen[0][0]["status"] == 202) == (case in ACCEPTED), case


@pytest.mark.parametrize(
    ("status", "content", "headers"),
    [
        (202, {"id": "1", "kid": "k\u00e9y", "format": "jwe", "received_at": "2026"}, None),
        (400, {"error": 'a "quoted" message\n\u2028 and more'}, None),
        (503, {"error": "retry"}, {"Retry-After": "1"}),
        (408, {"error": "slow"}, {"Connection": "close"}),
    ],
)
def test_json_answers_are_the_bytes_starlette_sends(
    status: int, content: dict[str, str], headers: dict[str, str] | None
) -> None:
    """`send_json` (the payload route's answers) sends what `JSONResponse` would."""

    def sent(answer: Callable[[Any], Any]) -> list[Any]:
        messages: list[Any] = []

        async def send(message: Any) -> None:
            messages.append(message)

        anyio.run(answer, send)
        return [{**m, "headers": list(m.get("headers", []))} for m in messages]

    async def ours(send: Any) -> None:
        await send_json(send, status, content, headers)

    async def starlette(send: Any) -> None:
        scope = {"type": "http", "method": "POST", "path": PAYLOADS, "headers": []}
        await JSONResponse(content, status, headers)(scope, None, send)  # type: ignore[arg-type]

    assert sent(ours) == sent(starlette)
