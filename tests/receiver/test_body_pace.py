"""`read_body`'s pace: the deadline that cuts a slow body off (408), and nothing else.

The deadline is one loop timer per body (`_http._PaceTimer`), moved as bytes arrive; its
cancel must be told from any other cancel of the request's task and leave no trace on it.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable

import pytest

from request_crypto.receiver._http import SMALL_BODY, BodyPace, BodyTooSlow, read_body

Receive = Callable[[], Awaitable[dict[str, object]]]


def chunks(*parts: tuple[float, bytes], last: bool = True) -> Receive:
    """An ASGI `receive` giving each part after its delay; then (unless `last`) waiting forever."""
    pending = list(parts)

    async def receive() -> dict[str, object]:
        if not pending:
            await asyncio.Event().wait()  # the client sends nothing more
        delay, body = pending.pop(0)
        await asyncio.sleep(delay)
        return {"type": "http.request", "body": body, "more_body": bool(pending) or not last}

    return receive


async def no_slot() -> None:
    raise AssertionError("a small body takes no large-body slot")


def test_a_stalled_body_is_too_slow_and_leaves_its_task_uncancelled() -> None:
    async def main() -> float:
        start = time.monotonic()
        with pytest.raises(BodyTooSlow):
            await read_body(chunks((0, b"ab"), last=False), None, 10**6, no_slot, BodyPace(0.3, 10))
        task = asyncio.current_task()
        assert task is not None
        if sys.version_info >= (3, 11):
            assert task.cancelling() == 0
        await asyncio.sleep(0.01)  # no cancel left pending for the request's next await
        return time.monotonic() - start

    elapsed = asyncio.run(main())
    assert 0.3 <= elapsed < 10, elapsed  # 0.3 s + 2 bytes at 10 B/s = 0.5 s, with a margin


def test_a_body_keeping_its_pace_is_read_past_the_timeout() -> None:
    """12 chunks over ~0.6 s against a 0.2 s timeout: each 100 bytes adds 1 s at 100 B/s."""
    parts = [(0.05, b"x" * 100)] * 12
    body, size = asyncio.run(read_body(chunks(*parts), 1200, 10**6, no_slot, BodyPace(0.2, 100)))
    assert size == 1200 and body == b"x" * 1200


def test_waiting_for_a_large_body_slot_does_not_count() -> None:
    async def slow_slot() -> None:
        await asyncio.sleep(0.6)

    parts = [(0, b"y" * (SMALL_BODY + 1)), (0, b"z")]
    body, size = asyncio.run(
        read_body(chunks(*parts), None, 10**7, slow_slot, BodyPace(0.2, 10**9))
    )
    assert size == SMALL_BODY + 2 and body.endswith(b"yz")


def test_another_cancel_of_the_request_is_not_taken_for_a_slow_body() -> None:
    async def main() -> None:
        reading = asyncio.ensure_future(
            read_body(chunks((0, b"ab"), last=False), None, 10**6, no_slot, BodyPace(30, 10))
        )
        await asyncio.sleep(0.05)
        reading.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reading

    asyncio.run(main())
