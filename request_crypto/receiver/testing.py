"""Run a receiver app with Uvicorn in a background thread, on a free loopback port (for tests).

    with ReceiverThread(create_app(private_set, sink="sqlite:///t.db")) as receiver:
        httpx.post(receiver.url + "/v1/payloads", content=body)

Needs the ``server`` extra.
"""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType

import uvicorn
from starlette.types import ASGIApp

__all__ = ["ReceiverThread"]


class ReceiverThread:
    """Uvicorn serving `app` on `host`:free port in a daemon thread; a context manager."""

    def __init__(self, app: ASGIApp, *, host: str = "127.0.0.1") -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, 0))
        self._socket.listen(2048)
        self.host = host
        self.port: int = self._socket.getsockname()[1]
        config = uvicorn.Config(
            app, lifespan="on", log_config=None, access_log=False, timeout_graceful_shutdown=10
        )
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> ReceiverThread:
        """Start serving; returns once the app's lifespan has run and the port accepts."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the receiver thread stopped during startup; see the log")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the receiver did not start within {timeout} s")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """Graceful shutdown: in-flight requests finish, the sink writer drains and stops."""
        self.server.should_exit = True
        self._thread.join(timeout)
        self._socket.close()
        if self._thread.is_alive():
            raise TimeoutError(f"the receiver did not stop within {timeout} s")

    def __enter__(self) -> ReceiverThread:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
