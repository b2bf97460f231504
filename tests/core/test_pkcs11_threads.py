"""Threads and PKCS#11 modules (`_pkcs11_session`, `_pkcs11_serial`, `_pkcs11_direct`).

A module initialised with OS locking: the decrypt threads are inside it at once, each on a
session of the token's pool (bounded); a fork waits for the calls inside; a forked child opens
its own pool. A module refusing OS locking keeps the serialised path: calls queue behind a busy
module and run in turn on its token thread, holding its lock; errors go back to their caller;
the thread ends on close, when idle, and is not inherited by a forked child. The unwrap through
the function list answers as python-pkcs11 does."""

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
from request_crypto.errors import DecryptionError, KeySourceUnavailableError
from request_crypto.keys import _pkcs11_serial, _pkcs11_session
from request_crypto.keys._pkcs11_direct import DirectCalls, direct_calls
from request_crypto.keys._pkcs11_serial import ModuleLock
from request_crypto.keys.pkcs11 import PKCS11URI, PKCS11KeySource, generate_key
from tests.core.test_key_source_processes import _in_child

WAIT = 30.0  # generous: the machine is shared


@contextmanager
def _busy(module: ModuleLock) -> Iterator[None]:
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


def _callers(module: ModuleLock, actions: list[Callable[[], Any]]) -> list[Any]:
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
    module = ModuleLock()
    assert module.run(threading.current_thread) is threading.current_thread()
    assert module.thread is None and module.served == 0


def test_a_busy_module_queues_calls_for_one_thread_that_survives_their_errors() -> None:
    module = ModuleLock()
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
    monkeypatch.setattr(_pkcs11_serial, "THREAD_LINGER", WAIT)
    module = ModuleLock()
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
    module = ModuleLock()
    with _busy(module):
        threads, results = _callers(module, [lambda: module.run(lambda: "nested")])
    _join(threads)
    assert results == ["nested"]


def test_stop_ends_the_thread_and_the_next_busy_call_starts_another() -> None:
    module = ModuleLock()
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
    monkeypatch.setattr(_pkcs11_serial, "THREAD_IDLE", 0.05)
    module = ModuleLock()
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


class _Counting:
    """Stands for a source's DirectCalls: how many threads were in the unwrap at once."""

    def __init__(self, real: Any) -> None:
        self.real, self.inside, self.most = real, 0, 0
        self.lock = threading.Lock()

    def decrypt(self, *args: Any) -> bytes:
        with self.lock:
            self.inside += 1
            self.most = max(self.most, self.inside)
        try:
            result: bytes = self.real.decrypt(*args)
            return result
        finally:
            with self.lock:
                self.inside -= 1


def _run_with(
    source: PKCS11KeySource, stand_in: Any, work: Callable[[int], None], count: int
) -> None:
    """`work(0)` .. `work(count - 1)` on threads of their own, the source unwrapping through
    `stand_in` (which calls its real DirectCalls) meanwhile."""
    real = source._direct
    source._direct = stand_in
    try:
        threads = [threading.Thread(target=work, args=(n,)) for n in range(count)]
        for thread in threads:
            thread.start()
        _join(threads)
    finally:
        source._direct = real


def test_many_threads_get_their_own_plaintexts_on_a_bounded_pool(
    thread_source: PKCS11KeySource,
) -> None:
    bodies = _bodies(thread_source, 96)
    other = RequestEncryptor({"keys": [_foreign_public()]}, format="jwe").encrypt(
        "thr-1", {"i": -1}
    )
    decryptor = RequestDecryptor(thread_source)
    token = thread_source._token
    assert token.module.os_locking  # SoftHSM takes CKF_OS_LOCKING_OK
    login = token.login
    assert login is not None
    login.limit = 3  # 8 threads share at most 3 sessions
    real = thread_source._direct
    counting = _Counting(real)
    results: dict[int, Any] = {}

    def work(start: int) -> None:
        for i in range(start, len(bodies), 8):
            results[i] = decryptor.decrypt(bodies[i])
            try:
                decryptor.decrypt(other)  # refused by the token: the body's error only
            except DecryptionError as exc:
                results[-1 - i] = type(exc)

    _run_with(thread_source, counting, work, 8)
    assert [results[i] for i in range(len(bodies))] == [{"i": i} for i in range(len(bodies))]
    assert [results[-1 - i] for i in range(len(bodies))] == [DecryptionError] * len(bodies)
    assert len(login.sessions) <= 3 and counting.most <= 3
    assert token.login is login  # no error dropped it
    login.limit = _pkcs11_session.SESSIONS


