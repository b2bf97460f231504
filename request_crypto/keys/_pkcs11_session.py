"""The PKCS#11 sessions of each token in this process (`keys.pkcs11`).

A module is loaded once per process and, before any session exists, initialised again with OS
locking (`Module.load`: CKF_OS_LOCKING_OK, through `_pkcs11_direct`). Then each token has one
login and a pool of sessions shared by the threads: a call takes a free session (opening
another, up to SESSIONS, when none is free), uses it and gives it back, with no lock held
across the call, so the decrypt threads are inside the module at once. A module that refuses
OS locking, or where `_pkcs11_direct`'s ABI does not hold, keeps python-pkcs11's initialisation
without locking, and every call into it holds its lock (`_pkcs11_serial.ModuleLock`, with its
token thread): one call at a time, so one session per token in practice.

Either way, a session or device error drops the token's sessions: the next call logs in again,
at most once per RECONNECT_INTERVAL, reinitialising the module first (modules rescan their
devices only in C_Initialize) once no call is inside it (`Module.exclusive`). The last source
closed on a token logs out. A forked child never uses its parent's sessions or token thread: it
reinitialises the module and logs in itself (PKCS#11 sessions do not survive fork); a fork
waits (up to FORK_WAIT) for the calls inside a module to end, so that the child inherits none
of the module's own locks held.
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import pkcs11
from pkcs11 import exceptions as p11

from ..errors import InternalSignal, KeySourceError, KeySourceUnavailableError
from ._pkcs11_direct import CKR_CRYPTOKI_NOT_INITIALIZED, DirectCalls, direct_calls
from ._pkcs11_serial import ModuleLock

if TYPE_CHECKING:
    from .pkcs11 import PKCS11URI

__all__ = [
    "AMBIGUOUS",
    "FORK_WAIT",
    "GONE",
    "OPEN_ATTEMPTS",
    "RECONNECT_INTERVAL",
    "SESSIONS",
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
OPEN_ATTEMPTS = 4
#: Sessions a token's pool opens at most (threads beyond wait for a free one): more than the
#: receiver's decrypt threads on the machines it runs on; fewer if the token allows fewer.
SESSIONS = 8
#: Seconds a fork waits for the calls inside a module to end before it goes ahead anyway.
FORK_WAIT = 10.0


class TokenNotFound(KeySourceError):
    """No token with that label or serial in the module (a typo, or not yet visible)."""


class PinRefused(KeySourceError):
    """The token refused the PIN, or it is locked: never tried again by itself."""


class TokenFault(InternalSignal):
    """The token failed a known-good operation: it is failing, not the body."""


class Module:
    """One PKCS#11 module in this process: loaded once, with or without OS locking (`load`).

    `gate` counts the calls inside the module (`inside`) and holds new ones back while
    `exclusive` reinitialises it (or a fork happens): C_Finalize under a call in flight would
    pull its session from under it. Without OS locking every call also holds `serial`'s lock.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.lib: Any = None
        self.direct: DirectCalls | None = None
        #: Initialised with CKF_OS_LOCKING_OK: calls run at once, on pooled sessions.
        self.os_locking = False
        #: The lock and token thread of a module without OS locking.
        self.serial = ModuleLock()
        #: Bumped at each C_Finalize/C_Initialize (and fork): sessions opened before are gone.
        self.epoch = 0
        #: Reinitialise before the next login: in a forked child (the state is the parent's),
        #: or after a token was not found (the module reads its tokens only at C_Initialize).
        self.stale = False
        self.reset_gate()

    def reset_gate(self) -> None:
        """No call inside, none held back (at creation, and in a forked child)."""
        self.gate = threading.Condition(threading.Lock())
        self.active = 0
        self.closed = False

    def load(self, name: str) -> None:
        """Load the module and initialise it again with OS locking, before any session of
        ours exists; a refusal (any answer but CKR_OK) keeps it as python-pkcs11 had it."""
        try:
            self.lib = pkcs11.lib(self.path)
        except Exception as exc:  # a missing or broken .so: configuration, not an outage
            raise KeySourceError(f"{name}: cannot load the PKCS#11 module: {exc}") from None
        self.direct = direct = direct_calls(self.path)
        if direct is None or direct.finalize() != 0:
            return  # no ctypes calls, or still initialised as it was: the serialised path
        if direct.initialize(os_locking=True) == 0:
            self.os_locking = True
            return
        answer = direct.initialize(os_locking=False)  # CKR_CANT_LOCK, say: as it was
        if answer != 0:
            raise KeySourceError(f"{name}: the PKCS#11 module's C_Initialize answered {answer:#x}")

    def reinitialize(self) -> None:
        """C_Finalize, then C_Initialize as the module was initialised (under `exclusive`);
        raises the module's refusal (then the next attempt tries again)."""
        self.epoch += 1
        if not self.os_locking:
            self.lib.reinitialize()
            return
        assert self.direct is not None
        answer = self.direct.finalize()
        if answer in (0, CKR_CRYPTOKI_NOT_INITIALIZED):
            answer = self.direct.initialize(os_locking=True)
        if answer != 0:
            raise p11.PKCS11Error(f"reinitialising the module: {answer:#x}")

    def call(self, action: Callable[[], _T]) -> _T:
        """`action()`, holding the module's lock unless it was initialised with OS locking."""
        return action() if self.os_locking else self.serial.run(action)

    @contextlib.contextmanager
    def inside(self) -> Iterator[None]:
        """Counted as a call inside the module (waits while the gate is closed)."""
        with self.gate:
            while self.closed:
                self.gate.wait()
            self.active += 1
        try:
            yield
        finally:
            self.leave()

    def leave(self) -> None:
        """The call ended: wake whoever waits for a session or for the module to be idle."""
        with self.gate:
            self.active -= 1
            self.gate.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """No call inside the module meanwhile: new ones wait, those inside end first."""
        self.close_gate()
        try:
            yield
        finally:
            self.open_gate()

    def close_gate(self, timeout: float | None = None) -> None:
        """Hold new calls back, and wait for those inside to end (at most `timeout`: a fork
        does not wait for a hung device for ever)."""
        with self.gate:
            while self.closed:
                self.gate.wait()
            self.closed = True
            self.gate.wait_for(lambda: self.active == 0, timeout)

    def open_gate(self) -> None:
        """Let calls in again."""
        with self.gate:
            self.closed = False
            self.gate.notify_all()


