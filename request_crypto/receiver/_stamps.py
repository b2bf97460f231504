"""A record's id and time, made per body on the decrypt threads at the least cost.

`new_id` is a random (version 4) UUID in its usual text form, as ``str(uuid.uuid4())``, but
its random bytes come from `os.urandom` in blocks of 4 KiB rather than one system call per id,
and its text is built without a `uuid.UUID` object. `utc_now` is the time as
``datetime.now(timezone.utc).isoformat(timespec="microseconds")`` with ``Z`` for ``+00:00``,
its date-and-seconds text made once per second.
"""

from __future__ import annotations

import os
import threading
import time

__all__ = ["new_id", "utc_now"]

_BLOCK = 4096  # 256 ids per read of os.urandom
#: The version (4) and variant (RFC 4122) bits, as `uuid.UUID(version=4)` sets them.
_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_SET = (0x4000 << 64) | (0x8000 << 48)


class _Pool(threading.local):
    """Each thread's block of random bytes and where it is in it."""

    def __init__(self) -> None:
        self.block = b""
        self.at = _BLOCK


_pool = _Pool()


def _after_fork() -> None:
    """A forked child must not hand out the ids its parent's block still holds."""
    _pool.at = _BLOCK


os.register_at_fork(after_in_child=_after_fork)


def new_id() -> str:
    """A random UUID (version 4) as text, like ``str(uuid.uuid4())``; each thread (and each
    forked process) draws from its own block."""
    pool = _pool
    at = pool.at
    if at >= _BLOCK:
        pool.block = os.urandom(_BLOCK)
        at = 0
    pool.at = at + 16
    text = "%032x" % (int.from_bytes(pool.block[at : at + 16], "big") & _CLEAR | _SET)
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


_second: tuple[int, str] = (-1, "")


def utc_now() -> str:
    """Now in UTC, ``2026-11-27T17:10:51.123456Z``; the text up to the second is cached."""
    global _second  # noqa: PLW0603 (one tuple, swapped whole: safe across threads)
    seconds, nanos = divmod(time.time_ns(), 1_000_000_000)
    cached, prefix = _second
    if seconds != cached:
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        _second = (seconds, prefix)
    return f"{prefix}.{nanos // 1000:06d}Z"
