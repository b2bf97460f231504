"""A throwaway PostgreSQL cluster for tests and benchmarks: never the system's service.

    with PostgresCluster() as pg:
        sink = PostgresSink(pg.url("payloads"))

`initdb` and `pg_ctl` come from ``pg_config --bindir`` (Debian keeps them off PATH, under
``/usr/lib/postgresql/VERSION/bin``). The cluster lives in a new temporary directory, listens
on a unix socket inside it and on a free 127.0.0.1 port, trusts local connections (nobody
else reaches a loopback port of a test machine's throwaway cluster with a password anyway),
and is stopped and deleted on exit. The server refuses to run as root: as root, the directory
is given to the ``postgres`` user and the programs run as that user (``runuser``).
Stdlib only (and the package's errors).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from ..errors import RequestCryptoError

__all__ = ["PostgresCluster", "PostgresUnavailableError", "postgres_bindir"]

_DEBIAN_BINDIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


class PostgresUnavailableError(RequestCryptoError):
    """No PostgreSQL server programs on this machine (install Debian's ``postgresql``)."""


def postgres_bindir() -> Path:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``."""
    candidates: list[Path] = []
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        out = subprocess.run(
            ["pg_config", "--bindir"],  # noqa: S607 (Debian's wrapper, on PATH)
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
        candidates.append(Path(out.stdout.strip()))
    candidates.extend(_DEBIAN_BINDIRS)
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    raise PostgresUnavailableError(
        "initdb/pg_ctl not found (pg_config --bindir, /usr/lib/postgresql/*/bin): "
        "install PostgreSQL (apt-get install postgresql)"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PostgresCluster:
    """One throwaway cluster: `start`, `stop`, `restart`, `kill`; a context manager."""

    def __init__(self, *, user: str = "postgres") -> None:
        self.bindir = postgres_bindir()
        self.root = Path(tempfile.mkdtemp(prefix="request-crypto-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = _free_port()
        self.user = user
        self._run_as: list[str] = []
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
            self._run_as = ["runuser", "-u", "postgres", "--"]
        self._initialized = False

    def _run(self, *args: str, timeout: float = 60) -> None:
        command = [*self._run_as, *args]
        result = subprocess.run(  # noqa: S603 (our own fixed programs)
            command, check=False, capture_output=True, text=True, timeout=timeout
        )
        if result.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(
                f"{' '.join(args[:2])} failed ({result.returncode}): {result.stderr.strip()}\n{log}"
            )

    def start(self) -> PostgresCluster:
        """Create the cluster (first time) and start the server; returns once it accepts."""
        if not self._initialized:
            self._run(
                str(self.bindir / "initdb"),
                "-D", str(self.data),
                "-U", self.user,
                "-A", "trust",
                "-E", "UTF8",
                "--no-sync",
            )  # fmt: skip
            self._initialized = True
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=on -c max_connections=200 -c shared_buffers=64MB"
        )
        self._run(
            str(self.bindir / "pg_ctl"),
            "start", "-w", "-t", "60",
            "-D", str(self.data),
            "-l", str(self.log),
            "-o", options,
        )  # fmt: skip
        return self

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: clients are disconnected; ``immediate``: a crash)."""
        self._run(str(self.bindir / "pg_ctl"), "stop", "-w", "-m", mode, "-D", str(self.data))

    def restart(self, mode: str = "fast") -> None:
        """Stop and start again on the same port."""
        self.stop(mode)
        self.start()

    def url(self, database: str = "postgres") -> str:
        """A ``postgresql://`` URL of `database` over TCP on 127.0.0.1."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create database `name`; returns its URL."""
        self._run(
            str(self.bindir / "createdb"), "-h", str(self.root), "-p", str(self.port),
            "-U", self.user, name,
        )  # fmt: skip
        return self.url(name)

    def close(self) -> None:
        """Stop the server (if running) and delete the directory."""
        if self._initialized:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
