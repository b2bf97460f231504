"""The PKCS#11 session of each token in this process, behind its module's lock (`keys.pkcs11`).

python-pkcs11 initialises a module without OS locking and releases the GIL during calls, so
every call into a module holds that module's lock (a call finding the module busy is run by
the module's token thread: `Module`); each token has one logged-in session per process,
shared by the sources opened on it, logged out when the last one closes. A session or device
error drops the session: the next call logs in again, at most once per RECONNECT_INTERVAL,
reinitialising the module first (modules rescan their devices only in C_Initialize). A forked
child never uses its parent's session or token thread: it reinitialises the module and logs
in itself (PKCS#11 sessions do not survive fork).
"""

from __future__ import annotations

import collections
import contextlib
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import pkcs11
from pkcs11 import exceptions as p11

from ..errors import InternalSignal, KeySourceError, KeySourceUnavailableError

if TYPE_CHECKING:
    from .pkcs11 import PKCS11URI

__all__ = [
    "AMBIGUOUS",
    "GONE",
    "OPEN_ATTEMPTS",
    "RECONNECT_INTERVAL",
    "THREAD_IDLE",
    "THREAD_LINGER",
    "Module",
    "PinRefused",
    "Token",
    "TokenFault",
    "TokenNotFound",
    "token_for",
]

_T = TypeVar("_T")

#: Answers that may mean a bad ciphertext (SoftHSM's answer to bad OAEP padding) or a failing
#: device: the known-good probe tells which (`keys.pkcs11.PKCS11KeySource`).
AMBIGUOUS = (p11.GeneralError, p11.FunctionFailed)
#: Answers meaning the session, the token or the device is gone: log in again later.
GONE = (
    p11.DeviceError,
    p11.DeviceRemoved,
    p11.DeviceMemory,
    p11.SessionClosed,
    p11.SessionHandleInvalid,
    p11.TokenNotPresent,
    p11.TokenNotRecognised,
    p11.UserNotLoggedIn,
    p11.ObjectHandleInvalid,
    p11.KeyHandleInvalid,
    p11.NoSuchToken,
)
#: Seconds between two attempts to log in again to a token that was lost.
RECONNECT_INTERVAL = 1.0
#: Attempts to reach a token when a source opens (`Token.opening`).
OPEN_ATTEMPTS = 3
#: Seconds a module's token thread waits for work before it ends (`Module`).
THREAD_IDLE = 10.0
#: Seconds the token thread keeps the module's lock once its queue is empty, waiting for the
#: next call: about one body's Python on a decrypt thread. Released at once, the lock went to
#: the next caller directly, and the hand-over waiting for the GIL came back (`Module`).
THREAD_LINGER = 0.0005


class TokenNotFound(KeySourceError):
    """No token with that label or serial in the module (a typo, or not yet visible)."""


class PinRefused(KeySourceError):
    """The token refused the PIN, or it is locked: never tried again by itself."""


class TokenFault(InternalSignal):
    """The token failed a known-good operation: it is failing, not the body."""


