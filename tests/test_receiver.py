"""The receiver service end to end: a real Uvicorn server on loopback, real httpx clients.

Every test starts its own server (ReceiverThread: Uvicorn in a background thread on a free
127.0.0.1 port) and talks HTTP to it; stored payloads are read back from the sink itself.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import io
import json
import logging
import os
import socket
import sqlite3
import stat
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest
from starlette.applications import Starlette

from request_crypto import JWKManager, RequestEncryptor
from request_crypto._b64 import b64url_decode, b64url_encode
from request_crypto.errors import InvalidArgumentError
from request_crypto.keyfile import update_jwks, write_jwks
from request_crypto.keys.jwks import PRIVATE_MEMBERS, PUBLIC_MEMBERS
from request_crypto.receiver import (
    JSONLSink,
    ReceivedPayload,
    Sink,
    SinkURLError,
    SQLiteSink,
    StdoutSink,
    create_app,
    open_sink,
    parse_sink_url,
    parse_size,
)
from request_crypto.receiver import sinks as sinks_module
from request_crypto.receiver.app import SMALL_BODY
from request_crypto.receiver.testing import ReceiverThread

PAYLOADS = "/v1/payloads"
WELL_KNOWN = "/.well-known/jwks.json"
ANSWER_FIELDS = {"id", "kid", "format", "received_at"}
LOGGER = "request_crypto.receiver"


# ---------------------------------------------------------------------------------------------
# helpers


@pytest.fixture(scope="module")
def keys() -> JWKManager:
    """Two fresh keys, one per key-management algorithm."""
    manager = JWKManager()
    manager.add_key("rx-a")
    manager.add_key("rx-b", alg="RSA-OAEP-256")
    return manager


def client(base_url: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, trust_env=False, timeout=30.0)


def stored_rows(db: Path) -> dict[str, dict[str, Any]]:
    with contextlib.closing(sqlite3.connect(db)) as connection:
        rows = connection.execute(
            "SELECT id, received_at, kid, format, payload FROM payloads"
        ).fetchall()
    result: dict[str, dict[str, Any]] = {}
    for row_id, received_at, kid, body_format, payload in rows:
        assert row_id not in result, f"id {row_id} stored twice"
        result[row_id] = {
            "received_at": received_at,
            "kid": kid,
            "format": body_format,
            "payload": json.loads(payload),
        }
    return result


def write_private_set(path: Path, manager: JWKManager) -> Path:
    write_jwks(path, manager.get_private_jwks())
    return path


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll `condition` until true; returns the seconds it took. Fails after `timeout`."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            pytest.fail(f"{what}: not within {timeout} s")
        time.sleep(0.02)
    return time.monotonic() - start


def swap_header(token: str, header: dict[str, Any]) -> str:
    parts = token.split(".")
    parts[0] = b64url_encode(json.dumps(header).encode())
    return ".".join(parts)


def flip_part(token: str, index: int) -> str:
    parts = token.split(".")
    raw = bytearray(b64url_decode(parts[index], "part"))
    raw[len(raw) // 2] ^= 0x01
    parts[index] = b64url_encode(bytes(raw))
    return ".".join(parts)


@pytest.fixture
def sqlite_receiver(tmp_path: Path, keys: JWKManager) -> Iterator[tuple[ReceiverThread, Path]]:
    """A receiver serving `keys` from a file, storing into a fresh SQLite file."""
    key_file = write_private_set(tmp_path / "private.json", keys)
    db = tmp_path / "payloads.db"
    with ReceiverThread(create_app(key_file, sink=f"sqlite:///{db}")) as receiver:
        yield receiver, db


# ---------------------------------------------------------------------------------------------
# the full path: sender -> receiver -> SQLite


@pytest.mark.parametrize("body_format", ["elastic", "jwe"])
def test_sender_to_receiver_to_sqlite(
    sqlite_receiver: tuple[ReceiverThread, Path], keys: JWKManager, body_format: str
) -> None:
    receiver, db = sqlite_receiver
    encryptor = RequestEncryptor(keys.get_public_jwks(), format=body_format)
    sent = {}
    with client(receiver.url) as http:
        for kid in ("rx-a", "rx-b"):
            payload = {"cluster": str(uuid.uuid4()), "kid": kid, "ünïcode": "✓", "n": [1, 2.5]}
            response = http.post(PAYLOADS, content=encryptor.encrypt(kid, payload))
            assert response.status_code == 202, response.text
            answer = response.json()
            assert set(answer) == ANSWER_FIELDS
            assert (answer["kid"], answer["format"]) == (kid, body_format)
            assert answer["received_at"].endswith("Z")
            sent[answer["id"]] = (answer, payload)

    rows = stored_rows(db)
    assert set(rows) == set(sent)
    for row_id, (answer, payload) in sent.items():
        row = rows[row_id]
        assert row["payload"] == payload
        assert (row["kid"], row["format"], row["received_at"]) == (
            answer["kid"],
            body_format,
            answer["received_at"],
        )
    with contextlib.closing(sqlite3.connect(db)) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def post_javascript_bodies(
    tmp_path: Path, private_jwks: dict[str, Any], cases: list[tuple[str, Any, str]], foreign: str
) -> None:
    """POST (kid, payload, body) cases made by the npm package; all stored, `foreign` 422."""
    db = tmp_path / "payloads.db"
    with (
        ReceiverThread(create_app(private_jwks, sink=f"sqlite:///{db}")) as receiver,
        client(receiver.url) as http,
    ):
        answers = []
        for kid, payload, body in cases:
            response = http.post(PAYLOADS, content=body)
            assert response.status_code == 202, response.text
            assert response.json()["kid"] == kid
            assert response.json()["format"] == "elastic"
            answers.append((response.json()["id"], payload))
        assert http.post(PAYLOADS, content=foreign).status_code == 422
    rows = stored_rows(db)
    assert len(rows) == len(cases)
    for row_id, payload in answers:
        assert rows[row_id]["payload"] == payload


def test_committed_javascript_bodies_are_accepted(
    tmp_path: Path, private_jwks: dict[str, Any], js_bodies: dict[str, Any]
) -> None:
    """The vectors @elastic/request-crypto 2.0.3 made (fixtures/bodies.json); no node needed."""
    cases = [(v["kid"], v["payload"], v["body"]) for v in js_bodies["bodies"]]
    assert cases
    post_javascript_bodies(tmp_path, private_jwks, cases, js_bodies["foreign_body"])


@pytest.mark.interop
def test_bodies_the_javascript_library_makes_now_are_accepted(
    tmp_path: Path,
    private_jwks: dict[str, Any],
    public_jwks: dict[str, Any],
    js_bodies: dict[str, Any],
    js: Any,
) -> None:
    payload = {"from": "node", "marker": str(uuid.uuid4()), "nested": {"a": [True, None, 1.5]}}
    kids = [key["kid"] for key in public_jwks["keys"]]
    made = js("encrypt", jwks=public_jwks, items=[[kid, payload] for kid in kids])
    assert all(item["ok"] for item in made), made
    cases = [(kid, payload, item["value"]) for kid, item in zip(kids, made, strict=True)]
    post_javascript_bodies(tmp_path, private_jwks, cases, js_bodies["foreign_body"])


# ---------------------------------------------------------------------------------------------
# well-known, health, HTTP errors


def test_well_known_publishes_only_the_public_set(
    sqlite_receiver: tuple[ReceiverThread, Path], keys: JWKManager
) -> None:
    receiver, _ = sqlite_receiver
    with client(receiver.url) as http:
        response = http.get(WELL_KNOWN)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/json")
        published = response.json()
        assert published == keys.get_public_jwks()
        for jwk in published["keys"]:
            assert set(jwk) <= set(PUBLIC_MEMBERS)
            assert not set(jwk) & set(PRIVATE_MEMBERS)
        for member in PRIVATE_MEMBERS:
            assert f'"{member}"' not in response.text
        private_d = keys.get_private_jwk("rx-a")["d"]  # type: ignore[index]
        assert private_d not in response.text

        assert "max-age=" in response.headers["cache-control"]
        etag = response.headers["etag"]
        again = http.get(WELL_KNOWN, headers={"If-None-Match": etag})
        assert again.status_code == 304
        assert again.content == b""
        assert again.headers["etag"] == etag
        assert http.get(WELL_KNOWN, headers={"If-None-Match": '"other"'}).status_code == 200

        health = http.get("/healthz")
        assert health.status_code == 200
        assert health.json() == {"status": "ok", "keys": 2}


def test_http_errors_are_json(sqlite_receiver: tuple[ReceiverThread, Path]) -> None:
    receiver, _ = sqlite_receiver
    with client(receiver.url) as http:
        missing = http.get("/nowhere")
        assert missing.status_code == 404
        assert isinstance(missing.json()["error"], str)
        wrong_method = http.get(PAYLOADS)
        assert wrong_method.status_code == 405
        assert wrong_method.headers["allow"] == "POST"
        assert isinstance(wrong_method.json()["error"], str)
        assert http.post(WELL_KNOWN, content=b"x").status_code == 405
        assert http.delete("/healthz").status_code == 405


# ---------------------------------------------------------------------------------------------
# hostile bodies


def hostile_bodies(keys: JWKManager, marker: str) -> list[tuple[str, bytes | str, int]]:
    """(name, body, expected status): one or more per rule of the hardening issue."""
    elastic = RequestEncryptor(keys.get_public_jwks())
    jwe = RequestEncryptor(keys.get_public_jwks(), format="jwe")
    payload = {"secret": marker}
    good_jwe = jwe.encrypt("rx-a", payload)
    good_elastic = elastic.encrypt("rx-a", payload)
    elastic_parts = json.loads(b64url_decode(good_elastic, "body"))
    header = json.loads(b64url_decode(good_jwe.split(".")[0], "header"))
    other = JWKManager()
    other.add_key("stranger")

    def elastic_body(members: dict[str, Any]) -> str:
        return b64url_encode(json.dumps(members).encode())

    tampered_payload = bytearray(base64.b64decode(elastic_parts["encryptedPayload"]))
    tampered_payload[-1] ^= 0x01
    return [
        ("empty", b"", 400),
        ("whitespace", b" \r\n\t ", 400),
        ("not base64", b"this is not a body!", 400),
        ("not utf-8", b"\xff\xfe\xfd\x00\x80", 400),
        ("two parts", b"abc.def", 400),
        ("six parts", good_jwe + ".x", 400),
        ("elastic JSON array", elastic_body([1, 2]), 400),  # type: ignore[arg-type]
        ("elastic member missing", elastic_body({"encryptedAESKey": "x"}), 400),
        (
            "elastic member wrong type",
            elastic_body({"encryptedAESKey": 1, "encryptedPayload": "x"}),
            400,
        ),
        (
            "elastic payload too short",
            elastic_body({**elastic_parts, "encryptedPayload": "AA=="}),
            400,
        ),
        (
            "elastic payload tampered",
            elastic_body(
                {
                    **elastic_parts,
                    "encryptedPayload": base64.b64encode(tampered_payload).decode(),
                }
            ),
            400,
        ),
        (
            "elastic wrapped key tampered",
            elastic_body(
                {**elastic_parts, "encryptedAESKey": flip_part(elastic_parts["encryptedAESKey"], 3)}
            ),
            400,
        ),
        (
            "elastic wrapped key of 33 bytes",
            elastic_body({**elastic_parts, "encryptedAESKey": keys.encrypt("rx-a", b"k" * 33)}),
            400,
        ),
        (
            "elastic wrapped key oversized",
            elastic_body({**elastic_parts, "encryptedAESKey": "A" * 20_000}),
            413,
        ),
        ("alg none", swap_header(good_jwe, {**header, "alg": "none"}), 400),
        ("alg RSA1_5", swap_header(good_jwe, {**header, "alg": "RSA1_5"}), 400),
        ("alg dir", swap_header(good_jwe, {**header, "alg": "dir"}), 400),
        (
            "alg PBES2",
            swap_header(good_jwe, {**header, "alg": "PBES2-HS256+A128KW", "p2c": 10**9}),
            400,
        ),
        ("enc unknown", swap_header(good_jwe, {**header, "enc": "A512XYZ"}), 400),
        ("crit header", swap_header(good_jwe, {**header, "crit": ["exp"], "exp": 1}), 400),
        ("alg differs from key", swap_header(good_jwe, {**header, "alg": "RSA-OAEP-256"}), 400),
        ("zip not DEF", swap_header(good_jwe, {**header, "zip": "GZIP"}), 400),
        # No kid: the one RSA-OAEP key of the set is tried, and the altered header (AAD) fails.
        ("no kid", swap_header(good_jwe, {k: v for k, v in header.items() if k != "kid"}), 400),
        ("unknown kid", swap_header(good_jwe, {**header, "kid": "nobody"}), 422),
        ("other receiver's key", other.encrypt_jwe("stranger", b'{"a":1}'), 422),
        ("header replaced (AAD)", swap_header(good_jwe, {**header, "x": 1}), 400),
        ("encrypted key tampered", flip_part(good_jwe, 1), 400),
        ("ciphertext tampered", flip_part(good_jwe, 3), 400),
        ("tag tampered", flip_part(good_jwe, 4), 400),
        # a jwe body has no compression: refused unread (issue 11)
        ("zip bomb", keys.encrypt("rx-a", b"\0" * (8 * 1024 * 1024)), 400),
        ("plaintext not JSON", keys.encrypt_jwe("rx-a", b"not json " + marker.encode()), 400),
        (
            "plaintext nested too deep",
            keys.encrypt_jwe("rx-a", b"[" * 200_000 + b"]" * 200_000),
            400,
        ),
        ("number out of range", keys.encrypt_jwe("rx-a", b'{"x":1e999}'), 400),
        ("NaN", keys.encrypt_jwe("rx-a", b'{"x":NaN}'), 400),
    ]


def test_hostile_bodies_get_4xx_and_the_server_keeps_serving(
    tmp_path: Path, keys: JWKManager, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    marker = f"top-secret-{uuid.uuid4()}"
    private_d = keys.get_private_jwk("rx-a")["d"]  # type: ignore[index]
    db = tmp_path / "payloads.db"
    app = create_app(keys.get_private_jwks(), sink=f"sqlite:///{db}", max_body=1024 * 1024)
    cases = hostile_bodies(keys, marker)
    with ReceiverThread(app) as receiver, client(receiver.url) as http:
        for name, body, expected in cases:
            response = http.post(PAYLOADS, content=body)
            assert response.status_code == expected, (name, response.text)
            error = response.json()["error"]
            assert isinstance(error, str) and error, name
            assert marker not in response.text, name
            assert private_d[:16] not in response.text, name
        # still serving, and still decrypting
        good = RequestEncryptor(keys.get_public_jwks()).encrypt("rx-b", {"secret": marker})
        accepted = http.post(PAYLOADS, content=good)
        assert accepted.status_code == 202
        assert http.get("/healthz").status_code == 200

    assert list(stored_rows(db)) == [accepted.json()["id"]]
    lines = [r for r in caplog.records if r.name == LOGGER and "path=/v1/payloads" in r.message]
    assert len(lines) == len(cases) + 1  # one line per request
    for record in caplog.records:
        text = record.getMessage()
        assert marker not in text
        assert private_d[:16] not in text
    assert all("status=" in r.message and "duration_ms=" in r.message for r in lines)
    assert f"status=202 kid=rx-b format=elastic size={len(good)}" in lines[-1].message


def test_request_log_line_fields(
    sqlite_receiver: tuple[ReceiverThread, Path], keys: JWKManager, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    receiver, _ = sqlite_receiver
    body = RequestEncryptor(keys.get_public_jwks(), format="jwe").encrypt("rx-a", {"v": 1})
    unknown = swap_header(body, {"alg": "RSA-OAEP", "enc": "A256GCM", "kid": 'evil"\nkid=x'})
    with client(receiver.url) as http:
        answer = http.post(PAYLOADS, content=body).json()
        assert http.post(PAYLOADS, content=unknown).status_code == 422
    records = [r for r in caplog.records if r.name == LOGGER and "path=/v1/payloads" in r.message]
    assert len(records) == 2
    fields = records[0].request_crypto  # type: ignore[attr-defined]
    assert fields["status"] == 202
    assert fields["kid"] == "rx-a"
    assert fields["format"] == "jwe"
    assert fields["size"] == len(body)
    assert fields["id"] == answer["id"]
    assert fields["duration_ms"] >= 0
    # an attacker's kid is quoted and escaped: one line, no forged fields
    assert "\n" not in records[1].getMessage()
    assert 'kid="evil\\"\\nkid=x"' in records[1].getMessage()
    assert "error=unknown-kid" in records[1].getMessage()


# ---------------------------------------------------------------------------------------------
# oversize bodies


def read_status(sock: socket.socket) -> int:
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return int(data.split(b" ", 2)[1])


def test_oversize_bodies_get_413_while_streaming(
    tmp_path: Path, keys: JWKManager, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    limit = 256 * 1024
    db = tmp_path / "payloads.db"
    app = create_app(keys.get_private_jwks(), sink=f"sqlite:///{db}", max_body=limit)
    with ReceiverThread(app) as receiver:
        # 1. Chunked, no length announced: send a little over the limit, then nothing more.
        #    The answer must come although the body never ends (else: a timeout, a failure).
        with socket.create_connection((receiver.host, receiver.port), timeout=10) as sock:
            sock.sendall(
                b"POST /v1/payloads HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            chunk = b"A" * 16384
            sent = 0
            while sent <= limit + 2 * len(chunk):
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
            assert read_status(sock) == 413

        # 2. Content-Length over the limit: refused before a byte of the body is sent.
        with socket.create_connection((receiver.host, receiver.port), timeout=10) as sock:
            sock.sendall(
                b"POST /v1/payloads HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n"
                % (2 * limit)
            )
            assert read_status(sock) == 413

        # 3. An ordinary client streaming 4x the limit from a generator gets the JSON 413, and
        #    the receiver answered (and logged it) while the generator was still producing.
        refused_mid_stream = False

        def refused() -> bool:
            return any("status=413" in r.getMessage() for r in caplog.records)

        def generate() -> Iterator[bytes]:
            nonlocal refused_mid_stream
            for produced in range(0, 4 * limit, 16384):
                if produced > limit + 16384 and not refused_mid_stream:
                    wait_for(refused, 10, "the 413 before the body's end")
                    refused_mid_stream = True
                yield b"B" * 16384

        caplog.clear()
        with client(receiver.url) as http:
            response = http.post(PAYLOADS, content=generate())
            assert response.status_code == 413
            assert "limit" in response.json()["error"]
            assert refused_mid_stream
            # exactly at the limit is not "over" it: refused for its content, not its size
            assert http.post(PAYLOADS, content=b"C" * limit).status_code == 400
            assert http.post(PAYLOADS, content=b"C" * (limit + 1)).status_code == 413
            good = RequestEncryptor(keys.get_public_jwks()).encrypt("rx-a", {"after": "413"})
            assert http.post(PAYLOADS, content=good).status_code == 202
            assert http.get("/healthz").json()["status"] == "ok"
    assert len(stored_rows(db)) == 1


def post_raw(port: int, body: bytes) -> socket.socket:
    """Start a POST with Content-Length, sending `body` (maybe only a part of it)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(
        b"POST /v1/payloads HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % (2 * SMALL_BODY)
    )
    sock.sendall(body)
    return sock


