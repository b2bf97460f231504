"""Key-set files: private ones 0600 from the first byte, atomic replace, locked updates.

A crash or kill at any moment leaves either the complete old file or the complete new one:
new contents go to a temporary file in the same directory (created 0600, ``O_EXCL``), are
flushed, given the replaced file's owner and group, fsynced, renamed over the old file, and
the directory is fsynced. Updates hold an exclusive `flock` on a sidecar ``PATH.lock`` for
the whole read-modify-write, so concurrent `keys add` runs serialize instead of losing each
other's keys.

Writing is done as root too (a root-run `keys rotate` on a service's key file), in a
directory the service may write to, so nothing it could plant steers a write (see `_files`):
no link is followed anywhere in the path (a linked key path is refused, naming the real
file), the directory is opened once and every open, create and rename is relative to it,
and only regular files are replaced or locked. A file is given to another owner only when
it is this process's new file and that owner is the key file's own: the owner of the
regular, singly linked file at the path. Reading (`read_jwks`, for decrypt and serve) still
follows links: reading gives nobody anything.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import secrets
import stat
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from ._files import (
    NOFOLLOW,
    file_kind,
    is_symlink_error,
    link_target,
    open_in,
    parent_directory,
)
from .errors import InvalidArgumentError, KeyFileError
from .keys.jwks import PRIVATE_MEMBERS, JWKSManager, load_jwks_document
from .keys.kms_wrap import unwrap_key_set, wrap_key_set, wrapping_key
from .keys.pbes2 import decrypt_key_set, encrypt_key_set, is_encrypted_key_set

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
    """Whether any key of the set document carries a private member (or a secret, `k`)."""
    keys = document.get("keys")
    return isinstance(keys, list) and any(
        isinstance(k, Mapping) and any(m in k for m in (*PRIVATE_MEMBERS, "k")) for k in keys
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


def read_jwks(path: str | os.PathLike[str], *, password: bytes | None = None) -> dict[str, Any]:
    """Read a key-set file; logs a warning if a private set is readable by group or others.

    A file encrypted at rest (`keys.pbes2`) needs its `password`; a file wrapped by a KMS key
    (`keys.kms_wrap`) names its key and is opened through KMS, with no option. A link is
    followed: only writing refuses links (see the module docstring).
    """
    path = Path(path)
    try:
        with path.open("rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            text = read_key_set_bytes(handle, path)
    except KeyFileError:
        raise
    except FileNotFoundError:
        raise KeyFileError(f"{path}: no such key-set file; check the path") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read the key set ({exc.strerror})") from None
    return _parsed(path, text, mode, password)


#: A key set holds a few keys of a few KB each; a larger file is refused before it is read
#: whole (a sparse file planted by another user costs no disk but would cost root memory).
MAX_KEY_SET_FILE_SIZE = 16 * 1024 * 1024
#: How long `locked` waits for another holder of ``PATH.lock`` before giving up.
LOCK_TIMEOUT = 60.0


def read_key_set_bytes(handle: BinaryIO, path: Path) -> bytes:
    """The whole file, refused (KeyFileError) once it is over MAX_KEY_SET_FILE_SIZE."""
    text = handle.read(MAX_KEY_SET_FILE_SIZE + 1)
    if len(text) > MAX_KEY_SET_FILE_SIZE:
        raise KeyFileError(
            f"{path} is over {MAX_KEY_SET_FILE_SIZE // (1024 * 1024)} MiB, far larger than "
            "any key set; check that the path names a key-set file"
        )
    return text


def _parsed(path: Path, text: bytes, mode: int, password: bytes | None) -> dict[str, Any]:
    if is_encrypted_key_set(text) and wrapping_key(text) is not None:
        text = unwrap_key_set(text, path)
    elif is_encrypted_key_set(text):
        if password is None:
            raise KeyFileError(
                f"{path} is encrypted at rest; give its password (--password-file, or "
                "REQUEST_CRYPTO_PASSWORD_FILE)"
            )
        text = decrypt_key_set(text, password, path)
    document = dict(load_jwks_document(text, source=str(path)))
    if is_private_set(document) and stat.S_IMODE(mode) & 0o077:
        logger.warning(
            "%s holds private keys but is readable by group or others (mode %o); run: chmod 600 %s",
            path,
            stat.S_IMODE(mode),
            path,
        )
    return document


def write_jwks(
    path: str | os.PathLike[str],
    document: Mapping[str, Any],
    *,
    password: bytes | None = None,
    wrap_with: str | None = None,
) -> None:
    """Atomically replace `path`; 0600 if the set holds private keys, else 0644.

    With `password`, a private set is written encrypted at rest (`keys.pbes2`); with
    `wrap_with` (`aws-kms:KEY`), wrapped by that KMS key (`keys.kms_wrap`); a public set is
    always plain JSON.

    Refused (KeyFileError) when `path` or a directory on it is a link, or `path` exists and
    is not a regular file.
    """
    with parent_directory(path, error=KeyFileError) as (dir_fd, name):
        _write_in(dir_fd, name, Path(path), document, (password, wrap_with))


def _open_existing(dir_fd: int, name: str, path: Path) -> int | None:
    """The regular file at `name` opened for reading without following a link; None if absent.

    ``O_NONBLOCK``: a FIFO planted at the path must not hang the open; it is refused next.
    """
    mode: int | None = None
    try:
        fd = open_in(
            dir_fd, name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY, path, error=KeyFileError
        )
    except FileNotFoundError:
        return None
    except KeyFileError:  # a link: an OSError too, with its own message
        raise
    except OSError as exc:
        with contextlib.suppress(OSError):  # a socket cannot be opened: say what it is
            mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
        if mode is not None:
            _require_regular(path, mode)
        raise KeyFileError(f"{path}: cannot open the key set ({exc.strerror})") from None
    try:
        _require_regular(path, os.fstat(fd).st_mode)
    except KeyFileError:
        os.close(fd)
        raise
    return fd


def _require_regular(path: Path, mode: int) -> None:
    if not stat.S_ISREG(mode):
        raise KeyFileError(
            f"{path} is {file_kind(mode)}, not a key-set file; pass the path of a regular file"
        )


def _existing(dir_fd: int, name: str, path: Path) -> os.stat_result | None:
    """`fstat` of the regular file at `name` (refusing a link or anything else); None if absent."""
    fd = _open_existing(dir_fd, name, path)
    if fd is None:
        return None
    try:
        return os.fstat(fd)
    finally:
        os.close(fd)


def _create_temporary(dir_fd: int, name: str, path: Path) -> tuple[int, str]:
    """A new 0600 file next to `name`, created (``O_EXCL``) in the opened directory."""
    for _ in range(100):
        temporary = f".{name}.{secrets.token_hex(6)}.tmp"
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
            return os.open(temporary, flags | NOFOLLOW, PRIVATE_MODE, dir_fd=dir_fd), temporary
        except FileExistsError:
            continue
        except OSError as exc:
            raise KeyFileError(f"{path}: cannot write in {path.parent} ({exc.strerror})") from None
    raise KeyFileError(f"{path}: cannot create a temporary file in {path.parent}")


#: How a private set is protected at rest: (a password, an `aws-kms:` wrapping key), or neither.
Protection = tuple[bytes | None, str | None]


def _write_in(
    dir_fd: int, name: str, path: Path, document: Mapping[str, Any], protection: Protection
) -> None:
    private = is_private_set(document)
    password, wrap_with = protection
    if password is not None and wrap_with is not None:
        raise InvalidArgumentError(
            "give a password or a KMS wrapping key (--wrap-with), not both: a key set is "
            "protected one way"
        )
    if private and wrap_with is not None:
        data = wrap_key_set(dict(document), wrap_with)
    elif private and password is not None:
        data = encrypt_key_set(dict(document), password)
    else:
        data = (json.dumps(document, indent=2) + "\n").encode("utf-8")
    mode = PRIVATE_MODE if private else PUBLIC_MODE
    old = _existing(dir_fd, name, path)
    fd, temporary = _create_temporary(dir_fd, name, path)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            _keep_owner(path, handle.fileno(), old)
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        # rename, like replace, never follows a link at `name`: it replaces the entry.
        os.rename(temporary, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary, dir_fd=dir_fd)
        if isinstance(exc, OSError) and not isinstance(exc, KeyFileError):
            raise KeyFileError(f"{path}: cannot write the key set ({exc.strerror})") from None
        raise
    try:
        os.fsync(dir_fd)
    except OSError as exc:
        raise KeyFileError(
            f"{path}: written, but syncing its directory {path.parent} failed ({exc.strerror}); "
            "the change may not survive a crash: check the disk"
        ) from None


def _legitimate_owner(old: os.stat_result | None) -> tuple[int, int] | None:
    """The key file's own owner and group: those of a regular file with one link, else None.

    A file with several links may be another file's second name (a hard link to a file of
    root's), so its owner is not the key file's to hand on.
    """
    if old is None or not stat.S_ISREG(old.st_mode) or old.st_nlink != 1:
        return None
    return old.st_uid, old.st_gid


def _keep_owner(path: Path, fd: int, old: os.stat_result | None) -> None:
    """Give the new file `fd` the owner and group of the key file it is about to replace.

    Otherwise a root-run `keys rotate` would leave a service's own key file owned by root,
    and the service could no longer read it. When the owner cannot or must not be kept
    (only root may give files away; a hard-linked file's owner is not handed on), the
    write goes on as before and a warning says how to fix it.
    """
    if old is None:
        return  # a new file: the writer's, as always
    new = os.fstat(fd)
    if (old.st_uid, old.st_gid) == (new.st_uid, new.st_gid):
        return
    owner = _legitimate_owner(old)
    try:
        if owner is None:
            raise OSError(errno.EMLINK, f"it has {old.st_nlink} hard links")
        os.fchown(fd, *owner)
    except OSError as exc:
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


@contextlib.contextmanager
def locked(path: str | os.PathLike[str], *, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Hold an exclusive lock on ``PATH.lock`` (kept, never deleted: deleting races).

    Refused when `path` is a link or not a regular file, or ``PATH.lock`` is a link or not
    a regular file (see `_lock`).
    """
    with (
        parent_directory(path, error=KeyFileError) as (dir_fd, name),
        _lock(dir_fd, name, Path(path), timeout),
    ):
        yield


@contextlib.contextmanager
def _lock(dir_fd: int, name: str, path: Path, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Lock ``NAME.lock`` in the opened directory.

    A lock file this process creates gets the key file's legitimate owner (see
    `_legitimate_owner`): a lock file root created could not be opened by the service that
    owns the keys, and its next `keys add` would fail. An existing lock file is never given
    away: it may be anything the directory's other writers put there (a link to
    /etc/shadow is refused, a hard link to it is a regular file that is only locked).
    """
    owner = _legitimate_owner(_existing(dir_fd, name, path))
    lock_path = Path(f"{path}.lock")
    fd, created = _open_lock(dir_fd, f"{name}.lock", lock_path)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise KeyFileError(
                f"{lock_path} is {file_kind(mode)}, not a lock file; remove it and retry"
            )
        if created and owner is not None:
            with contextlib.suppress(OSError):
                info = os.fstat(fd)
                if (info.st_uid, info.st_gid) != owner:
                    os.fchown(fd, *owner)
        _wait_for_lock(fd, lock_path, timeout)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _wait_for_lock(fd: int, lock_path: Path, timeout: float) -> None:
    """Take the exclusive lock, giving up after `timeout` seconds (KeyFileError).

    Anyone who may write in the directory can hold ``PATH.lock``: without a bound, a root-run
    `keys rotate` would wait for them forever.
    """
    import fcntl  # noqa: PLC0415 - POSIX only: senders on Windows import the package

    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        if time.monotonic() >= deadline:
            raise KeyFileError(
                f"{lock_path} is still locked after {timeout:g} s: another `keys` command "
                "(or another process) holds it; wait for it to finish, or find it with: "
                f"fuser {lock_path}"
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.25)


def _open_lock(dir_fd: int, name: str, lock_path: Path) -> tuple[int, bool]:
    """Create the lock file (``O_EXCL``) or open the existing one; (fd, created).

    Neither open follows a link: ``O_CREAT | O_EXCL`` fails on any existing name, and the
    second open has ``O_NOFOLLOW`` (``O_NONBLOCK``: a FIFO must not hang it).
    """
    for _ in range(100):
        try:
            flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | NOFOLLOW
            return os.open(name, flags, PRIVATE_MODE, dir_fd=dir_fd), True
        except FileExistsError:
            pass
        except OSError as exc:
            raise KeyFileError(
                f"{lock_path}: cannot create the lock file ({exc.strerror})"
            ) from None
        try:
            flags = os.O_RDWR | os.O_NONBLOCK | os.O_NOCTTY | NOFOLLOW
            return os.open(name, flags, dir_fd=dir_fd), False
        except FileNotFoundError:
            continue  # removed in between: create it
        except OSError as exc:
            if is_symlink_error(exc, dir_fd, name):
                raise KeyFileError(
                    f"{lock_path} is a symbolic link to {link_target(name, dir_fd)}, not a lock "
                    f"file; someone who can write in {lock_path.parent} may have planted it: "
                    "remove it and retry"
                ) from None
            raise KeyFileError(f"{lock_path}: cannot open the lock file ({exc.strerror})") from None
    raise KeyFileError(f"{lock_path}: cannot create or open the lock file")


@contextlib.contextmanager
def update_jwks(
    path: str | os.PathLike[str],
    *,
    create: bool = False,
    password: bytes | None = None,
    wrap_with: str | None = None,
) -> Iterator[dict[str, Any]]:
    """Locked read-modify-write: edit the yielded document; it is written back on success.

    With `password` the file is read (if encrypted) and written back encrypted at rest; with
    `wrap_with` it is written back wrapped by that KMS key. Without either, a file wrapped by
    a KMS key stays wrapped by the same key (under a new data key).

    Unlike `read_jwks`, the file is read without following a link (one is refused), in the
    directory the lock and the write use.
    """
    path = Path(path)
    with parent_directory(path, error=KeyFileError) as (dir_fd, name), _lock(dir_fd, name, path):
        fd = _open_existing(dir_fd, name, path)
        if fd is None and create:
            document: dict[str, Any] = {"keys": []}
        elif fd is None:
            raise KeyFileError(f"{path}: no such key-set file; check the path")
        else:
            with os.fdopen(fd, "rb") as handle:
                text, mode = read_key_set_bytes(handle, path), os.fstat(fd).st_mode
            document = _parsed(path, text, mode, password)
            if password is None and wrap_with is None:
                wrap_with = wrapping_key(text)
        yield document
        _write_in(dir_fd, name, path, document, (password, wrap_with))
