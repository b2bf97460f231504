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
        try:
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._socket.bind((host, 0))
            self._socket.listen(2048)
            config = uvicorn.Config(
                app, lifespan="on", log_config=None, access_log=False, timeout_graceful_shutdown=10
            )
            self.server = uvicorn.Server(config)
        except BaseException:
            self._socket.close()
            raise
        self.host = host
        self.port: int = self._socket.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._abandoned = False

    def _serve(self) -> None:
        try:
            self.server.run(sockets=[self._socket])
        except SystemExit:
            pass  # Uvicorn's answer to a failed startup (exit code 3): `start` reports it
        except Exception:
            if not self._abandoned:  # else: its socket was closed under it on purpose
                raise
        finally:
            self._socket.close()

    @property
    def url(self) -> str:
        """The base URL the receiver answers on."""
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> ReceiverThread:
        """Start serving; returns once the app's lifespan has run and the port accepts.

        If it fails or times out, the server is told to stop and the socket is closed before
        the error is raised (a thread stuck in the app's startup is abandoned; it is a daemon).
        """
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive():
                self._socket.close()
                raise RuntimeError("the receiver thread stopped during startup; see the log")
            if time.monotonic() > deadline:
                self.server.should_exit = True  # a startup that completes now shuts down
                self._thread.join(1.0)
                self._abandoned = True
                self._socket.close()
                raise TimeoutError(f"the receiver did not start within {timeout} s")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """Graceful shutdown: in-flight requests finish, the sink writer drains and closes.

        Safe before `start` (it only closes the socket) and after a failed `start`.
        """
        self.server.should_exit = True
        if self._thread.ident is None:  # never started
            self._socket.close()
            return
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"the receiver did not stop within {timeout} s")
        self._socket.close()

    def __enter__(self) -> ReceiverThread:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