class Module:
    """One PKCS#11 module in this process: its lock, its token thread, how often it was
    reinitialised.

    Every call into the module runs holding `lock` (`run`). When the module is idle the caller
    runs its call itself; when it is busy the call is queued for the module's token thread,
    which holds the lock while it works through the queue and for THREAD_LINGER after it (so
    that callers keep queueing while the threads are busy). With the lock handed from thread to
    thread instead, the next holder waits for the GIL while the previous one runs its Python
    (~60 µs a body), and the token idles; the token thread keeps the lock and picks the next
    call with the GIL in hand (`_pkcs11_direct`: it gives the GIL away only inside C_Decrypt).
    The thread stops after THREAD_IDLE seconds without work, when the last source on the
    module closes (`stop`), and is not inherited by a forked child; it starts again on demand.
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()
        #: Bumped at each C_Finalize/C_Initialize (and fork): sessions opened before are gone.
        self.epoch = 0
        #: Reinitialise before the next login: in a forked child (the state is the parent's),
        #: or after a token was not found (the module reads its tokens only at C_Initialize).
        self.stale = False
        #: Calls the token thread ran (those that found the module busy).
        self.served = 0
        self._reset_thread()

    def _reset_thread(self) -> None:
        """No token thread, nothing queued (at creation, and in a forked child)."""
        self._jobs: collections.deque[_Job | None] = collections.deque()
        self._queued = threading.Semaphore(0)
        self._guard = threading.Lock()
        self.thread: threading.Thread | None = None

    def run(self, action: Callable[[], _T]) -> _T:
        """`action()` holding the module's lock: here if the lock is free (or this thread holds
        it already: the token thread, a nested call), else on the token thread, waiting."""
        if self.lock.acquire(blocking=False):
            try:
                return action()
            finally:
                self.lock.release()
        job = _Job(action)
        with self._guard:
            self._jobs.append(job)
            if self.thread is None:
                self.thread = threading.Thread(
                    target=self._serve, name="request-crypto-pkcs11", daemon=True
                )
                self.thread.start()
        self._queued.release()
        result: _T = job.result()
        return result

    def stop(self) -> threading.Thread | None:
        """Have the token thread end once what is queued is done (a later call starts one);
        the thread, to join, or None."""
        with self._guard:
            thread = self.thread
            if thread is not None:
                self._jobs.append(None)
        if thread is not None:
            self._queued.release()
        return thread

    def _serve(self) -> None:
        """The token thread: holds the lock while calls are queued, runs them in turn."""
        jobs, queued = self._jobs, self._queued
        while True:
            if not queued.acquire(timeout=THREAD_IDLE):
                if self._end():
                    return
                continue  # queued as the wait ended: its release follows
            with self.lock:
                while True:
                    job = jobs.popleft()
                    if job is not None:
                        job.run()
                        self.served += 1
                    elif self._end():  # stop(), and nothing queued since
                        return
                    if not queued.acquire(timeout=THREAD_LINGER):
                        break

    def _end(self) -> bool:
        """Whether the token thread may end: nothing is queued (then it is forgotten)."""
        with self._guard:
            if self._jobs:
                return False
            self.thread = None
            return True


class _Job:
    """One call queued for a token thread; the caller waits on `done` (a cheap lock)."""

    __slots__ = ("action", "done", "error", "value")

    def __init__(self, action: Callable[[], Any]) -> None:
        self.action = action
        self.done = threading.Lock()
        self.done.acquire()
        self.value: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        """Run the call, keeping what it returned or raised (the thread itself never fails)."""
        try:
            self.value = self.action()
        except BaseException as exc:  # handed to the caller, raised there
            self.error = exc
        self.done.release()

    def result(self) -> Any:
        """Wait for the token thread; what the call returned, or raise what it raised."""
        self.done.acquire()
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        return self.value


class Token:
    """One token's logged-in session, shared by every source on it, behind its module's lock.

    After a session or device error (or a failed probe) the session is dropped. The next call
    logs in again, at most once per RECONNECT_INTERVAL (calls in between are unavailable at
    once), reinitialising the module first (C_Finalize, C_Initialize: a module does not see a
    device that came back otherwise), so a token that comes back is used again without a
    restart.
    """

    def __init__(self, uri: PKCS11URI, module: Module) -> None:
        self.uri = uri
        self.module = module
        self.session: Any = None
        self.generation = 0
        #: Logins by this process (a forked child starts again at 0), and sources open on it.
        self.logins = 0
        self.users = 0
        self.description = uri.token or uri.serial or "?"
        self._epoch = module.epoch
        #: Why the token was lost, and when it was last tried; None while it is connected.
        self._lost: str | None = None
        self._tried = 0.0
        #: Why logging in is not tried again (the PIN was refused after a loss), or None.
        self._stopped: str | None = None

    @property
    def lock(self) -> threading.RLock:
        """The module's lock (a new one in a forked child)."""
        return self.module.lock

    def release(self) -> None:
        """One source on the token closed; the last one logs out and closes the session."""
        with self.lock:
            self.users -= 1
            if self.users > 0 or self.session is None:
                return
            session, self.session = self.session, None
            with contextlib.suppress(p11.PKCS11Error):
                session.close()
        self.module.stop()

    def opening(self, action: Callable[[Any], _T]) -> _T:
        """`call(action)` for a source that opens: a token unavailable or not found is tried
        OPEN_ATTEMPTS times, RECONNECT_INTERVAL apart, since processes starting together race
        on some modules (SoftHSM reads a token file another process's login is rewriting).
        A refused PIN is never tried again (it would count towards locking it)."""
        for attempt in range(1, OPEN_ATTEMPTS + 1):
            try:
                return self.call(action)
            except (KeySourceUnavailableError, TokenNotFound):
                if attempt == OPEN_ATTEMPTS:
                    raise
            time.sleep(RECONNECT_INTERVAL)
        raise AssertionError("unreachable")

    def call(self, action: Callable[[Any], _T]) -> _T:
        """Run `action(session)` under the module lock (`Module.run`); a gone or failing token
        is unavailable."""
        return self.module.run(lambda: self._call(action))

    def _call(self, action: Callable[[Any], _T]) -> _T:
        failure: str
        try:
            return action(self._session())
        except GONE as exc:
            failure = f"the token answered {_code(exc)}"
        except AMBIGUOUS as exc:  # outside a decrypt, nothing a body did
            failure = f"the token answered {_code(exc)}"
        except TokenFault as exc:
            failure = str(exc)
        self._drop(failure)
        raise KeySourceUnavailableError(self.uri.name, failure)

    def _session(self) -> Any:
        if self._epoch != self.module.epoch:  # another token reinitialised the module
            self.session, self._epoch = None, self.module.epoch
        if self.session is not None:
            return self.session
        if self._stopped is not None:
            raise KeySourceUnavailableError(self.uri.name, self._stopped)
        if self._lost is None and self.generation == 0:
            self.session = self._login()  # the first login: errors say what to fix
        else:
            self.session = self._reconnect()
        self.generation += 1
        self._lost = None
        return self.session

    def _reconnect(self) -> Any:
        """Log in again after a loss, reinitialising the module; rate-limited."""
        now = time.monotonic()
        if self._lost is not None and now - self._tried < RECONNECT_INTERVAL:
            raise KeySourceUnavailableError(self.uri.name, self._lost)
        self._tried = now
        try:
            if self._lost is not None and self._epoch == self.module.epoch:
                pkcs11.lib(self.uri.module_path).reinitialize()
                self.module.epoch += 1
                self._epoch = self.module.epoch
            return self._login()
        except PinRefused as exc:  # never tried again: each try counts towards locking it
            self._stopped = f"{exc}; fix the PIN and restart"
            raise KeySourceUnavailableError(self.uri.name, self._stopped) from None
        except (KeySourceError, p11.PKCS11Error) as exc:
            self._lost = f"logging in again failed ({_code(exc)})"
            raise KeySourceUnavailableError(self.uri.name, self._lost) from None

    def _drop(self, reason: str) -> None:
        """Forget the session (never closed: the device may hang on it); log in again later."""
        self.session = None
        self._lost = reason
        self._tried = time.monotonic()

    def _login(self) -> Any:
        session = self._open_session()
        self.logins += 1
        return session

    def _open_session(self) -> Any:
        uri = self.uri
        try:
            lib = pkcs11.lib(uri.module_path)
        except Exception as exc:  # a missing or broken .so: configuration, not an outage
            raise KeySourceError(f"{uri.name}: cannot load the PKCS#11 module: {exc}") from None
        if self.module.stale:  # PKCS#11: a child of fork must initialise the module anew
            lib.reinitialize()
            self.module.stale = False
            self.module.epoch += 1
            self._epoch = self.module.epoch
        try:
            token = lib.get_token(token_label=uri.token, token_serial=uri.serial)
        except p11.MultipleTokensReturned:
            raise KeySourceError(
                f"{uri.name}: several tokens match; add serial= to pick one"
            ) from None
        except p11.NoSuchToken:
            self.module.stale = True
            raise TokenNotFound(
                f"{uri.name}: no token {self.description!r} in the module"
            ) from None
        self.description = (
            f"{token.label!r} ({token.manufacturer_id.strip()} {token.model.strip()} "
            f"firmware {_version(token.firmware_version)})"
        )
        try:
            return token.open(user_pin=uri.pin, rw=True)
        except p11.UserAlreadyLoggedIn:  # another session of this process logged in
            return token.open(rw=True)
        except (p11.PinIncorrect, p11.PinInvalid, p11.PinLenRange):
            raise PinRefused(f"{uri.name}: the token refused the PIN") from None
        except p11.PinLocked:
            raise PinRefused(f"{uri.name}: the token's user PIN is locked") from None