def test_two_threads_are_inside_the_token_at_once(thread_source: PKCS11KeySource) -> None:
    """Each decrypt thread takes its own session and no lock keeps the other out: both are in
    the unwrap together (under the module lock the second never got in: the barrier broke)."""
    bodies = _bodies(thread_source, 2)
    decryptor = RequestDecryptor(thread_source)
    barrier = threading.Barrier(2, timeout=WAIT)
    real = thread_source._direct
    assert real is not None
    sessions: set[int] = set()

    class Meeting:
        def decrypt(self, session: int, *args: Any) -> bytes:
            sessions.add(session)
            barrier.wait()  # both threads here, each with a session, before C_Decrypt
            return real.decrypt(session, *args)

    results: dict[int, Any] = {}

    def work(i: int) -> None:
        try:
            results[i] = decryptor.decrypt(bodies[i])
        except Exception as exc:
            results[i] = exc

    _run_with(thread_source, Meeting(), work, 2)
    assert results == {0: {"i": 0}, 1: {"i": 1}} and len(sessions) == 2


def _foreign_public() -> dict[str, Any]:
    from request_crypto.keys.jwks import JWKManager

    manager = JWKManager()
    manager.add_key("thr-1")
    return manager.get_public_jwks()["keys"][0]


def test_closing_the_last_source_on_a_token_closes_its_sessions(thread_uri: str) -> None:
    source = PKCS11KeySource(thread_uri)
    token = source._token
    RequestDecryptor(source).decrypt_many(_bodies(source, 8), workers=4)
    login = token.login
    assert login is not None
    source.close()
    assert token.login is None
    for session in login.sessions:  # closed, the logged-in one (logging out) included
        with pytest.raises(p11.SessionHandleInvalid):
            session.generate_random(8)
    again = PKCS11KeySource(thread_uri)  # a new login
    assert token.login is not None and token.login is not login
    again.close()


def test_closing_the_last_source_waits_for_the_calls_in_flight(thread_uri: str) -> None:
    """A call on the token (a signing key's, say: it holds no source open) keeps its session
    until it ends; only then are the sessions closed (closed under it, the call failed)."""
    source = PKCS11KeySource(thread_uri)
    token = source._token
    inside, leave = threading.Event(), threading.Event()
    answers: list[Any] = []

    def slow(session: Any) -> Any:
        inside.set()
        leave.wait(WAIT)
        return session.generate_random(64)  # bits

    caller = threading.Thread(target=lambda: answers.append(token.call(slow)))
    caller.start()
    assert inside.wait(WAIT)
    closer = threading.Thread(target=source.close)
    closer.start()
    closer.join(0.3)
    waited = closer.is_alive()
    leave.set()
    _join([caller, closer])
    assert waited and len(answers) == 1 and len(answers[0]) == 8
    assert token.login is None


def test_a_fork_waits_for_the_calls_inside_the_module(thread_source: PKCS11KeySource) -> None:
    """A thread inside the module at fork could hold one of the module's own locks, held for
    ever in the child: the fork waits for it to leave."""
    token = thread_source._token
    inside, leave = threading.Event(), threading.Event()

    def slow(session: Any) -> None:
        inside.set()
        leave.wait(WAIT)

    caller = threading.Thread(target=token.call, args=(slow,))
    caller.start()
    assert inside.wait(WAIT)
    timer = threading.Timer(0.3, leave.set)
    timer.start()
    try:
        left_before_fork = _in_child(leave.is_set)  # the child's copy of the event
    finally:
        leave.set()
        _join([caller])
    assert left_before_fork


