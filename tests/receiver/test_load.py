"""The receiver under pressure, through a real server: oversize bodies (413 while streaming),
large-body slots, 2,000 bodies from 16 clients, and key rotation under load.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from request_crypto import JWKManager, RequestEncryptor
from request_crypto.keyfile import update_jwks, write_jwks
from request_crypto.keys.jwks import PUBLIC_MEMBERS
from request_crypto.receiver import (
    create_app,
)
from request_crypto.receiver.app import SMALL_BODY
from request_crypto.receiver.testing import ReceiverThread
from tests.receiver.helpers import (
    LOGGER,
    PAYLOADS,
    WELL_KNOWN,
    ListSink,
    client,
    stored_rows,
    wait_for,
    write_private_set,
)

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
    # Exactly once: each body sent (round and round, and old body 0 once more) is one row, and
    # so is the new kid's body, accepted twice.
    sent = {index for index, _, _ in results} | {0}
    assert len(rows) == len(sent) + 1
    old_payloads = sorted(r["payload"]["old"] for r in rows.values() if "old" in r["payload"])
    assert old_payloads == sorted(sent)