def test_large_bodies_wait_for_a_slot_and_small_ones_do_not(keys: JWKManager) -> None:
    """Bodies over SMALL_BODY are buffered one per slot; a slow large upload blocks no small one."""
    app = create_app(keys.get_private_jwks(), sink=ListSink(), large_bodies=1)
    with ReceiverThread(app) as receiver, client(receiver.url) as http:
        junk = b"x" * (2 * SMALL_BODY)
        # A declares a large body and sends half of it: it holds the only slot meanwhile.
        with post_raw(receiver.port, junk[:SMALL_BODY]) as first:
            # B sends a whole large body (from a thread: it may fill the socket buffers).
            second = post_raw(receiver.port, b"")
            sender = threading.Thread(target=second.sendall, args=(junk,), daemon=True)
            sender.start()
            with second:
                # a small body is answered at once, though both large ones are unanswered
                assert http.post(PAYLOADS, content=b"small junk").status_code == 400
                second.settimeout(0.5)
                with pytest.raises(TimeoutError):
                    second.recv(1)  # B waits for A's slot, its body unread
                first.sendall(junk[SMALL_BODY:])
                assert read_status(first) == 400
                second.settimeout(10)
                assert read_status(second) == 400
                sender.join(10)


# ---------------------------------------------------------------------------------------------
# load: 2,000 bodies, 16 clients


