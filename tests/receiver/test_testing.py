"""request_crypto.receiver.testing.ReceiverThread: it stops and closes its socket however
its start ends.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from starlette.applications import Starlette

from request_crypto.receiver.testing import ReceiverThread

# ---------------------------------------------------------------------------------------------
# ReceiverThread


def lifespan_app(startup: Callable[[], Any]) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await startup()
        yield

    return Starlette(lifespan=lifespan)


def test_receiver_thread_stop_before_start_closes_its_socket() -> None:
    receiver = ReceiverThread(lifespan_app(anyio.lowlevel.checkpoint))
    receiver.stop()
    assert receiver._socket.fileno() == -1


async def failing_startup() -> None:
    raise RuntimeError("the sink cannot be opened")


def test_receiver_thread_start_failure_stops_and_closes() -> None:
    receiver = ReceiverThread(lifespan_app(failing_startup))
    with pytest.raises(RuntimeError, match="stopped during startup"):
        receiver.start()
    assert receiver._socket.fileno() == -1
    receiver.stop()  # harmless after a failed start


def test_receiver_thread_start_timeout_stops_and_closes() -> None:
    receiver = ReceiverThread(lifespan_app(lambda: anyio.sleep(1.5)))
    with pytest.raises(TimeoutError, match="did not start"):
        receiver.start(timeout=0.1)
    assert receiver._socket.fileno() == -1
    receiver._thread.join(10)  # the slow startup ends, then the server stops by itself
    assert not receiver._thread.is_alive()
