"""decrypt_many / encrypt_many / the async helpers: order, failures kept, workers used.

Correctness only: how fast they go is scripts/bench.py's business, never a timed test.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import threading
import time
from typing import Any

import pytest

from request_crypto import Format, RequestDecryptor, RequestEncryptor
from request_crypto.errors import (
    BatchError,
    DecryptionError,
    MalformedBodyError,
    MissingKidError,
    NoKeyFoundError,
    RequestCryptoError,
)

KID = "kibana_1"


@pytest.fixture(scope="module")
def decryptor(private_jwks: dict[str, Any]) -> RequestDecryptor:
    return RequestDecryptor(private_jwks)


@pytest.fixture(scope="module")
def encryptor(public_jwks: dict[str, Any]) -> RequestEncryptor:
    return RequestEncryptor(public_jwks)


@pytest.fixture(scope="module")
def bodies(encryptor: RequestEncryptor, public_jwks: dict[str, Any]) -> list[str]:
    """Twelve bodies, both formats, payloads of different sizes (some past one base64 chunk)."""
    jwe = RequestEncryptor(public_jwks, format=Format.JWE)
    return [
        (encryptor if i % 3 else jwe).encrypt(KID, {"i": i, "pad": "x" * (i * 40_000)})
        for i in range(12)
    ]


def expected(count: int) -> list[dict[str, Any]]:
    return [{"i": i, "pad": "x" * (i * 40_000)} for i in range(count)]


@pytest.mark.parametrize("workers", [1, 2, 5, 64, None])
def test_decrypt_many_returns_every_result_in_order(
    decryptor: RequestDecryptor, bodies: list[str], workers: int | None
) -> None:
    assert decryptor.decrypt_many(bodies, workers=workers) == expected(len(bodies))


def test_decrypt_many_takes_any_iterable_once(
    decryptor: RequestDecryptor, bodies: list[str]
) -> None:
    assert decryptor.decrypt_many(b for b in bodies[:4]) == expected(4)
    assert decryptor.decrypt_many((b.encode() for b in bodies[:4]), workers=2) == expected(4)


def test_decrypt_many_runs_on_up_to_workers_threads(
    monkeypatch: pytest.MonkeyPatch, decryptor: RequestDecryptor, bodies: list[str]
) -> None:
    threads: set[int] = set()
    barrier = threading.Barrier(3, timeout=30)
    decrypt = RequestDecryptor.decrypt

    def recording(self: RequestDecryptor, body: str | bytes) -> Any:
        threads.add(threading.get_ident())
        if len(threads) <= 3:
            barrier.wait()  # the first three run at once: three threads, not one after another
        return decrypt(self, body)

    monkeypatch.setattr(RequestDecryptor, "decrypt", recording)
    assert decryptor.decrypt_many(bodies, workers=3) == expected(len(bodies))
    assert len(threads) == 3
    assert threading.get_ident() not in threads

    threads.clear()
    barrier = threading.Barrier(1)
    assert decryptor.decrypt_many(bodies[:3], workers=1) == expected(3)
    assert threads == {threading.get_ident()}  # one worker: the calling thread, no pool


def pool_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("request-crypto")}


def test_batch_threads_are_kept_between_calls_and_replaced_for_another_size(
    monkeypatch: pytest.MonkeyPatch, private_jwks: dict[str, Any], bodies: list[str]
) -> None:
    decryptor = RequestDecryptor(private_jwks)
    used: list[threading.Thread] = []  # the Thread objects themselves: idents get recycled
    decrypt = RequestDecryptor.decrypt

    def recording(self: RequestDecryptor, body: str | bytes) -> Any:
        used.append(threading.current_thread())
        return decrypt(self, body)

    monkeypatch.setattr(RequestDecryptor, "decrypt", recording)
    for _ in range(3):
        assert decryptor.decrypt_many(bodies, workers=2) == expected(len(bodies))
    assert 1 <= len(set(used)) <= 2  # three calls, the same (at most two) threads
    first = set(used)
    used.clear()
    assert decryptor.decrypt_many(bodies, workers=3) == expected(len(bodies))
    assert not set(used) & first  # another size: a new pool of its own


def test_batch_threads_end_with_their_owner(
    private_jwks: dict[str, Any], bodies: list[str]
) -> None:
    before = pool_threads()
    decryptor = RequestDecryptor(private_jwks)
    decryptor.decrypt_many(bodies[:4], workers=2)
    started = pool_threads() - before
    assert started
    del decryptor
    gc.collect()
    for thread in started:
        thread.join(timeout=30)
        assert not thread.is_alive()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_starts_batch_threads_of_its_own(
    private_jwks: dict[str, Any], bodies: list[str]
) -> None:
    """The child's copy of the parent's pool has no threads: using it would hang forever."""
    decryptor = RequestDecryptor(private_jwks)
    decryptor.decrypt_many(bodies[:4], workers=2)
    pid = os.fork()
    if pid == 0:  # the child: exit status 0 only for the right results
        code = 1
        try:
            code = 0 if decryptor.decrypt_many(bodies[:4], workers=2) == expected(4) else 1
        finally:
            os._exit(code)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail("decrypt_many in a forked child hung: it used the parent's thread pool")


def test_decrypt_many_keeps_the_good_results_beside_the_failures(
    decryptor: RequestDecryptor, bodies: list[str], js_bodies: dict[str, Any]
) -> None:
    tampered = bodies[1][:-8] + ("A" if bodies[1][-8] != "A" else "B") + bodies[1][-7:]
    batch = [bodies[0], "not a body", bodies[2], js_bodies["foreign_body"], tampered, bodies[3]]
    kinds = {1: MalformedBodyError, 3: NoKeyFoundError, 4: (MalformedBodyError, DecryptionError)}
    for workers in (1, 3):
        with pytest.raises(BatchError) as caught:
            decryptor.decrypt_many(batch, workers=workers)
        error = caught.value
        assert sorted(error.failures) == [1, 3, 4]
        for index, kind in kinds.items():
            assert isinstance(error.failures[index], kind)
            assert error.results[index] is error.failures[index]
        assert [error.results[i] for i in (0, 2, 5)] == [expected(4)[i] for i in (0, 2, 3)]
        assert "3 of 6 items failed (first at index 1" in str(error)

        results = decryptor.decrypt_many(batch, workers=workers, return_exceptions=True)
        assert [isinstance(r, RequestCryptoError) for r in results] == [
            False, True, False, True, True, False,
        ]  # fmt: skip


def test_a_bug_is_not_a_failed_item(
    monkeypatch: pytest.MonkeyPatch, decryptor: RequestDecryptor, bodies: list[str]
) -> None:
    """Only RequestCryptoError is collected per item; anything else still propagates."""

    def broken(self: RequestDecryptor, body: str | bytes) -> Any:
        raise ZeroDivisionError

    monkeypatch.setattr(RequestDecryptor, "decrypt", broken)
    for workers in (1, 2):
        with pytest.raises(ZeroDivisionError):
            decryptor.decrypt_many(bodies[:3], workers=workers)


@pytest.mark.parametrize("workers", [1, 4])
def test_encrypt_many_in_order_and_failures_kept(
    encryptor: RequestEncryptor, decryptor: RequestDecryptor, workers: int
) -> None:
    items = [(KID, {"i": i, "pad": "y" * (i * 50_000)}) for i in range(6)]
    bodies = encryptor.encrypt_many(items, workers=workers)
    assert len(set(bodies)) == len(bodies)  # a fresh passphrase, salt and IV for each
    assert decryptor.decrypt_many(bodies, workers=workers) == [p for _, p in items]

    items[2] = ("kibana_9", {"i": 2})
    items[4] = (KID, {"not json": {1, 2}})
    with pytest.raises(BatchError) as caught:
        encryptor.encrypt_many(items, workers=workers)
    failures = caught.value.failures
    assert sorted(failures) == [2, 4]
    assert isinstance(failures[2], MissingKidError)
    good = [r for i, r in enumerate(caught.value.results) if i not in failures]
    assert decryptor.decrypt_many(good) == [items[i][1] for i in (0, 1, 3, 5)]


def test_async_helpers_round_trip_large_payloads_concurrently(
    encryptor: RequestEncryptor, decryptor: RequestDecryptor
) -> None:
    payloads = [{"i": i, "pad": "z" * (i * 300_000)} for i in range(4)]

    async def main() -> list[Any]:
        bodies = await asyncio.gather(*(encryptor.encrypt_async(KID, p) for p in payloads))
        return await asyncio.gather(*(decryptor.decrypt_async(b) for b in bodies))

    assert asyncio.run(main()) == payloads

    async def failing() -> None:
        await decryptor.decrypt_async("not a body")

    with pytest.raises(MalformedBodyError):
        asyncio.run(failing())


def test_async_helpers_run_on_one_thread_per_core(
    encryptor: RequestEncryptor, decryptor: RequestDecryptor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not the loop's default executor (cpu_count + 4 threads): a burst of gathered calls
    must not run more PBKDF2s at once than there are cores, nor block the loop."""
    seen: set[str] = set()
    decrypt = RequestDecryptor.decrypt

    def noting(self: RequestDecryptor, body: str | bytes) -> Any:
        seen.add(threading.current_thread().name)
        return decrypt(self, body)

    monkeypatch.setattr(RequestDecryptor, "decrypt", noting)
    body = encryptor.encrypt(KID, {"a": 1})

    async def main() -> list[Any]:
        return await asyncio.gather(*(decryptor.decrypt_async(body) for _ in range(24)))

    assert asyncio.run(main()) == [{"a": 1}] * 24
    assert threading.current_thread().name not in seen
    assert all(name.startswith("request-crypto") for name in seen), seen
    assert len(seen) <= (os.cpu_count() or 1)