def post_all(
    url: str, bodies: Sequence[str], clients: int = 16
) -> list[tuple[int, int, dict[str, Any]]]:
    """POST every body once from `clients` threads (one keep-alive client each)."""
    lock = threading.Lock()
    next_index = 0
    results: list[tuple[int, int, dict[str, Any]]] = []

    def worker() -> None:
        nonlocal next_index
        with client(url) as http:
            while True:
                with lock:
                    index = next_index
                    next_index += 1
                if index >= len(bodies):
                    return
                response = http.post(PAYLOADS, content=bodies[index])
                answer = response.json() if response.content else {}
                with lock:
                    results.append((index, response.status_code, answer))

    with ThreadPoolExecutor(max_workers=clients) as pool:
        for future in [pool.submit(worker) for _ in range(clients)]:
            future.result()
    return results


@pytest.mark.slow
def test_load_2000_bodies_16_clients_each_stored_once(tmp_path: Path, keys: JWKManager) -> None:
    total = 2000
    public = keys.get_public_jwks()
    # One body in four is `elastic` (PBKDF2 on both sides), the rest `jwe`; both kids.
    items = [
        (("rx-a", "rx-b")[i % 2], {"n": i, "nonce": uuid.uuid4().hex, "tags": ["x"] * (i % 7)})
        for i in range(total)
    ]
    elastic_indexes = [i for i in range(total) if i % 4 == 0]
    jwe_indexes = [i for i in range(total) if i % 4 != 0]
    bodies: list[str] = [""] * total
    for indexes, body_format in ((elastic_indexes, "elastic"), (jwe_indexes, "jwe")):
        encrypted = RequestEncryptor(public, format=body_format).encrypt_many(
            [items[i] for i in indexes]
        )
        for i, body in zip(indexes, encrypted, strict=True):
            bodies[i] = body

    db = tmp_path / "payloads.db"
    with ReceiverThread(create_app(keys.get_private_jwks(), sink=f"sqlite:///{db}")) as receiver:
        results = post_all(receiver.url, bodies)

    assert len(results) == total
    statuses = {status for _, status, _ in results}
    assert statuses == {202}, statuses
    answered = {answer["id"]: index for index, _, answer in results}
    assert len(answered) == total  # every id distinct
    rows = stored_rows(db)  # fails on a duplicate id
    assert len(rows) == total
    assert set(rows) == set(answered)
    for row_id, index in answered.items():
        kid, payload = items[index]
        assert rows[row_id]["payload"] == payload
        assert rows[row_id]["kid"] == kid
        assert rows[row_id]["format"] == ("elastic" if index % 4 == 0 else "jwe")


