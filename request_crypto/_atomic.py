"""Streamed output that appears whole or not at all: a temporary file renamed into place.

`keyfile.write_jwks` does the same for one small document it holds in memory; this is the
streaming form, for outputs of any size (`request-crypto open -o FILE`, `seal -o FILE`).
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from .errors import OutputFileError, RequestCryptoError

__all__ = ["OutputFileError", "atomic_output"]


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], *, mode: int = 0o600) -> Iterator[BinaryIO]:
    """Yield a file in `path`'s directory; on success it replaces `path`, else it is removed.

    Only a regular file (or a new one) is replaced; anything else (a device such as
    /dev/null, a FIFO) is written in place, as there is nothing to replace atomically.
    New files get `mode` (0600 by default: decrypted data is private until the owner says
    otherwise); a replaced file keeps its own mode. Nothing is fsynced (as cp and age do):
    forcing a gigabyte to disk costs seconds; call `os.sync()` after if it must survive a
    crash. (`keyfile.write_jwks`, for small key files, does fsync.)
    """
    target = Path(os.path.realpath(path))  # through a symlink: the link keeps pointing
    try:
        regular = stat.S_ISREG(os.stat(target).st_mode)
    except FileNotFoundError:
        regular = True
    except OSError as exc:
        raise OutputFileError(f"{path}: cannot write it ({exc.strerror or exc})") from None
    if not regular:
        # A device, FIFO or socket (/dev/null, /dev/stdout, a named pipe): written in place;
        # renaming a file over it would replace the device itself.
        with _opened(target) as handle:
            yield handle
        return
    directory = target.parent
    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=directory)
    except OSError as exc:
        raise OutputFileError(
            f"{target}: cannot create a file in {directory} ({exc.strerror})"
        ) from None
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            with contextlib.suppress(FileNotFoundError):
                mode = os.stat(target).st_mode & 0o7777
            os.fchmod(handle.fileno(), mode)
        os.replace(temporary, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        if isinstance(exc, OSError) and not isinstance(exc, RequestCryptoError):
            raise OutputFileError(f"{target}: cannot write it ({exc.strerror or exc})") from None
        raise


@contextlib.contextmanager
def _opened(target: Path) -> Iterator[BinaryIO]:
    try:
        handle = target.open("wb")
    except OSError as exc:
        raise OutputFileError(f"{target}: cannot write it ({exc.strerror or exc})") from None
    with handle:
        try:
            yield handle
        except OSError as exc:
            if isinstance(exc, RequestCryptoError):
                raise
            raise OutputFileError(f"{target}: cannot write it ({exc.strerror or exc})") from None
