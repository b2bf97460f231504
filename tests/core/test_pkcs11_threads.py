"""A module's token thread (`_pkcs11_session.Module`) and the direct C_Decrypt
(`_pkcs11_direct`): calls queue behind a busy module and run in turn on one thread holding its
lock; errors go back to their caller; the thread ends on close, when idle, and is not inherited
by a forked child; the unwrap through the function list answers as python-pkcs11 does."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from pkcs11 import exceptions as p11

from request_crypto import RequestDecryptor, RequestEncryptor
from request_crypto.errors import DecryptionError
from request_crypto.keys import _pkcs11_session
from request_crypto.keys._pkcs11_direct import direct_decrypt
from request_crypto.keys._pkcs11_session import Module
from request_crypto.keys.pkcs11 import PKCS11KeySource, generate_key
from tests.core.test_key_source_processes import _in_child

WAIT = 30.0  # generous: the machine is shared


@contextmanager
def _busy(module: Module) -> Iterator[None]:
    """Hold the module's lock on another thread, so that calls queue for the token thread."""
    held, leave = threading.Event(), threading.Event()

    def hold() -> None:
        with module.lock:
            held.set()
            leave.wait(WAIT)

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(WAIT)
    try:
        yield
    finally:
        leave.set()
        holder.join(WAIT)


def _callers(module: Module, actions: list[Callable[[], Any]]) -> list[Any]:
    """Each action through `module.run` from its own thread; what each returned or raised."""
    results: list[Any] = [None] * len(actions)

    def call(i: int) -> None:
        try:
            results[i] = module.run(actions[i])
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(actions))]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + WAIT
    while len(module._jobs) < len(actions) and time.monotonic() < deadline:
        time.sleep(0.005)  # all queued behind the busy module
    return [threads, results]


