"""Key-set files: private ones 0600 from the first byte, atomic replace, locked updates.

A crash or kill at any moment leaves either the complete old file or the complete new one:
new contents go to a temporary file in the same directory (created 0600 by mkstemp), are
flushed, given the replaced file's owner and group, fsynced, renamed over the old file, and
the directory is fsynced. Updates hold an exclusive `flock` on a sidecar ``PATH.lock`` for
the whole read-modify-write, so concurrent `keys add` runs serialize instead of losing each
other's keys.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import stat
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from .errors import InvalidArgumentError, KeyFileError
from .jwks import PRIVATE_MEMBERS, JWKSManager, load_jwks_document

__all__ = [
    "PRIVATE_MODE",
    "PUBLIC_MODE",
    "is_private_set",
    "locked",
    "private_kids",
    "read_jwks",
    "require_private_keys",
    "update_jwks",
    "write_jwks",
]

PRIVATE_MODE = 0o600
PUBLIC_MODE = 0o644
logger = logging.getLogger("request_crypto")


def is_private_set(document: Mapping[str, Any]) -> bool:
    keys = document.get("keys")
    return isinstance(keys, list) and any(
        isinstance(k, Mapping) and any(m in k for m in PRIVATE_MEMBERS) for k in keys
    )


def private_kids(keys: JWKSManager) -> list[str]:
    """The kids `keys` holds a private key for, in set order."""
    return [kid for kid in keys.kids() if keys.has_private_key(kid)]


def require_private_keys(keys: JWKSManager, where: object, needed_by: str) -> list[str]:
    """`private_kids(keys)`, refusing a set without any: the likeliest operator mistake.

    `where` names the set (a path) and `needed_by` what needs it (``decrypt``, ``serve``...).
    """
    kids = private_kids(keys)
    if not kids:
        raise InvalidArgumentError(
            f"{where} holds no private keys; {needed_by} needs the private set (the one "
            "`keys init` made), not the public one senders get"
        )
    return kids


def read_jwks(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a key-set file; logs a warning if a private set is readable by group or others."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            text = handle.read()
    except FileNotFoundError:
        raise KeyFileError(f"{path}: no such key-set file; check the path") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read the key set ({exc.strerror})") from None
    document = dict(load_jwks_document(text, source=str(path)))
    if is_private_set(document) and stat.S_IMODE(mode) & 0o077:
        logger.warning(
            "%s holds private keys but is readable by group or others (mode %o); run: chmod 600 %s",
            path,
            stat.S_IMODE(mode),
            path,
        )
    return document


def write_jwks(path: str | os.PathLike[str], document: Mapping[str, Any]) -> None:
    """Atomically replace `path`; 0600 if the set holds private keys, else 0644."""
    path = Path(path)
    directory = path.parent
    data = (json.dumps(document, indent=2) + "\n").encode("utf-8")
    mode = PRIVATE_MODE if is_private_set(document) else PUBLIC_MODE
    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot write in {directory} ({exc.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            _keep_owner(path, handle.fileno())
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        if isinstance(exc, OSError):
            raise KeyFileError(f"{path}: cannot write the key set ({exc.strerror})") from None
        raise
    try:
        _fsync_directory(directory)
    except OSError as exc:
        raise KeyFileError(
            f"{path}: written, but syncing its directory {directory} failed ({exc.strerror}); "
            "the change may not survive a crash: check the disk"
        ) from None


def _keep_owner(path: Path, fd: int) -> None:
    """Give the new file `fd` the owner and group of the `path` it is about to replace.

    Otherwise a root-run `keys rotate` would leave a service's own key file owned by root,
    and the service could no longer read it. Like `os.replace`, `path` itself is looked at
    (`lstat`): a symlink is replaced, not followed. When the owner cannot be kept (only root
    may give files away), the write goes on as before and a warning says how to fix it.
    """
    try:
        _give_owner_of(path, fd)
    except OSError as exc:
        old, new = os.lstat(path), os.fstat(fd)
        logger.warning(
            "%s was owned by %d:%d but is now owned by %d:%d, this process's user "
            "(cannot keep the owner: %s); if another user reads it, run: chown %d:%d %s",
            path,
            old.st_uid,
            old.st_gid,
            new.st_uid,
            new.st_gid,
            exc.strerror or type(exc).__name__,
            old.st_uid,
            old.st_gid,
            path,
        )


def _give_owner_of(path: Path, fd: int) -> None:
    """fchown `fd` to `path`'s owner and group when they differ (raises OSError if refused)."""
    try:
        old = os.lstat(path)
    except FileNotFoundError:
        return  # a new file: the writer's, as always
    new = os.fstat(fd)
    if (old.st_uid, old.st_gid) != (new.st_uid, new.st_gid):
        os.fchown(fd, old.st_uid, old.st_gid)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def locked(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive lock on ``PATH.lock`` (kept, never deleted: deleting races).

    The lock file gets the key file's owner and group when this process may give them.
    """
    lock_path = Path(f"{os.fspath(path)}.lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, PRIVATE_MODE)
    except FileNotFoundError:
        raise KeyFileError(
            f"{path}: the directory {lock_path.parent} does not exist; create it first"
        ) from None
    except OSError as exc:
        raise KeyFileError(f"{lock_path}: cannot create the lock file ({exc.strerror})") from None
    try:
        # The key file's owner gets the lock too: a lock file root created could not be
        # opened by the service that owns the keys, and its next `keys add` would fail.
        with contextlib.suppress(OSError):
            _give_owner_of(Path(path), fd)
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


@contextlib.contextmanager
def update_jwks(path: str | os.PathLike[str], *, create: bool = False) -> Iterator[dict[str, Any]]:
    """Locked read-modify-write: edit the yielded document; it is written back on success."""
    with locked(path):
        if create and not Path(path).exists():
            document: dict[str, Any] = {"keys": []}
        else:
            document = read_jwks(path)
        yield document
        write_jwks(path, document)