def _version(value: Any) -> str:
    return ".".join(str(part) for part in value) if isinstance(value, tuple) else str(value)


def _code(exc: Exception | None) -> str:
    return type(exc).__name__ if exc is not None else "nothing"


_REGISTRY_LOCK = threading.Lock()
_MODULES: dict[str, Module] = {}
_TOKENS: dict[tuple[str, str | None, str | None], Token] = {}


def _forget_after_fork() -> None:
    """In a forked child: no lock, session or login of the parent is used (PKCS#11 sessions
    do not survive fork); each module is reinitialised, each token logged into anew."""
    global _REGISTRY_LOCK  # noqa: PLW0603 (the parent's may have been held at fork)
    _REGISTRY_LOCK = threading.Lock()
    for module in _MODULES.values():
        module.lock = threading.RLock()
        module._reset_thread()  # the parent's token thread does not exist here
        module.epoch += 1
        module.stale = True
    for token in _TOKENS.values():
        token.session = None
        token.logins = 0


os.register_at_fork(after_in_child=_forget_after_fork)


def token_for(uri: PKCS11URI) -> Token:
    """The process's one `Token` for the URI's token (one login per token per process)."""
    path = os.path.realpath(uri.module_path)
    with _REGISTRY_LOCK:
        module = _MODULES.setdefault(path, Module())
        key = (path, uri.token, uri.serial)
        if key not in _TOKENS:
            _TOKENS[key] = Token(uri, module)
        return _TOKENS[key]