# ---------------------------------------------------------------------------------------------
# key rotation


def post_until_stopped(
    url: str,
    bodies: Sequence[str],
    stop: threading.Event,
    results: list[tuple[int, int, float]],
    clients: int = 8,
) -> None:
    """POST the bodies round and round from `clients` threads until `stop` is set.

    Appends (index, status, monotonic time of the answer) per request to `results`.
    """
    lock = threading.Lock()
    sent = 0

    def worker() -> None:
        nonlocal sent
        with client(url) as http:
            while not stop.is_set():
                with lock:
                    index = sent % len(bodies)
                    sent += 1
                status = http.post(PAYLOADS, content=bodies[index]).status_code
                results.append((index, status, time.monotonic()))

    with ThreadPoolExecutor(max_workers=clients) as pool:
        for future in [pool.submit(worker) for _ in range(clients)]:
            future.result()


@pytest.mark.slow
def test_rotation_under_load(
    tmp_path: Path, keys: JWKManager, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    old = JWKManager(keys.get_private_jwks())
    key_file = write_private_set(tmp_path / "private.json", old)
    db = tmp_path / "payloads.db"
    old_public = old.get_public_jwks()
    # body i carries {"old": i}; both kids, both formats
    old_bodies = RequestEncryptor(old_public, format="jwe").encrypt_many(
        [("rx-a", {"old": i}) for i in range(100)]
    ) + RequestEncryptor(old_public).encrypt_many([("rx-b", {"old": 100 + i}) for i in range(20)])

    with ReceiverThread(create_app(key_file, sink=f"sqlite:///{db}")) as receiver:
        with client(receiver.url) as http:
            etag_before = http.get(WELL_KNOWN).headers["etag"]
        results: list[tuple[int, int, float]] = []
        failures: list[BaseException] = []
        stop = threading.Event()

        def send_old_bodies() -> None:
            try:
                post_until_stopped(receiver.url, old_bodies, stop, results)
            except BaseException as exc:
                failures.append(exc)

        senders = threading.Thread(target=send_old_bodies)
        senders.start()
        try:
            wait_for(lambda: len(stored_rows(db)) >= 40, 30, "senders under way")

            # rotate as `request-crypto keys rotate` does: locked read-modify-write, replace
            with update_jwks(key_file) as document:
                manager = JWKManager(document)
                manager.add_key("rx-new")
                document["keys"] = manager.get_private_jwks()["keys"]
            rotated_at = time.monotonic()
            new_body = RequestEncryptor(manager.get_public_jwks(), format="jwe").encrypt(
                "rx-new", {"new": True}
            )

            with client(receiver.url) as http:
                statuses = []

                def new_kid_accepted() -> bool:
                    response = http.post(PAYLOADS, content=new_body)
                    statuses.append(response.status_code)
                    return response.status_code == 202

                wait_for(new_kid_accepted, 5, "a body for the new kid accepted")
                accepted_at = time.monotonic()
                took = accepted_at - rotated_at
                assert took < 2.0, f"the new kid was accepted only {took:.2f} s after the rotation"
                assert set(statuses) <= {422, 202}
                published = http.get(WELL_KNOWN)
                assert [k["kid"] for k in published.json()["keys"]] == ["rx-a", "rx-b", "rx-new"]
                assert all(set(k) <= set(PUBLIC_MEMBERS) for k in published.json()["keys"])
                assert published.headers["etag"] != etag_before
            # the old-kid senders kept going through the rotation: this was a rotation under load
            wait_for(
                lambda: any(at > accepted_at for *_, at in list(results)),
                10,
                "old-kid bodies accepted after the rotation",
            )
        finally:
            stop.set()
            senders.join(60)
        assert not senders.is_alive()
        assert not failures, failures
        sent_statuses = [status for _, status, _ in results]
        assert set(sent_statuses) == {202}, {s: sent_statuses.count(s) for s in sent_statuses}

        with client(receiver.url) as http:
            # a broken replacement is ignored (error log), the keys in use stay
            def reload_refused() -> bool:
                return any(
                    r.levelno == logging.ERROR and "cannot be used" in r.getMessage()
                    for r in caplog.records
                )

            broken = tmp_path / "broken.json"
            broken.write_text('{"keys": [ {"kty": "RSA", "kid": "half')
            os.replace(broken, key_file)
            wait_for(reload_refused, 5, "the broken key file reported")
            caplog.clear()
            write_jwks(key_file, manager.get_public_jwks())  # public only: useless here
            wait_for(reload_refused, 5, "the public-only key file reported")
            assert http.post(PAYLOADS, content=new_body).status_code == 202
            assert http.post(PAYLOADS, content=old_bodies[0]).status_code == 202
            assert len(http.get(WELL_KNOWN).json()["keys"]) == 3

            # and a good file after the broken ones is picked up again
            manager.add_key("rx-third")
            write_jwks(key_file, manager.get_private_jwks())
            wait_for(lambda: http.get("/healthz").json()["keys"] == 4, 2, "third key loaded")

    rows = stored_rows(db)
    assert len(rows) == len(results) + 3  # and the new kid's body twice, old body 0 once more
    old_payloads = sorted(r["payload"]["old"] for r in rows.values() if "old" in r["payload"])
    assert old_payloads == sorted([*(index for index, _, _ in results), 0])


# ---------------------------------------------------------------------------------------------
# sinks


class ListSink:
    """A plug-in sink: no base class, just the protocol's two methods."""

    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.records: list[ReceivedPayload] = []
        self.batches: list[int] = []
        self.delay = delay
        self.fail = fail
        self.closed = False
        self.lock = threading.Lock()

    def write_batch(self, records: Sequence[ReceivedPayload]) -> None:
        time.sleep(self.delay)
        if self.fail:
            raise OSError("disk on fire")
        with self.lock:
            self.records.extend(records)
            self.batches.append(len(records))

    def close(self) -> None:
        self.closed = True


def test_plug_in_sink_gets_payload_and_metadata_before_the_answer(keys: JWKManager) -> None:
    sink = ListSink(delay=0.05)
    assert isinstance(sink, Sink)
    encryptor = RequestEncryptor(keys.get_public_jwks(), format="jwe")
    bodies = [encryptor.encrypt("rx-b", {"i": i}) for i in range(32)]
    app = create_app(keys.get_private_jwks(), sink=sink)
    with ReceiverThread(app) as receiver:
        seen_before_answer = []

        def send(body: str) -> None:
            with client(receiver.url) as http:
                response = http.post(PAYLOADS, content=body)
                assert response.status_code == 202
                answer_id = response.json()["id"]
                with sink.lock:
                    seen_before_answer.append(any(r.id == answer_id for r in sink.records))

        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(send, bodies))
    assert seen_before_answer == [True] * len(bodies)
    assert sorted(r.payload["i"] for r in sink.records) == list(range(32))
    record = sink.records[0]
    assert record.kid == "rx-b"
    assert record.format == "jwe"
    assert record.metadata.key["alg"] == "RSA-OAEP-256"
    assert record.metadata.header["kid"] == "rx-b"
    assert json.loads(record.payload_json) == record.payload
    # 32 concurrent requests against a 50 ms sink: commits were shared, not one per request
    assert len(sink.batches) < len(bodies)
    assert not sink.closed  # the caller owns a sink object


