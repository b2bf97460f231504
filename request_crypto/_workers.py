"""The worker threads of the batch and async calls (`decrypt_many`, `decrypt_async`, ...).

PBKDF2, RSA and AES release the GIL, so one thread per core scales across cores.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from .errors import BatchError, InvalidArgumentError
from .errors import RequestCryptoError as _Error

__all__ = ["Workers", "in_thread", "run_batch"]

_T = TypeVar("_T")
_R = TypeVar("_R")


class Workers:
    """The threads batch calls run on: started on first use, reused by later calls.

    A fresh pool per call measured ~15% slower on a 32-body batch on 2 cores (1.67x one
    worker instead of 1.95x): threads that have not yet settled wait on the GIL behind the
    ones already working. One pool of exactly the requested size is kept; a call asking for
    another size replaces it, and a forked child (whose copy of the pool has no threads)
    starts its own. Idle threads end when their owner is garbage collected.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._size = 0
        self._pid = 0

    def pool(self, size: int) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None or self._size != size or self._pid != os.getpid():
                if self._pool is not None and self._pid == os.getpid():
                    self._pool.shutdown(wait=False)  # running calls finish on their threads
                self._pool = ThreadPoolExecutor(size, thread_name_prefix="request-crypto")
                self._size, self._pid = size, os.getpid()
            return self._pool


async def in_thread(pool: Workers, function: Callable[..., _R], *args: Any) -> _R:
    """`function(*args)` on one of `pool`'s threads, one per core.

    Not asyncio.to_thread: the loop's default executor has cpu_count + 4 threads, and a burst
    of gathered calls ran 6 PBKDF2s at once on 2 cores (0.88 of two cores' bound against 0.93
    for decrypt_many's one thread per core). Kept apart from the batch calls' pool, whose size
    follows each batch.
    """
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(pool.pool(os.cpu_count() or 1), function, *args)


def run_batch(
    pool: Workers,
    function: Callable[[_T], _R],
    items: Iterable[_T],
    workers: int | None,
    return_exceptions: bool,
) -> list[Any]:
    """Run `function` over `items` on `workers` threads, results in order, failures apart."""
    todo = list(items)
    if workers is not None and workers < 1:
        raise InvalidArgumentError("workers must be at least 1")
    workers = min(workers or os.cpu_count() or 1, max(len(todo), 1))

    def attempt(item: _T) -> _R | _Error:
        try:
            return function(item)
        except _Error as exc:
            return exc

    if workers == 1:
        results: list[Any] = [attempt(item) for item in todo]
    else:
        results = list(pool.pool(workers).map(attempt, todo))
    failures = {i: r for i, r in enumerate(results) if isinstance(r, _Error)}
    if failures and not return_exceptions:
        raise BatchError(results, failures)
    return results
