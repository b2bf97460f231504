"""Opening files to write without following symbolic links: what keyfile.py and the sinks share.

A root-run command writing into a directory another user can write to (a service's key file, a
sink) must not be steered by a link that user planted. So every directory on the way is
opened with ``O_DIRECTORY | O_NOFOLLOW``, one component at a time, and the file itself is
opened, created or renamed relative to that directory's descriptor (``dir_fd``) with
``O_NOFOLLOW``; what a name is (regular file, device...) is read with ``fstat`` of the opened
descriptor, so nothing is checked by name and then used by name. A link anywhere in the
path is refused with one message naming the real path to pass instead.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from .errors import RequestCryptoError

__all__ = [
    "NOFOLLOW",
    "file_kind",
    "is_symlink_error",
    "link_target",
    "open_in",
    "parent_directory",
    "symlink_message",
]

#: Flags every open of a file to write adds: no link followed, not inherited by children.
NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC
_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | NOFOLLOW
_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISREG, "a regular file"),
)


def file_kind(mode: int) -> str:
    """What an `st_mode` is, for a message: ``a directory``, ``a FIFO``..."""
    return next((kind for test, kind in _KINDS if test(mode)), "not a regular file")


def symlink_message(path: Path, link: Path) -> str:
    """`link` (`path` itself or one of its directories) is a link: say what to pass instead."""
    target = link_target(link)
    where = f"{link}" if link == path else f"{path}: {link}"
    real = "file" if link == path else "path"
    return (
        f"{where} is a symbolic link to {target}; files are written without following links, "
        f"so pass the real {real}: {os.path.realpath(path)}"
    )


def link_target(link: str | os.PathLike[str], dir_fd: int | None = None) -> str:
    """What a link points to, for a message (``?`` if it is gone)."""
    try:
        return os.readlink(link, dir_fd=dir_fd)
    except OSError:
        return "?"


def is_symlink_error(exc: OSError, dir_fd: int, name: str) -> bool:
    """Whether an open with O_NOFOLLOW failed because `name` is a link (ELOOP, or EMLINK on BSD)."""
    if exc.errno not in (errno.ELOOP, errno.EMLINK, errno.ENOTDIR):
        return False
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


@contextlib.contextmanager
def parent_directory(
    path: str | os.PathLike[str], error: type[RequestCryptoError]
) -> Iterator[tuple[int, str]]:
    """Open the directory `path` is in, following no link; yield its descriptor and the name.

    `error` is the exception class a refusal raises (each caller has its own).
    """
    path = Path(path)
    name = path.name
    if name in ("", ".", ".."):
        raise error(f"{path} names a directory; pass a file path")
    parent = path.parent
    walked = Path(parent.anchor or ".")
    fd = os.open(walked, _DIRECTORY)
    try:
        for part in parent.parts[1:] if parent.anchor else parent.parts:
            walked /= part
            try:
                inner = os.open(part, _DIRECTORY, dir_fd=fd)
            except FileNotFoundError:
                raise error(
                    f"{path}: cannot write there: the directory {walked} does not exist; "
                    "create it first"
                ) from None
            except OSError as exc:
                if is_symlink_error(exc, fd, part):
                    raise error(symlink_message(path, walked)) from None
                raise error(f"{path}: cannot open {walked} ({exc.strerror})") from None
            os.close(fd)
            fd = inner
        yield fd, name
    finally:
        os.close(fd)


def open_in(
    dir_fd: int,
    name: str,
    flags: int,
    path: Path,
    *,
    error: type[RequestCryptoError],
    mode: int = 0o600,
) -> int:
    """`os.open(name, flags | NOFOLLOW, dir_fd=dir_fd)`; a link at `name` raises `error`.

    Other OSErrors (FileNotFoundError, FileExistsError...) are the caller's to handle.
    """
    try:
        return os.open(name, flags | NOFOLLOW, mode, dir_fd=dir_fd)
    except OSError as exc:
        if is_symlink_error(exc, dir_fd, name):
            raise error(symlink_message(path, path)) from None
        raise
