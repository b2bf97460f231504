"""The sealed archive sink: payloads at rest as sealed files that only the archive key opens.

``jsonl:///DIR/?seal=PUBLIC_SET`` (``jsonl:////abs/dir/?seal=...`` for an absolute path)
stores the same JSON lines as the plain ``jsonl`` sink, but sealed (`request_crypto.sealed`,
docs/FILE-FORMAT.md) to every key of the public set `PUBLIC_SET`; the receiver never holds the
private half, so a stolen disk or backup of the archive shows no payload.
``request-crypto open --jwks ARCHIVE_PRIVATE_SET DIR`` reads the whole directory back in order.

Why one file per batch: a sealed file's last segment is marked final and authenticated as
such, so a file cannot be extended (appending is detected, by design), and sealing a segment
again under the same key and nonce would be GCM nonce reuse. So each batch the sink writer
commits becomes one or more complete files, each with a fresh file key (`FileSealer`):

1. sealed into ``.NAME.part`` in the directory (created 0600, no link followed), fsynced;
2. read back and authenticated with the file key still in memory (`FileSealer.check`);
3. renamed to ``NAME``, then the directory is fsynced;

and only then does `write_batch` return, so a ``202`` means the payload is on disk and can be
opened while the server runs. ``NAME`` is ``<UTC time>-<pid>-<sequence>.jsonl.sealed``: names
sort in write order, and several workers (or receivers) sharing the directory never collide.
A batch over `max_file_size` bytes of JSON lines is split between lines into several files; a
small batch (one request, little load) is one small file. A crash before the rename leaves at
most a hidden ``.NAME.part`` file, never a half file under a final name; such leftovers are
never read and can be removed when no receiver runs. A batch that fails removes the files it
had already renamed, and is answered ``503`` (`SinkUnavailableError`): the directory is
missing, replaced, full or unwritable.

Signed bodies' jtis are kept in ``DIR/replays.db`` (`replay.FileReplays`), shared by every
worker and kept across restarts; it holds jtis, hashes and ids, never a payload.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import stat
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from .._files import NOFOLLOW, open_in, parent_directory
from ..errors import InvalidArgumentError, InvalidJWKSError, SinkUnavailableError
from ..keyfile import read_jwks
from ..keys.jwks import JWKManager
from ..sealed import DEFAULT_SEGMENT_SIZE, FileSealer
from .replay import FileReplays
from .sinks import DEFAULT_ARCHIVE_FILE_SIZE, ReceivedPayload, own_ids

__all__ = ["ARCHIVE_SUFFIX", "ArchiveSink"]

#: The final name of every archive file ends so; ``open DIR`` reads ``*.sealed``, in name order.
ARCHIVE_SUFFIX = ".jsonl.sealed"
REPLAYS_NAME = "replays.db"
_PART_SUFFIX = ".part"


def _recipients(seal: str | os.PathLike[str]) -> JWKManager:
    """The public keys to seal to: every key of the set; a set with a private key is refused."""
    try:
        keys = JWKManager(read_jwks(seal))
    except InvalidJWKSError as exc:
        raise InvalidJWKSError(f"{seal}: {exc}") from None
    if not keys.kids():
        raise InvalidJWKSError(f"{seal} holds no key to seal the archive to")
    private = [kid for kid in keys.kids() if keys.has_private_key(kid)]
    if private:
        raise InvalidArgumentError(
            f"{seal} holds the private key {private[0]!r}: the receiver seals to the archive's "
            f"public set only (request-crypto keys public {seal} -o archive_public.json), and "
            "the private set stays with whoever reads the archive"
        )
    return keys


def _open_directory(directory: Path) -> int:
    """The archive directory's descriptor (created 0700 if missing), checked like sink files."""
    with parent_directory(directory, InvalidArgumentError) as (parent, name):
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o700, dir_fd=parent)
        try:
            fd = open_in(
                parent, name, os.O_RDONLY | os.O_DIRECTORY, directory, error=InvalidArgumentError
            )
        except OSError as exc:
            raise InvalidArgumentError(
                f"{directory}: cannot open the archive directory ({exc.strerror})"
            ) from None
    info = os.fstat(fd)
    problem = None
    if info.st_uid not in (os.geteuid(), 0):
        problem = f"belongs to user {info.st_uid}"
    elif stat.S_IMODE(info.st_mode) & 0o022:
        problem = f"is writable by group or others (mode {stat.S_IMODE(info.st_mode):04o})"
    if problem is not None:
        os.close(fd)
        raise InvalidArgumentError(
            f"{directory} {problem}, who could remove or replace archive files: use a "
            "directory of the receiver's user with mode 0700"
        )
    return fd