def test_failing_sink_answers_503_and_the_server_keeps_serving(
    keys: JWKManager, caplog: pytest.LogCaptureFixture
) -> None:
    sink = ListSink(fail=True)
    marker = f"marker-{uuid.uuid4()}"
    body = RequestEncryptor(keys.get_public_jwks(), format="jwe").encrypt("rx-a", {"m": marker})
    with (
        ReceiverThread(create_app(keys.get_private_jwks(), sink=sink)) as receiver,
        client(receiver.url) as http,
    ):
        response = http.post(PAYLOADS, content=body)
        assert response.status_code == 503
        assert "retry" in response.json()["error"]
        sink.fail = False
        assert http.post(PAYLOADS, content=body).status_code == 202
        assert http.get("/healthz").status_code == 200
    assert any("disk on fire" in r.getMessage() for r in caplog.records)
    assert all(marker not in r.getMessage() for r in caplog.records)


def test_jsonl_sink_through_the_server(tmp_path: Path, keys: JWKManager) -> None:
    out = tmp_path / "payloads.jsonl"
    encryptor = RequestEncryptor(keys.get_public_jwks())
    payloads = [{"i": i, "text": "line\nbreak ✓"} for i in range(5)]
    with (
        ReceiverThread(create_app(keys.get_private_jwks(), sink=f"jsonl:///{out}")) as receiver,
        client(receiver.url) as http,
    ):
        ids = [
            http.post(PAYLOADS, content=encryptor.encrypt("rx-a", p)).json()["id"] for p in payloads
        ]
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 5
    records = [json.loads(line) for line in lines]
    assert [r["id"] for r in records] == ids
    assert [r["payload"] for r in records] == payloads
    assert {r["format"] for r in records} == {"elastic"}
    assert set(records[0]) == {"id", "received_at", "kid", "format", "payload"}


