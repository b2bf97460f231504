"""The segment layer of sealed files: STREAM framing over AES-256-GCM, apart from the header.

A plaintext is cut into segments of `segment_size` bytes (the last may be shorter, or full;
an empty plaintext is one empty segment). Segment `i` is sealed under the per-file payload
key with the 12-byte nonce ``i as 11 bytes big-endian || flag``, flag 1 on the final segment
and 0 on every other. So a segment only opens at its own position, and only the final one
with the flag set: truncation at a segment boundary, reordering, duplication, appending and
splicing from another file (another key) all fail authentication. docs/FILE-FORMAT.md has
the exact layout; `request_crypto.sealed` writes and checks the header around this.

Speed: Python's cost is per segment, AES-GCM's per byte, so reads and writes move several
segments at once through preallocated buffers, and the cipher writes into them
(`encrypt_into`/`decrypt_into`): no per-segment allocation or copy. (Reader and writer
threads were tried and measured no faster: `cryptography`'s AES-GCM holds the GIL, so a
reader thread waits for it after every read and the work stays serial.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import (
    SealedFormatError,
    SegmentError,
    TruncatedError,
)

__all__ = [
    "MAX_SEGMENTS",
    "TAG_SIZE",
    "Readable",
    "SealedFormatError",
    "SegmentCipher",
    "SegmentError",
    "TruncatedError",
    "decrypt_segments",
    "encrypt_segments",
    "segment_layout",
]

TAG_SIZE = 16
#: The counter is 11 bytes wide, but files are capped at 2**32 segments (256 TiB at 64 KiB),
#: so a size read from an untrusted file can never make a reader plan absurd work.
MAX_SEGMENTS = 2**32
_FINAL = b"\x01"
_NOT_FINAL = b"\x00"
#: Bytes moved per read or write call: about 1 MiB, whatever the segment size.
_BATCH_BYTES = 1 << 20


class Readable(Protocol):
    """A binary source: only `readinto` is used (files, pipes, sockets' makefile...)."""

    def readinto(self, buffer: memoryview, /) -> int | None: ...


class SegmentCipher:
    """AES-256-GCM under one file's payload key, with the segment nonce."""

    __slots__ = ("_aead",)

    def __init__(self, payload_key: bytes) -> None:
        self._aead = AESGCM(payload_key)

    @staticmethod
    def nonce(index: int, final: bool) -> bytes:
        return index.to_bytes(11, "big") + (_FINAL if final else _NOT_FINAL)

    def seal_into(self, index: int, final: bool, plaintext: memoryview, out: memoryview) -> None:
        if index >= MAX_SEGMENTS:
            raise SealedFormatError(
                f"a sealed file holds at most {MAX_SEGMENTS} segments; use a bigger segment size"
            )
        self._aead.encrypt_into(self.nonce(index, final), plaintext, None, out)

    def open_into(self, index: int, final: bool, sealed: memoryview, out: memoryview) -> None:
        """Authenticate and decrypt one segment; SegmentError (or TruncatedError) if not."""
        try:
            self._aead.decrypt_into(self.nonce(index, final), sealed, None, out)
            return
        except InvalidTag:
            pass
        # Raised outside the handler (no __context__). A final segment that opens as a
        # middle one means the file was cut at a boundary: say so, it is not a forgery.
        if final and self._opens(index, sealed, out):
            raise TruncatedError()
        raise SegmentError()

    def open(self, index: int, final: bool, sealed: memoryview) -> bytes:
        out = bytearray(len(sealed) - TAG_SIZE)
        self.open_into(index, final, sealed, memoryview(out))
        return bytes(out)

    def _opens(self, index: int, sealed: memoryview, out: memoryview) -> bool:
        try:
            self._aead.decrypt_into(self.nonce(index, False), sealed, None, out)
        except InvalidTag:
            return False
        return True


def segment_layout(payload_size: int, segment_size: int) -> tuple[int, int]:
    """(segment count, plaintext length) of a payload of `payload_size` sealed bytes.

    Unauthenticated arithmetic on a file's size: SealedFormatError when no sealed file has
    that size (no segment at all, a final segment shorter than a tag, or an empty final
    segment after others, which no writer makes).
    """
    sealed_size = segment_size + TAG_SIZE
    full, rest = divmod(payload_size, sealed_size)
    if payload_size == 0:
        raise TruncatedError()
    if 0 < rest < TAG_SIZE or (rest == TAG_SIZE and full > 0):
        raise SealedFormatError(
            f"the sealed data is {payload_size} bytes, which no sealed file with "
            f"{segment_size}-byte segments has; it was truncated or altered"
        )
    count = full + (1 if rest else 0)
    if count > MAX_SEGMENTS:
        raise SealedFormatError(
            f"the sealed data would hold {count} segments, over the limit of {MAX_SEGMENTS}"
        )
    return count, full * segment_size + max(rest - TAG_SIZE, 0)


def _fill(source: Readable, view: memoryview, filled: int) -> tuple[int, bool]:
    """Read until `view` is full or the source ends; (bytes now in view, ended)."""
    size = len(view)
    while filled < size:
        count = source.readinto(view[filled:])
        if count is None:
            raise SealedFormatError("the source would block; give a blocking file or pipe")
        if count == 0:
            return filled, True
        filled += count
    return filled, False


def encrypt_segments(
    cipher: SegmentCipher,
    source: Readable,
    write: Callable[[memoryview], object],
    segment_size: int,
) -> int:
    """Seal everything `source` holds, handing sealed bytes to `write`; returns the length.

    A segment is only known to be the final one once the source has ended after it, so the
    last full segment in the buffer waits for the next read (one segment moved per batch).
    """
    per_batch = max(_BATCH_BYTES // segment_size, 2)
    sealed_size = segment_size + TAG_SIZE
    plain = memoryview(bytearray(per_batch * segment_size))
    sealed = memoryview(bytearray(per_batch * sealed_size))
    index = total = filled = 0
    ended = False
    while not ended:
        filled, ended = _fill(source, plain, filled)
        # Not ended: the buffer is full, and its last segment may be the final one.
        count = -(-filled // segment_size) if ended else per_batch - 1
        count = max(count, 1) if ended else count
        for n in range(count):
            start = n * segment_size
            piece = plain[start : min(start + segment_size, filled)]
            final = ended and n == count - 1
            at = n * sealed_size
            cipher.seal_into(index, final, piece, sealed[at : at + len(piece) + TAG_SIZE])
            index += 1
            total += len(piece)
        used = min(count * segment_size, filled)
        write(sealed[: used + count * TAG_SIZE])
        if not ended:
            plain[: filled - used] = plain[used:filled]
            filled -= used
    return total


def decrypt_segments(
    cipher: SegmentCipher,
    source: Readable,
    write: Callable[[memoryview], object],
    segment_size: int,
    first: bytes = b"",
) -> int:
    """Open the segments `source` holds (after `first`, bytes already read past the header).

    Each batch goes to `write` only once every segment in it has been authenticated. Returns
    the plaintext length; SegmentError, TruncatedError or SealedFormatError on bad data.
    """
    sealed_size = segment_size + TAG_SIZE
    per_batch = max(_BATCH_BYTES // sealed_size, 2)
    sealed = memoryview(bytearray(max(per_batch * sealed_size, len(first))))
    plain = memoryview(bytearray(-(-len(sealed) // sealed_size) * segment_size))
    sealed[: len(first)] = first
    filled = len(first)
    index = total = 0
    ended = False
    while not ended:
        filled, ended = _fill(source, sealed, filled)
        if ended:
            if filled == 0 and index == 0:
                raise TruncatedError()
            count = -(-filled // sealed_size)
        else:
            count = filled // sealed_size - 1
        out = 0
        for n in range(count):
            start = n * sealed_size
            piece = sealed[start : min(start + sealed_size, filled)]
            final = ended and n == count - 1
            if len(piece) < TAG_SIZE or (final and index > 0 and len(piece) == TAG_SIZE):
                raise SegmentError()
            size = len(piece) - TAG_SIZE
            cipher.open_into(index, final, piece, plain[out : out + size])
            out += size
            index += 1
        if index > MAX_SEGMENTS:
            raise SealedFormatError(f"the sealed data holds over {MAX_SEGMENTS} segments")
        if out:
            write(plain[:out])
        total += out
        if not ended:
            used = count * sealed_size
            sealed[: filled - used] = sealed[used:filled]
            filled -= used
    return total