def test_a_forked_child_opens_its_own_pool(thread_source: PKCS11KeySource) -> None:
    bodies = _bodies(thread_source, 32)
    decryptor = RequestDecryptor(thread_source)
    token = thread_source._token
    decryptor.decrypt_many(bodies, workers=4)
    parent = token.login

    def child() -> Any:
        results: list[Any] = decryptor.decrypt_many(bodies, workers=4)
        login = token.login
        fresh = login is not None and login is not parent and token.logins == 1
        return [fresh, results == [{"i": i} for i in range(32)], os.getpid()]

    fresh, right, _ = _in_child(child)
    assert fresh and right
    assert decryptor.decrypt(bodies[0]) == {"i": 0}  # the parent's sessions still work
    assert token.login is parent


def test_a_module_refusing_os_locking_keeps_the_serialised_path(thread_uri: str) -> None:
    """C_Initialize answering CKR_CANT_LOCK to CKF_OS_LOCKING_OK (simulated, in a child with
    no module loaded yet): the module is initialised as before and every call holds its lock;
    calls that find it busy run on its token thread, one at a time."""

    def child() -> Any:
        _pkcs11_session._MODULES.clear()
        _pkcs11_session._TOKENS.clear()
        real = DirectCalls.initialize

        def refuse(self: DirectCalls, *, os_locking: bool) -> int:
            return 0x0A if os_locking else real(self, os_locking=False)  # CKR_CANT_LOCK

        DirectCalls.initialize = refuse  # type: ignore[method-assign]
        source = PKCS11KeySource(thread_uri)
        module = source._token.module
        counting = _Counting(source._direct)
        source._direct = counting  # type: ignore[assignment]
        bodies = _bodies(source, 64)
        results = RequestDecryptor(source).decrypt_many(bodies, workers=4)
        login = source._token.login
        return [
            module.os_locking,
            results == [{"i": i} for i in range(64)],
            counting.most,
            module.serial.served > 0,
            login is not None and len(login.sessions),
        ]

    assert _in_child(child) == [False, True, 1, True, 1]


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
    assert direct_calls("/nonexistent/libnothing.so") is None  # python-pkcs11 is used


class _PinlessToken:
    """A token (python-pkcs11's shape) whose user PIN reads as not set for `failures` logins:
    what SoftHSM answers while another process's login rewrites the token's file."""

    label, manufacturer_id, model, firmware_version = "t", "test", "fake", (1, 0)

    def __init__(self, failures: int) -> None:
        self.failures = failures

    def open(self, user_pin: str | None = None, rw: bool = False) -> str:
        if self.failures > 0:
            self.failures -= 1
            raise p11.UserPinNotInitialized()
        return "session"


class _Lib:
    def __init__(self, token: _PinlessToken) -> None:
        self.token = token

    def get_token(self, **_: Any) -> _PinlessToken:
        return self.token


@pytest.mark.parametrize("failures", [2, 10])
def test_a_token_without_a_user_pin_is_tried_again_then_unavailable(
    failures: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """A source opening retries it (SoftHSM's race between processes); one that never gets
    a PIN is a KeySourceUnavailableError naming the fix, never python-pkcs11's exception."""
    monkeypatch.setattr(_pkcs11_session, "RECONNECT_INTERVAL", 0.01)
    pin = tmp_path / "pin"
    pin.write_text("1234")
    uri = PKCS11URI.parse(f"pkcs11:token=t;object=o?module-path=/fake.so&pin-source=file:{pin}")
    module = _pkcs11_session.Module("/fake.so")
    module.lib = _Lib(_PinlessToken(failures))
    token = _pkcs11_session.Token(uri, module)
    if failures < _pkcs11_session.OPEN_ATTEMPTS:
        assert token.opening(lambda session: session) == "session"
    else:
        with pytest.raises(KeySourceUnavailableError, match="no user PIN"):
            token.opening(lambda session: session)
