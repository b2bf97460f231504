"""An HSM that fails, or disappears and comes back, against SoftHSM2 through the receiver.

SoftHSM answers bad OAEP padding with CKR_GENERAL_ERROR, the answer a failing device may also
give: the source probes the token with a known-good ciphertext to tell a bad body (400) from
a failing token (503, /healthz failing). A failing token is made here by giving the key's
object file another key's content (SoftHSM re-reads an object whose generation grew): every
decrypt with that handle, the probe's too, then answers CKR_GENERAL_ERROR. A lost device is
the token's directory moved away; it comes back when moved back.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from interop.softhsm import token_dir
from request_crypto import RequestEncryptor
from request_crypto.keys.pkcs11 import PROBE_TTL, PKCS11KeySource, generate_key
from request_crypto.receiver import create_app
from request_crypto.receiver.testing import ReceiverThread
from tests.receiver.helpers import PAYLOADS, WELL_KNOWN, client, flip_part, wait_for

PAYLOAD = {"event": "hsm"}


def _objects(token: Path) -> set[Path]:
    return set(token.glob("*.object")) - {token / "token.object"}


@contextmanager
def _key_swapped(token: Path, key: set[Path], other: set[Path]) -> Iterator[None]:
    """The private-key object file of `key` holds `other`'s key meanwhile (generation bumped,
    so SoftHSM re-reads it); restored (generation bumped again) afterwards."""
    target = max(key, key=lambda p: p.stat().st_size)  # the private key's file is the larger
    source = max(other, key=lambda p: p.stat().st_size)
    saved = target.read_bytes()
    generation = int.from_bytes(saved[:8], "big")
    target.write_bytes((generation + 1).to_bytes(8, "big") + source.read_bytes()[8:])
    try:
        yield
    finally:
        target.write_bytes((generation + 2).to_bytes(8, "big") + saved[8:])


def _healthy(http: httpx.Client) -> bool:
    return http.get("/healthz").status_code == 200


def test_a_bad_body_is_400_and_a_failing_token_503(softhsm: Any, tmp_path: Path) -> None:
    token = token_dir("rc-fault")
    generate_key(softhsm.uri("fault-1", token="rc-fault"))
    first = _objects(token)
    generate_key(softhsm.uri("fault-2", token="rc-fault"))
    second = _objects(token) - first
    source = PKCS11KeySource(softhsm.uri("fault-1", token="rc-fault"))
    app = create_app(source, sink=f"jsonl:///{tmp_path / 'p.jsonl'}")
    with ReceiverThread(app) as receiver, client(receiver.url) as http:
        encryptor = RequestEncryptor(http.get(WELL_KNOWN).json(), format="jwe")
        assert http.post(PAYLOADS, content=encryptor.encrypt("fault-1", PAYLOAD)).status_code == 202

        # Hostile bodies: the token says CKR_GENERAL_ERROR, the probe says the token works.
        time.sleep(PROBE_TTL)  # past the verdict of the good body: the next one probes
        probes, started = source.probes, time.monotonic()
        for _ in range(40):
            bad = flip_part(encryptor.encrypt("fault-1", PAYLOAD), 1)  # the wrapped key
            answer = http.post(PAYLOADS, content=bad)
            assert answer.status_code == 400, answer.text
        elapsed = time.monotonic() - started
        assert 1 <= source.probes - probes <= 1 + elapsed / PROBE_TTL  # no probe flood
        assert _healthy(http)

        # A failing token: the same answer, to good bodies and to the probe.
        with _key_swapped(token, first, second):
            time.sleep(PROBE_TTL)
            answer = http.post(PAYLOADS, content=encryptor.encrypt("fault-1", PAYLOAD))
            assert answer.status_code == 503, answer.text
            assert int(answer.headers["retry-after"]) > 0
            health = http.get("/healthz")
            assert health.status_code == 503
            assert "pkcs11:token=rc-fault" in health.json()["reason"]
        # Restored: the source logs in again and probes by itself.
        wait_for(lambda: _healthy(http), 30, "the token healthy again")
        assert http.post(PAYLOADS, content=encryptor.encrypt("fault-1", PAYLOAD)).status_code == 202


def test_a_lost_token_is_503_until_it_comes_back(softhsm: Any, tmp_path: Path) -> None:
    uri = softhsm.uri("lost-1", token="rc-lost")
    generate_key(uri)
    app = create_app(uri, sink=f"jsonl:///{tmp_path / 'p.jsonl'}")
    token = token_dir("rc-lost")
    away = token.with_name(token.name + ".away")
    with ReceiverThread(app) as receiver, client(receiver.url) as http:
        encryptor = RequestEncryptor(http.get(WELL_KNOWN).json(), format="jwe")
        assert http.post(PAYLOADS, content=encryptor.encrypt("lost-1", PAYLOAD)).status_code == 202
        os.rename(token, away)
        try:
            for _ in range(3):  # the loss, then the attempts to log in again
                answer = http.post(PAYLOADS, content=encryptor.encrypt("lost-1", PAYLOAD))
                assert answer.status_code == 503, answer.text
                assert "retry-after" in answer.headers
            health = http.get("/healthz")
            assert health.status_code == 503 and "rc-lost" in health.json()["reason"]
        finally:
            os.rename(away, token)
        took = wait_for(lambda: _healthy(http), 30, "the token back in use")
        print(f"token back in use {took:.2f} s after its directory returned")
        for _ in range(3):
            answer = http.post(PAYLOADS, content=encryptor.encrypt("lost-1", PAYLOAD))
            assert answer.status_code == 202, answer.text