def _join(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join(WAIT)
        assert not thread.is_alive()


def test_an_idle_module_runs_the_call_on_the_callers_thread() -> None:
    module = Module()
    assert module.run(threading.current_thread) is threading.current_thread()
    assert module.thread is None and module.served == 0


def test_a_busy_module_queues_calls_for_one_thread_that_survives_their_errors() -> None:
    module = Module()
    running, overlaps, ran_on = [0], [0], set()

    def action(i: int) -> Callable[[], Any]:
        def run() -> Any:
            running[0] += 1
            overlaps[0] = max(overlaps[0], running[0])
            ran_on.add(threading.current_thread().name)
            assert module.lock._is_owned()  # type: ignore[attr-defined]
            time.sleep(0.001)
            running[0] -= 1
            if i % 3 == 0:
                raise ValueError(f"call {i}")
            return i * 10

        return run

    with _busy(module):
        threads, results = _callers(module, [action(i) for i in range(24)])
    _join(threads)
    for i, result in enumerate(results):
        if i % 3 == 0:
            assert isinstance(result, ValueError) and str(result) == f"call {i}"
        else:
            assert result == i * 10
    assert overlaps[0] == 1 and ran_on == {"request-crypto-pkcs11"}
    assert module.served == 24
    thread = module.thread
    assert thread is not None and thread.is_alive()  # the errors did not end it
    with _busy(module):
        threads, results = _callers(module, [lambda: "after"])
    _join(threads)
    assert results == ["after"] and module.thread is thread


def test_the_token_thread_keeps_the_lock_a_moment_for_the_next_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Within THREAD_LINGER of its queue emptying, the next call is still the token thread's:
    the lock is not handed back (to wait for the GIL) between two bodies."""
    monkeypatch.setattr(_pkcs11_session, "THREAD_LINGER", WAIT)
    module = Module()
    with _busy(module):
        threads, results = _callers(module, [lambda: 1])
    _join(threads)
    assert results == [1]
    assert module.run(lambda: threading.current_thread().name) == "request-crypto-pkcs11"
    assert module.served == 2
    thread = module.stop()
    assert thread is not None
    thread.join(WAIT)
    assert not thread.is_alive()
    assert module.run(threading.current_thread) is threading.current_thread()  # idle: inline


def test_a_call_made_from_a_queued_call_runs_at_once() -> None:
    module = Module()
    with _busy(module):
        threads, results = _callers(module, [lambda: module.run(lambda: "nested")])
    _join(threads)
    assert results == ["nested"]


def test_stop_ends_the_thread_and_the_next_busy_call_starts_another() -> None:
    module = Module()
    assert module.stop() is None  # no thread: nothing to stop
    with _busy(module):
        threads, _ = _callers(module, [lambda: 1, lambda: 2])
    _join(threads)
    first = module.stop()
    assert first is not None
    first.join(WAIT)
    assert not first.is_alive() and module.thread is None
    with _busy(module):
        threads, results = _callers(module, [lambda: 3])
    _join(threads)
    assert results == [3] and module.thread not in (None, first)


def test_an_idle_thread_ends_by_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_pkcs11_session, "THREAD_IDLE", 0.05)
    module = Module()
    with _busy(module):
        threads, _ = _callers(module, [lambda: 1])
    _join(threads)
    thread = module.thread
    assert thread is not None
    thread.join(WAIT)
    assert not thread.is_alive() and module.thread is None


@pytest.fixture(scope="module")
def thread_uri(softhsm: Any) -> str:
    generate_key(softhsm.uri("thr-1", token="rc-thread"))
    return str(softhsm.uri("thr-1", token="rc-thread"))


@pytest.fixture
def thread_source(thread_uri: str) -> Iterator[PKCS11KeySource]:
    """The only source open on its token while a test runs (closed after it)."""
    source = PKCS11KeySource(thread_uri)
    yield source
    source.close()


def _bodies(source: PKCS11KeySource, count: int) -> list[str]:
    public = {"keys": [source.public_jwk("thr-1")]}
    encryptor = RequestEncryptor(public, format="jwe")
    return [encryptor.encrypt("thr-1", {"i": i}) for i in range(count)]


def test_many_threads_get_their_own_plaintexts_through_the_token_thread(
    thread_source: PKCS11KeySource,
) -> None:
    bodies = _bodies(thread_source, 96)
    other = RequestEncryptor({"keys": [_foreign_public()]}, format="jwe").encrypt(
        "thr-1", {"i": -1}
    )
    decryptor = RequestDecryptor(thread_source)
    module = thread_source._token.module
    served = module.served
    results: dict[int, Any] = {}

    def work(start: int) -> None:
        for i in range(start, len(bodies), 8):
            results[i] = decryptor.decrypt(bodies[i])
            try:
                decryptor.decrypt(other)  # refused by the token: the body's error only
            except DecryptionError as exc:
                results[-1 - i] = type(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    _join(threads)
    assert [results[i] for i in range(len(bodies))] == [{"i": i} for i in range(len(bodies))]
    assert [results[-1 - i] for i in range(len(bodies))] == [DecryptionError] * len(bodies)
    assert module.served > served  # calls met a busy module and queued


def _foreign_public() -> dict[str, Any]:
    from request_crypto.keys.jwks import JWKManager

    manager = JWKManager()
    manager.add_key("thr-1")
    return manager.get_public_jwks()["keys"][0]


def test_closing_the_last_source_on_a_token_ends_the_token_thread(thread_uri: str) -> None:
    source = PKCS11KeySource(thread_uri)
    module = source._token.module
    body = _bodies(source, 1)[0]
    with _busy(module):
        threads, results = _callers(module, [lambda: RequestDecryptor(source).decrypt(body)])
    _join(threads)
    thread = module.thread
    assert results == [{"i": 0}] and thread is not None
    source.close()
    thread.join(WAIT)
    assert not thread.is_alive() and module.thread is None


def test_a_forked_child_starts_its_own_token_thread(thread_source: PKCS11KeySource) -> None:
    bodies = _bodies(thread_source, 32)
    decryptor = RequestDecryptor(thread_source)
    module = thread_source._token.module
    with _busy(module):
        threads, _ = _callers(module, [lambda: 1])
    _join(threads)
    assert module.thread is not None  # the parent has one

    def child() -> Any:
        inherited = module.thread
        results: list[Any] = decryptor.decrypt_many(bodies, workers=4)
        return [inherited is None, results == [{"i": i} for i in range(32)], os.getpid()]

    inherited_none, right, _ = _in_child(child)
    assert inherited_none and right
    assert decryptor.decrypt(bodies[0]) == {"i": 0}  # the parent's thread and session still work


def test_the_direct_decrypt_answers_as_python_pkcs11(thread_source: PKCS11KeySource) -> None:
    body = _bodies(thread_source, 1)[0]
    decryptor = RequestDecryptor(thread_source)
    assert thread_source._direct is not None  # used on Linux
    assert decryptor.decrypt(body) == {"i": 0}
    direct = thread_source._direct
    try:
        thread_source._direct = None  # python-pkcs11's own decrypt: the same answers
        assert decryptor.decrypt(body) == {"i": 0}
    finally:
        thread_source._direct = direct
    key = thread_source.key("thr-1")
    assert key is not None
    from request_crypto.keys.pkcs11 import _DIRECT_OAEP

    with pytest.raises(p11.SessionHandleInvalid):  # a CKR_ code becomes python-pkcs11's class
        direct.decrypt(0xDEAD, 1, _DIRECT_OAEP["RSA-OAEP"], b"\0" * 256, 256)
    assert direct_decrypt("/nonexistent/libnothing.so") is None  # python-pkcs11 is used