class _Login:
    """One login to a token: its python-pkcs11 token, its sessions (the first one logged in)
    and the free ones; `limit` is lowered if the token allows fewer sessions than SESSIONS."""

    __slots__ = ("busy", "free", "limit", "opened", "sessions", "token")

    def __init__(self, token: Any, first: Any) -> None:
        self.token = token
        self.sessions = [first]
        self.free = [first]
        self.opened = 1  # with those being opened
        self.busy = 0  # taken by calls
        self.limit = SESSIONS


class Token:
    """One token's login and its pool of sessions, shared by every source on it.

    After a session or device error (or a failed probe) the sessions are dropped. The next call
    logs in again, at most once per RECONNECT_INTERVAL (calls in between are unavailable at
    once), reinitialising the module first (C_Finalize, C_Initialize: a module does not see a
    device that came back otherwise), so a token that comes back is used again without a
    restart.
    """

    def __init__(self, uri: PKCS11URI, module: Module) -> None:
        self.uri = uri
        self.module = module
        #: The current login and its sessions, or None (not logged in, or lost).
        self.login: _Login | None = None
        #: Bumped at each login: sources find their keys' handles again when it changes.
        self.generation = 0
        #: Logins by this process (a forked child starts again at 0), and sources open on it.
        self.logins = 0
        self.users = 0
        self.description = uri.token or uri.serial or "?"
        self._epoch = module.epoch
        #: One thread logs in at a time; the others wait for its login.
        self._logging_in = threading.Lock()
        #: Why the token was lost, and when it was last tried; None while it is connected.
        self._lost: str | None = None
        self._tried = 0.0
        #: Why logging in is not tried again (the PIN was refused after a loss), or None.
        self._stopped: str | None = None

    def use(self) -> None:
        """One more source is open on the token."""
        with self.module.gate:
            self.users += 1

    def release(self) -> None:
        """One source on the token closed; the last one closes the sessions (logging out)."""
        self.module.call(self._release)
        self.module.serial.stop()

    def _release(self) -> None:
        with self._logging_in:  # no new login until this one is closed (C_Logout ends all)
            module = self.module
            with module.gate:
                self.users -= 1
                login = self.login
                if self.users > 0 or login is None:
                    return
                self.login = None  # new calls wait for _logging_in
                module.gate.wait_for(lambda: login.busy == 0)  # other users' calls end
            with module.inside():
                for session in [*login.sessions[1:], login.sessions[0]]:  # logged-in one last
                    with contextlib.suppress(p11.PKCS11Error):
                        session.close()

    def opening(self, action: Callable[[Any], _T]) -> _T:
        """`call(action)` for a source that opens: a token unavailable or not found is tried
        OPEN_ATTEMPTS times, 1-2 RECONNECT_INTERVALs apart, since processes starting together
        race on some modules (SoftHSM reads a token file another process's login is
        rewriting); the random part keeps them from meeting again at each try. A refused PIN
        is never tried again (it would count towards locking it)."""
        for attempt in range(1, OPEN_ATTEMPTS + 1):
            try:
                return self.call(action)
            except (KeySourceUnavailableError, TokenNotFound):
                if attempt == OPEN_ATTEMPTS:
                    raise
            time.sleep(RECONNECT_INTERVAL * (1 + random.random()))  # noqa: S311 - not a secret
        raise AssertionError("unreachable")

    def call(self, action: Callable[[Any], _T]) -> _T:
        """Run `action(session)` on a session of the pool (holding the module's lock if it has
        no OS locking: `Module.call`); a gone or failing token is unavailable."""
        return self.module.call(lambda: self._call(action))

    def _call(self, action: Callable[[Any], _T]) -> _T:
        failure: str
        login = None
        try:
            session, login = self._take()
            try:
                return action(session)
            finally:
                self._give(session, login)
        except GONE as exc:
            failure = f"the token answered {_code(exc)}"
        except AMBIGUOUS as exc:  # outside a decrypt, nothing a body did
            failure = f"the token answered {_code(exc)}"
        except TokenFault as exc:
            failure = str(exc)
        self._drop(failure, login)
        raise KeySourceUnavailableError(self.uri.name, failure)

    def _take(self) -> tuple[Any, _Login]:
        """A free session of the current login, counted inside the module; another one
        opened if none is free (up to the limit, else wait); a login first if there is none."""
        module = self.module
        while True:
            with module.gate:
                while module.closed:
                    module.gate.wait()
                login = self.login
                if login is not None and self._epoch == module.epoch:
                    if not login.free and login.opened >= login.limit:
                        module.gate.wait()  # every session is in use: one comes back
                        continue
                    module.active += 1
                    login.busy += 1
                    if login.free:
                        return login.free.pop(), login
                    login.opened += 1  # counted inside, one more session reserved
                else:
                    login = None
            if login is not None:
                session = self._open_another(login)
                if session is not None:
                    return session, login
                continue  # the token's limit: wait for a free one
            with self._logging_in:
                if self.login is None or self._epoch != module.epoch:
                    self._log_in()

    def _open_another(self, login: _Login) -> Any:
        """One more session (logged in: a login is the application's), counted inside; None
        if the token allows no more (then the pool stays at what it has)."""
        try:
            session = login.token.open(rw=True)
        except BaseException as exc:
            with self.module.gate:
                login.opened -= 1
                login.busy -= 1
                if isinstance(exc, p11.SessionCount):
                    login.limit = max(1, login.opened)
            self.module.leave()
            if isinstance(exc, p11.SessionCount):
                return None
            raise
        with self.module.gate:
            login.sessions.append(session)
        return session

    def _give(self, session: Any, login: _Login) -> None:
        """The call ended: its session goes back to the pool (unless dropped meanwhile)."""
        with self.module.gate:
            if login is self.login:
                login.free.append(session)
            login.busy -= 1
            self.module.active -= 1
            self.module.gate.notify_all()

    def _log_in(self) -> None:
        """Log in (under `_logging_in`): the first login's errors say what to fix; later ones
        (after a loss, or after another token reinitialised the module) are rate-limited."""
        if self._stopped is not None:
            raise KeySourceUnavailableError(self.uri.name, self._stopped)
        if self._lost is None and self.generation == 0:
            login = self._open_login()
        else:
            login = self._reconnect()
        with self.module.gate:
            self.login = login
            self.generation += 1
            self._lost = None

    def _reconnect(self) -> _Login:
        """Log in again after a loss, reinitialising the module; rate-limited."""
        now = time.monotonic()
        if self._lost is not None and now - self._tried < RECONNECT_INTERVAL:
            raise KeySourceUnavailableError(self.uri.name, self._lost)
        self._tried = now
        module = self.module
        try:
            if self._lost is not None and self._epoch == module.epoch:
                with module.exclusive():
                    if self._epoch == module.epoch:  # not done by another token meanwhile
                        module.reinitialize()
            return self._open_login()
        except PinRefused as exc:  # never tried again: each try counts towards locking it
            self._stopped = f"{exc}; fix the PIN and restart"
            raise KeySourceUnavailableError(self.uri.name, self._stopped) from None
        except (KeySourceError, p11.PKCS11Error) as exc:
            self._lost = f"logging in again failed ({_code(exc)})"
            raise KeySourceUnavailableError(self.uri.name, self._lost) from None

    def _drop(self, reason: str, login: _Login | None) -> None:
        """Forget the login's sessions (never closed: the device may hang on them); log in
        again later. A failure of an older login (already replaced) changes nothing."""
        with self.module.gate:
            if login is not None and login is not self.login:
                return
            self.login = None
            self._lost = reason
            self._tried = time.monotonic()

    def _open_login(self) -> _Login:
        module = self.module
        if module.stale:  # PKCS#11: a child of fork must initialise the module anew
            with module.exclusive():
                if module.stale:
                    module.reinitialize()
                    module.stale = False
        with module.inside():
            epoch = module.epoch
            token, session = self._open_session()
        self.logins += 1
        self._epoch = epoch
        return _Login(token, session)

    def _open_session(self) -> tuple[Any, Any]:
        uri = self.uri
        try:
            token = self.module.lib.get_token(token_label=uri.token, token_serial=uri.serial)
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
            return token, token.open(user_pin=uri.pin, rw=True)
        except p11.UserAlreadyLoggedIn:  # another session of this process logged in
            return token, token.open(rw=True)
        except (p11.PinIncorrect, p11.PinInvalid, p11.PinLenRange):
            raise PinRefused(f"{uri.name}: the token refused the PIN") from None
        except p11.PinLocked:
            raise PinRefused(f"{uri.name}: the token's user PIN is locked") from None
        except p11.UserPinNotInitialized:  # or, on SoftHSM, its file half rewritten by a login
            raise KeySourceUnavailableError(
                uri.name, "the token has no user PIN (set one as the token is initialised)"
            ) from None


