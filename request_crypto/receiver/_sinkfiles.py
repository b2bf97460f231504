"""Files the sinks keep: opened safely, created private, and SQLite files opened that way.

What `sinks` (SQLite and JSON-lines files), `replay` (the replays file of the JSON-lines
sinks) and `archive` (the sealed archive directory) share; the rules are in `sinks`' module
docstring: a new file is created 0600, nothing is opened through a link, and an existing file
others could read through or change is refused. Stdlib only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

from .._files import file_kind, open_in, parent_directory, symlink_message
from ..errors import InvalidArgumentError

__all__ = [
    "PRIVATE_FILE_MODE",
    "check_existing",
    "connect_private_sqlite",
    "open_sink_file",
    "sqlite_transaction",
]

#: Sink files hold decrypted payloads: only their owner may read them.
PRIVATE_FILE_MODE = 0o600
#: What SQLite may put next to the database file, with the database file's mode.
_SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")
_logger = logging.getLogger("request_crypto")


def open_sink_file(path: Path, flags: int, purpose: str, side_files: Sequence[str] = ()) -> int:
    """Open (or create, 0600) a sink file with `flags`; refuse what others could read or change.

    See the module docstring for what is refused. `side_files` are suffixes of files another
    program (SQLite) opens next to it by name: an existing one is checked the same way.
    """
    with parent_directory(path, InvalidArgumentError) as (dir_fd, name):
        for suffix in side_files:
            with contextlib.suppress(FileNotFoundError):
                side = os.stat(name + suffix, dir_fd=dir_fd, follow_symlinks=False)
                check_existing(path.with_name(path.name + suffix), side)
        try:
            flags |= os.O_CREAT | os.O_EXCL
            return open_in(dir_fd, name, flags, path, error=InvalidArgumentError)
        except FileExistsError:
            pass
        except OSError as exc:
            raise InvalidArgumentError(f"{path}: cannot open {purpose} ({exc.strerror})") from None
        try:
            # O_NONBLOCK: a FIFO planted there fails now instead of hanging; it changes
            # nothing for a regular file.
            flags = flags & ~(os.O_CREAT | os.O_EXCL) | os.O_NONBLOCK | os.O_NOCTTY
            fd = open_in(dir_fd, name, flags, path, error=InvalidArgumentError)
        except InvalidArgumentError:
            raise
        except OSError as exc:
            raise InvalidArgumentError(f"{path}: cannot open {purpose} ({exc.strerror})") from None
        try:
            check_existing(path, os.fstat(fd))
        except BaseException:
            os.close(fd)
            raise
        return fd


def check_existing(path: Path, info: os.stat_result) -> None:
    """Refuse an existing sink file others could read through or change; warn if readable."""
    mode = stat.S_IMODE(info.st_mode)
    problem = None
    if stat.S_ISLNK(info.st_mode):
        raise InvalidArgumentError(symlink_message(path, path))
    if not stat.S_ISREG(info.st_mode):
        problem = f"is {file_kind(info.st_mode)}, not a regular file"
    elif info.st_nlink != 1:
        problem = f"has {info.st_nlink} hard links, so other names can read it"
    elif info.st_uid not in (os.geteuid(), 0):
        problem = f"belongs to user {info.st_uid}, who could read it or give it to others"
    elif mode & 0o022:
        problem = f"is writable by group or others (mode {mode:04o})"
    if problem is not None:
        raise InvalidArgumentError(
            f"{path} {problem}; a sink file holds decrypted payloads: remove it or pick "
            "another path, and a new one is created with mode 0600"
        )
    if mode & 0o044:
        _logger.warning(
            "%s holds decrypted payloads but is readable by group or others (mode %04o); "
            "run: chmod 600 %s",
            path,
            mode,
            path,
        )


def connect_private_sqlite(
    path: Path, purpose: str, busy_timeout: float = 30.0
) -> sqlite3.Connection:
    """A connection to the SQLite file at `path`, created 0600, in WAL mode, synchronous=FULL.

    The file is created (or checked) before SQLite sees it: SQLite would create it 0644 (less
    the umask), and creates the -wal and -shm files with the database file's mode.
    """
    fd = open_sink_file(path, os.O_RDWR, f"the {purpose}", _SQLITE_SIDE_FILES)
    try:
        # One thread at a time uses the connection (the sink writer's leader of the moment),
        # not the thread that opened it.
        db = sqlite3.connect(
            path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
        # SQLite opens the file by name again: make sure it found the one checked.
        checked, opened = os.fstat(fd), os.stat(path, follow_symlinks=False)
    except (sqlite3.Error, OSError) as exc:
        raise InvalidArgumentError(f"{path}: cannot open the {purpose} ({exc})") from None
    finally:
        os.close(fd)
    if (checked.st_dev, checked.st_ino) != (opened.st_dev, opened.st_ino):
        db.close()
        raise InvalidArgumentError(f"{path} was replaced while it was opened; retry")
    try:
        db.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk when it returns, also across a power cut.
        db.execute("PRAGMA synchronous=FULL")
    except sqlite3.Error as exc:
        db.close()
        raise InvalidArgumentError(f"{path}: cannot use it as the {purpose} ({exc})") from None
    return db


@contextlib.contextmanager
def sqlite_transaction(db: sqlite3.Connection) -> Iterator[None]:
    """One write transaction: committed if the block succeeds, else rolled back.

    BEGIN IMMEDIATE takes the write lock up front, so several processes queue on the busy
    timeout instead of failing halfway through a batch.
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        # A failed COMMIT (I/O error, busy) can leave the transaction open, and every later
        # BEGIN would fail: roll back so the next batch starts clean.
        if db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        raise
