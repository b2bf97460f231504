"""Handing work to threads and answers back to the event loop, at the least cost per request.

The receiver's event loop is its bottleneck (one thread runs every request's HTTP, routing and
logging), so each hop off it and back is made as cheap as it can be: a `SimpleQueue.put` out,
and one ``call_soon_threadsafe`` back per *batch* of answers (`settle_soon`), not per request.
`WorkerThreads` is a fixed set of threads (the decrypt threads) fed that way; one of them at a
time may also be writing a batch to the sink (`_writer`'s leader commit).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["Outcome", "Waiter", "WorkerThreads", "settle_soon"]

#: A future and what it gets: its result, or the exception it raises.
Outcome = tuple["asyncio.Future[Any]", Any, "BaseException | None"]


def _settle(outcomes: Sequence[Outcome]) -> None:
    """On the loop: give each future its result or exception (unless it was cancelled)."""
    for future, result, error in outcomes:
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


def settle_soon(loop: asyncio.AbstractEventLoop, outcomes: Sequence[Outcome]) -> None:
    """From any thread: settle these futures of `loop` in one wake-up of it."""
    if outcomes:
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody awaits these any more
            loop.call_soon_threadsafe(_settle, outcomes)


class Waiter:
    """A request awaiting a result from another thread: its loop and its future."""

    __slots__ = ("future", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any]) -> None:
        self.loop = loop
        self.future = future

    def settle(self, result: Any, error: BaseException | None = None) -> None:
        """From any thread: the result (or the exception) the request gets; one hop back."""
        settle_soon(self.loop, [(self.future, result, error)])


class WorkerThreads:
    """`count` daemon threads running calls handed over by `run`; started at first use."""

    _STOP = object()

    def __init__(self, count: int, name: str) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{n}", daemon=True)
            for n in range(count)
        ]
        self._started = False

    def start(self) -> None:
        if not self._started:
            self._started = True
            for thread in self._threads:
                thread.start()

    def run(self, call: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """On the loop: a future of ``call(*args)`` run on one of the threads.

        `call` gets the request's `Waiter` as its last argument and must settle it once; it may
        hand it on to the sink writer, which answers the request, in one hop back, from the
        thread that writes its batch (this one, or the one writing when it arrived). An
        exception `call` raises settles it too.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.put((call, args, Waiter(loop, future)))
        return future

    def close(self) -> None:
        """Stop the threads once the calls already handed over are done (they are daemons)."""
        for _ in self._threads:
            self._queue.put(self._STOP)

    def _work(self) -> None:
        while (item := self._queue.get()) is not self._STOP:
            call, args, waiter = item
            try:
                call(*args, waiter)
            except BaseException as exc:  # handed to the awaiting request
                waiter.settle(None, exc)
            del item, call, args, waiter  # no body kept alive while this thread waits