def make_record(payload: Any) -> ReceivedPayload:
    from request_crypto._json import dumps_utf8
    from request_crypto.keys.jwks import JWKMetadata

    return ReceivedPayload(
        id=str(uuid.uuid4()),
        received_at="2026-01-01T00:00:00.000000Z",
        kid="k",
        format="jwe",
        size=1,
        payload=payload,
        payload_json=dumps_utf8(payload).decode(),
        metadata=JWKMetadata({"kid": "k"}, [], {}),
    )


def test_stdout_and_jsonl_sinks_write_json_lines(tmp_path: Path) -> None:
    stream = io.BytesIO()
    sink = StdoutSink(stream)
    records = [make_record({"a": "ü"}), make_record([1, None]), make_record("\ud800")]
    sink.write_batch(records)
    lines = stream.getvalue().decode("utf-8").splitlines()
    assert [json.loads(line)["payload"] for line in lines] == [{"a": "ü"}, [1, None], "\ud800"]

    path = tmp_path / "out.jsonl"
    jsonl = JSONLSink(path)
    jsonl.write_batch(records[:1])
    jsonl.write_batch(records[1:])
    jsonl.close()
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == [
        r.id for r in records
    ]
    assert (path.stat().st_mode & 0o777) == 0o600


def test_sink_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    """They hold decrypted payloads: the database, its -wal and -shm, and the JSON lines."""
    previous = os.umask(0o022)
    try:
        sqlite = open_sink(f"sqlite:///{tmp_path / 'p.db'}")
        jsonl = open_sink(f"jsonl:///{tmp_path / 'p.jsonl'}")
    finally:
        os.umask(previous)
    try:
        sqlite.write_batch([make_record({"a": 1})])
        jsonl.write_batch([make_record({"a": 1})])
        names = sorted(path.name for path in tmp_path.iterdir())
        assert names == ["p.db", "p.db-shm", "p.db-wal", "p.jsonl"]  # while the db is open
        assert {
            name: stat.S_IMODE((tmp_path / name).stat().st_mode) for name in names
        } == dict.fromkeys(names, 0o600)
    finally:
        sqlite.close()
        jsonl.close()


