"""The deployment of docs/deployment.md, run: PostgreSQL, three `serve` replicas, HAProxy.

Concurrent senders post a few thousand distinct bodies through HAProxy (and some bodies twice
on purpose), retrying on 502/503/504 and on connection errors as a real sender does. Meanwhile
one replica is killed with SIGKILL (and later started again) and PostgreSQL is restarted.
Then every body is in the table exactly once, under the id its sender was answered, and no
row exists that no sender was answered for.
"""

from __future__ import annotations

import collections
import json
import random
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from benchmarks.postgres import HAProxy, replicas
from request_crypto import RequestEncryptor
from request_crypto.receiver.pgtesting import PostgresCluster
from request_crypto.receiver.sinks import idempotency_key

pytestmark = pytest.mark.slow

BODIES = 3000
DUPLICATES = 40  # bodies a sender sends again after its 202, as a sender unsure of a send
SENDERS = 12
RETRY = {502, 503, 504}
HEALTH = "/readyz"


def send_all(
    url: str,
    queue: list[str],
    answers: dict[str, list[str]],
    retried: collections.Counter[str],
    stop: float,
) -> None:
    """Post each body until it is answered 202; record each answered id under its body."""
    lock = threading.Lock()
    problems: list[str] = []

    def sender() -> None:
        with httpx.Client(timeout=10.0) as client:
            while True:
                with lock:
                    if not queue:
                        return
                    body = queue.pop()
                while time.monotonic() < stop:
                    try:
                        response = client.post(url + "/v1/payloads", content=body)
                    except httpx.TransportError as exc:
                        with lock:
                            retried[type(exc).__name__] += 1
                        time.sleep(0.05)
                        continue
                    if response.status_code in RETRY:
                        with lock:
                            retried[str(response.status_code)] += 1
                        time.sleep(0.05)
                        continue
                    with lock:
                        if response.status_code == 202:
                            answers.setdefault(body, []).append(response.json()["id"])
                        else:
                            problems.append(f"{response.status_code}: {response.text[:200]}")
                    break
                else:
                    problems.append("a body was not accepted before the deadline")
                    return

    threads = [threading.Thread(target=sender) for _ in range(SENDERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert problems == []


def test_replicas_behind_haproxy_store_every_acknowledged_body_exactly_once(
    postgres: PostgresCluster,
    private_jwks: dict[str, Any],
    public_jwks: dict[str, Any],
    tmp_path: Path,
) -> None:
    url = postgres.create_database("deployment")
    key_file = tmp_path / "private.json"
    key_file.write_text(json.dumps(private_jwks))
    key_file.chmod(0o600)
    kid = public_jwks["keys"][0]["kid"]
    bodies = RequestEncryptor(public_jwks, format="jwe").encrypt_many(
        [(kid, {"n": i, "pad": "x" * 200}) for i in range(BODIES)]
    )
    queue = [*bodies, *random.Random(1).sample(bodies, DUPLICATES)]
    random.Random(2).shuffle(queue)
    answers: dict[str, list[str]] = {}
    retried: collections.Counter[str] = collections.Counter()
    with (
        replicas(3, key_file, url, tmp_path) as three,
        HAProxy(three, tmp_path, health=HEALTH) as proxy,
    ):
        started = time.monotonic()
        senders = threading.Thread(
            target=send_all, args=(proxy.url, queue, answers, retried, started + 50), daemon=True
        )
        senders.start()

        def progress() -> int:
            return sum(len(ids) for ids in list(answers.values()))

        def wait_for_answers(count: int) -> None:
            while progress() < count and senders.is_alive():
                time.sleep(0.02)

        wait_for_answers(BODIES // 5)
        three[1].kill()  # mid-run, mid-batch: no drain, no goodbye
        wait_for_answers(BODIES // 2)
        postgres.restart()
        wait_for_answers(3 * BODIES // 4)
        three[1].start()
        senders.join(60)
        elapsed = time.monotonic() - started
        assert not senders.is_alive(), "the senders did not finish"
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT id, idempotency_key FROM payloads").fetchall()
    print(f"{BODIES + DUPLICATES} sends in {elapsed:.1f} s, retried: {dict(retried)}")
    assert retried, "the faults reached no sender: the run proves nothing about them"
    answered = {body: set(ids) for body, ids in answers.items()}
    assert len(answered) == BODIES  # every body was acknowledged...
    assert all(len(ids) == 1 for ids in answered.values())  # ...with one id, even when resent
    assert sum(len(ids) for ids in answers.values()) == BODIES + DUPLICATES
    stored = dict((key, row_id) for row_id, key in rows)
    assert len(rows) == len(stored) == BODIES  # exactly once: no key twice, none missing
    for body, ids in answered.items():
        assert stored[idempotency_key(body.encode())] == next(iter(ids))
    # Nothing unacknowledged counts as delivered: every row is one a sender was answered for.
    assert {row_id for row_id, _ in rows} == {i for ids in answered.values() for i in ids}
