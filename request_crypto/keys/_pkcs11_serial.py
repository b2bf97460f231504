"""The serialised path: one lock per PKCS#11 module, and its token thread.

Used only for a module that cannot be initialised with OS locking (`_pkcs11_session.Module`:
C_Initialize refused CKF_OS_LOCKING_OK, or the ctypes ABI of `_pkcs11_direct` does not hold):
python-pkcs11 initialises a module without locking and releases the GIL during calls, so two
threads inside it at once crash it, and every call into it holds its `ModuleLock`.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["THREAD_IDLE", "THREAD_LINGER", "ModuleLock"]

_T = TypeVar("_T")

#: Seconds a module's token thread waits for work before it ends (`ModuleLock`).
THREAD_IDLE = 10.0
#: Seconds the token thread keeps the module's lock once its queue is empty, waiting for the
#: next call: about one body's Python on a decrypt thread. Released at once, the lock went to
#: the next caller directly, and the hand-over waiting for the GIL came back (`ModuleLock`).
THREAD_LINGER = 0.0005


class ModuleLock:
    """A module's lock and its token thread: every call into the module holds `lock` (`run`).

    When the module is idle the caller runs its call itself; when it is busy the call is queued
    for the module's token thread, which holds the lock while it works through the queue and for
    THREAD_LINGER after it (so that callers keep queueing while the threads are busy). With the
    lock handed from thread to thread instead, the next holder waits for the GIL while the
    previous one runs its Python (~60 µs a body), and the token idles; the token thread keeps
    the lock and picks the next call with the GIL in hand (`_pkcs11_direct`: it gives the GIL
    away only inside C_Decrypt). The thread stops after THREAD_IDLE seconds without work, when
    the last source on the module closes (`stop`), and is not inherited by a forked child
    (`reset`); it starts again on demand.
    """

    def __init__(self) -> None:
        #: Calls the token thread ran (those that found the module busy).
        self.served = 0
        self.reset()

    def reset(self) -> None:
        """A new lock, no token thread, nothing queued (at creation, and in a forked child)."""
        self.lock = threading.RLock()
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