class ArchiveSink:
    """Payloads as JSON lines in sealed files, one or more per batch (see the module docstring)."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        seal: str | os.PathLike[str],
        *,
        max_file_size: int = DEFAULT_ARCHIVE_FILE_SIZE,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
    ) -> None:
        if max_file_size < 1:
            raise InvalidArgumentError(f"max_file_size must be at least 1, not {max_file_size}")
        self.directory = Path(directory)
        self.max_file_size = max_file_size
        self._recipients = _recipients(seal)
        FileSealer(self._recipients, segment_size=segment_size)  # a bad set fails now
        self._segment_size = segment_size
        self._dir = _open_directory(self.directory)
        self._sequence = itertools.count(1)
        self._replays = FileReplays(self.directory / REPLAYS_NAME)

    def write_batch(self, records: Sequence[ReceivedPayload]) -> list[str]:
        """Seal the records' JSON lines into new files; return once durable and read back."""
        with self._replays.claiming(records) as replays:
            lines = [
                r.to_json_line().encode("utf-8")
                for r, replay in zip(records, replays, strict=True)
                if not replay
            ]
            written: list[str] = []
            try:
                self._check_directory()
                for chunk in _chunks(lines, self.max_file_size):
                    written.append(self._write_file(chunk))
                if written:
                    os.fsync(self._dir)
                    self._check_directory()
            except BaseException as exc:
                self._remove(written)
                if isinstance(exc, OSError):
                    raise SinkUnavailableError(
                        f"{self.directory}: cannot write to the archive ({exc.strerror or exc})"
                    ) from exc
                raise
        return own_ids(records, replays)

    def _write_file(self, data: bytes) -> str:
        """One complete sealed file of `data`, fsynced, read back, then renamed into place."""
        now = time.time_ns()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now // 1_000_000_000))
        name = (
            f"{stamp}.{now // 1000 % 1_000_000:06d}Z-{os.getpid():07d}-"
            f"{next(self._sequence):06d}{ARCHIVE_SUFFIX}"
        )
        part = f".{name}{_PART_SUFFIX}"
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | NOFOLLOW
        fd = os.open(part, flags, 0o600, dir_fd=self._dir)
        try:
            with open(fd, "r+b", buffering=0, closefd=False) as handle:
                sealer = FileSealer(self._recipients, segment_size=self._segment_size)
                sealer.write(io.BytesIO(data), handle.write)
                os.fsync(fd)
                handle.seek(0)
                if sealer.check(handle) != len(data):
                    raise SinkUnavailableError(f"{self.directory}/{part} read back short")
            os.rename(part, name, src_dir_fd=self._dir, dst_dir_fd=self._dir)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(part, dir_fd=self._dir)
            raise
        finally:
            os.close(fd)
        return name

    def _check_directory(self) -> None:
        """Fail unless the directory's path still leads to the directory this sink writes in.

        A file renamed into a directory that was removed or replaced would be acknowledged
        but unreadable under the archive's path.
        """
        try:
            named = os.stat(self.directory, follow_symlinks=False)
        except OSError as exc:
            raise SinkUnavailableError(
                f"{self.directory}: the archive directory is gone ({exc.strerror})"
            ) from None
        held = os.fstat(self._dir)
        if (named.st_dev, named.st_ino) != (held.st_dev, held.st_ino):
            raise SinkUnavailableError(
                f"{self.directory} was replaced; restart the receiver to write to the new one"
            )

    def ready(self) -> bool:
        """Whether the archive directory is still there (``/readyz``); never raises."""
        try:
            self._check_directory()
        except (SinkUnavailableError, OSError):
            return False
        return True

    def _remove(self, names: Sequence[str]) -> None:
        """Undo a failed batch's renamed files (it is answered 503 and will be sent again)."""
        for name in names:
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=self._dir)
        if names:
            with contextlib.suppress(OSError):
                os.fsync(self._dir)

    def close(self) -> None:
        """Close the directory (and the replays file)."""
        os.close(self._dir)
        self._replays.close()

    def __repr__(self) -> str:
        return f"ArchiveSink({str(self.directory)!r})"


def _chunks(lines: Sequence[bytes], limit: int) -> Iterator[bytes]:
    """The lines joined into pieces of at most `limit` bytes (a longer line is one piece)."""
    piece: list[bytes] = []
    size = 0
    for line in lines:
        if piece and size + len(line) > limit:
            yield b"".join(piece)
            piece, size = [], 0
        piece.append(line)
        size += len(line)
    if piece:
        yield b"".join(piece)