def test_sqlite_sink_writes_on_after_a_failed_commit(tmp_path: Path) -> None:
    """A COMMIT that fails leaves the transaction open: it is rolled back, the next batch works.

    A deferred foreign key is checked at COMMIT, and SQLite keeps the transaction open when
    that check fails: a trigger turns kid "bad" into such a violation.
    """
    db = tmp_path / "p.db"
    sink = SQLiteSink(db)
    with contextlib.closing(sqlite3.connect(db)) as setup:
        setup.executescript(
            """
            CREATE TABLE parent (id INTEGER PRIMARY KEY);
            CREATE TABLE child (
                parent INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED
            );
            CREATE TRIGGER bad_kid AFTER INSERT ON payloads WHEN NEW.kid = 'bad'
            BEGIN INSERT INTO child (parent) VALUES (42); END;
            """
        )
    sink._db.execute("PRAGMA foreign_keys = ON")
    good, bad = make_record({"n": 1}), replace(make_record({"n": 2}), kid="bad")
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
        sink.write_batch([good, bad])
    later = make_record({"n": 3})
    sink.write_batch([later])  # before the fix: "cannot start a transaction within a transaction"
    sink.close()
    assert list(stored_rows(db)) == [later.id]


class ShortWrites:
    """`os` for the sinks module, whose writes stop halfway and then fail: a full disk."""

    def __init__(self) -> None:
        self.writes = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def write(self, fd: int, data: bytes) -> int:
        self.writes += 1
        if self.writes > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return os.write(fd, bytes(data)[: len(data) // 2])


def test_jsonl_sink_cuts_off_a_batch_that_failed_halfway(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "p.jsonl"
    sink = JSONLSink(path)
    first, failed, later = (make_record({"n": n, "pad": "x" * 100}) for n in range(3))
    sink.write_batch([first])
    size = path.stat().st_size
    with monkeypatch.context() as patch:
        patch.setattr(sinks_module, "os", ShortWrites())
        with pytest.raises(OSError, match="No space"):
            sink.write_batch([failed])
    assert path.stat().st_size == size  # the half line is gone
    sink.write_batch([later])
    sink.close()
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == [
        first.id,
        later.id,
    ]


def test_sqlite_sink_shared_by_two_writers(tmp_path: Path) -> None:
    """Two sinks on one file (as two worker processes have), each fed by its own thread."""
    db = tmp_path / "shared.db"
    sinks = [open_sink(f"sqlite:///{db}"), open_sink(f"sqlite:///{db}")]
    records = [make_record({"i": i}) for i in range(400)]

    def feed(which: int) -> None:
        mine = records[which::2]
        for start in range(0, len(mine), 10):
            sinks[which].write_batch(mine[start : start + 10])

    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(feed, [0, 1]))
    for sink in sinks:
        sink.close()
    rows = stored_rows(db)
    assert set(rows) == {r.id for r in records}
    assert sorted(row["payload"]["i"] for row in rows.values()) == list(range(400))


def test_sink_urls_and_sizes() -> None:
    assert parse_sink_url("sqlite:///payloads.db") == ("sqlite", Path("payloads.db"))
    assert parse_sink_url("sqlite:////var/lib/p.db") == ("sqlite", Path("/var/lib/p.db"))
    assert parse_sink_url("jsonl:///out/p.jsonl") == ("jsonl", Path("out/p.jsonl"))
    assert parse_sink_url("-") == ("stdout", None)
    for bad in ("mysql://x/y", "sqlite://", "sqlite:///", "payloads.db", "jsonl:/x"):
        with pytest.raises(SinkURLError):
            parse_sink_url(bad)
    assert parse_size("1048576") == 1048576
    assert parse_size("64MiB") == 64 * 1024 * 1024
    assert parse_size("10MB") == 10_000_000
    assert parse_size("512 KiB") == 512 * 1024
    assert parse_size("1g") == 1024**3
    assert parse_size("1.5KiB") == 1536
    for bad in ("", "0", "-5", "ten", "5 parsecs", "MiB"):
        with pytest.raises(InvalidArgumentError):
            parse_size(bad)


def test_create_app_refuses_bad_settings(tmp_path: Path, keys: JWKManager) -> None:
    with pytest.raises(SinkURLError):
        create_app(keys.get_private_jwks(), sink="nope://")
    with pytest.raises(InvalidArgumentError, match="max_body"):
        create_app(keys.get_private_jwks(), sink="-", max_body=0)
    with pytest.raises(InvalidArgumentError, match="no private key"):
        create_app(keys.get_public_jwks(), sink="-")
    public_file = tmp_path / "public.json"
    write_jwks(public_file, keys.get_public_jwks())
    with pytest.raises(InvalidArgumentError, match="no private key"):
        create_app(public_file, sink="-")


# ---------------------------------------------------------------------------------------------
# ReceiverThread


def lifespan_app(startup: Callable[[], Any]) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await startup()
        yield

    return Starlette(lifespan=lifespan)


def test_receiver_thread_stop_before_start_closes_its_socket() -> None:
    receiver = ReceiverThread(lifespan_app(anyio.lowlevel.checkpoint))
    receiver.stop()
    assert receiver._socket.fileno() == -1


async def failing_startup() -> None:
    raise RuntimeError("the sink cannot be opened")


def test_receiver_thread_start_failure_stops_and_closes() -> None:
    receiver = ReceiverThread(lifespan_app(failing_startup))
    with pytest.raises(RuntimeError, match="stopped during startup"):
        receiver.start()
    assert receiver._socket.fileno() == -1
    receiver.stop()  # harmless after a failed start


def test_receiver_thread_start_timeout_stops_and_closes() -> None:
    receiver = ReceiverThread(lifespan_app(lambda: anyio.sleep(1.5)))
    with pytest.raises(TimeoutError, match="did not start"):
        receiver.start(timeout=0.1)
    assert receiver._socket.fileno() == -1
    receiver._thread.join(10)  # the slow startup ends, then the server stops by itself
    assert not receiver._thread.is_alive()