def _version(value: Any) -> str:
    return ".".join(str(part) for part in value) if isinstance(value, tuple) else str(value)


def _code(exc: Exception | None) -> str:
    return type(exc).__name__ if exc is not None else "nothing"


_REGISTRY_LOCK = threading.Lock()
_MODULES: dict[str, Module] = {}
_TOKENS: dict[tuple[str, str | None, str | None], Token] = {}


def _before_fork() -> None:
    """No call inside a module while the process forks (the child would inherit the module's
    own locks held by threads it does not have): wait for them, up to FORK_WAIT."""
    for module in list(_MODULES.values()):
        module.close_gate(FORK_WAIT)


def _after_fork_in_parent() -> None:
    for module in list(_MODULES.values()):
        module.open_gate()


def _forget_after_fork() -> None:
    """In a forked child: no lock, session or login of the parent is used (PKCS#11 sessions
    do not survive fork); each module is reinitialised, each token logged into anew."""
    global _REGISTRY_LOCK  # noqa: PLW0603 (the parent's may have been held at fork)
    _REGISTRY_LOCK = threading.Lock()
    for module in _MODULES.values():
        module.serial.reset()  # the parent's token thread does not exist here
        module.reset_gate()
        module.epoch += 1
        module.stale = True
    for token in _TOKENS.values():
        token.login = None
        token.logins = 0
        token._logging_in = threading.Lock()


os.register_at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_forget_after_fork,
)


def token_for(uri: PKCS11URI) -> Token:
    """The process's one `Token` for the URI's token (one login per token per process); the
    module is loaded (and initialised with OS locking if it can be) the first time."""
    path = os.path.realpath(uri.module_path)
    with _REGISTRY_LOCK:
        module = _MODULES.get(path)
        if module is None:
            module = Module(uri.module_path)
            module.load(uri.name)
            _MODULES[path] = module
        key = (path, uri.token, uri.serial)
        if key not in _TOKENS:
            _TOKENS[key] = Token(uri, module)
        return _TOKENS[key]
