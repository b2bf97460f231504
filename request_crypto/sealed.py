"""Sealed files: envelope encryption of files and streams of any size, in constant memory.

A sealed file is a text header (the format and version, the segment size, a salt, one
standard compact JWE of the random 256-bit file key per recipient, optionally that key
wrapped by AWS KMS, and an HMAC of all that under a key derived from the file key), then the
data as AES-256-GCM segments (STREAM, see `_stream`). docs/FILE-FORMAT.md gives the exact
bytes; fixtures/sealed/ holds test vectors.

- `seal(src, dst, recipients, kms=...)` and `open_sealed(src, dst, keys)` stream between
  binary file objects (or to a path, which then appears only once complete). `keys` is any
  `KeySource` (a private key set, a PKCS#11 token, an RSA key in AWS KMS, a merged set:
  `keys.uri.open_key_source`), which unwraps the recipient's content key wherever its private
  key lives. With `kms` (a `DataKeySource`: `keys.aws_kms_data_key.KMSDataKey`), KMS
  `GenerateDataKey` makes the file key; `keys` may then be that KMS key instead.
- `SealedReader(src, keys)` is a seekable, readable file object over a sealed file: it
  decrypts only the segments a read touches.
- `inspect_sealed(src)` reads the recipients' kids, the segment size and the plaintext
  length without any key (that length is unauthenticated until the file is opened).
- `FileSealer` is one file's header and key: `seal` uses it once; a writer that keeps it can
  authenticate what it wrote without a private key (the receiver's archive sink).

Every check that needs no key (magic, version, sizes, recipient count, each line's shape)
runs before any RSA or KMS work (`_sealed_header` parses the header); a JWE recipient is
unwrapped in one place, `unwrap_file_key`.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol, Union, cast

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ._atomic import atomic_output
from ._b64 import b64url_encode
from ._sealed_header import (
    DEFAULT_SEGMENT_SIZE,
    FORMAT_NAME,
    KMS_LINE,
    MAC_LINE,
    MAGIC,
    MAGIC_KMS,
    MAX_HEADER_SIZE,
    MAX_RECIPIENTS,
    MAX_SEGMENT_SIZE,
    MIN_SEGMENT_SIZE,
    RECIPIENT_ENC,
    RECIPIENT_LINE,
    SALT_LINE,
    SEGMENT_LINE,
    Header,
    kms_context,
    read_header,
)
from ._stream import (
    TAG_SIZE,
    Readable,
    SegmentCipher,
    decrypt_segments,
    encrypt_segments,
    segment_layout,
)
from .errors import (
    DecryptionError,
    HeaderAuthenticationError,
    InvalidArgumentError,
    KeySourceError,
    NoRecipientKeyError,
    RequestCryptoError,
    SealedFormatError,
    SegmentError,
    TruncatedError,
)
from .keys.jwks import JWKManager
from .keys.source import KeySource, is_key_source, open_compact
from .limits import DEFAULT_MAX_WRAPPED_KEY_SIZE

__all__ = [
    "DEFAULT_SEGMENT_SIZE",
    "MAGIC",
    "MAX_HEADER_SIZE",
    "MAX_RECIPIENTS",
    "DataKeySource",
    "FileSealer",
    "HeaderAuthenticationError",
    "NoRecipientKeyError",
    "SealedFormatError",
    "SealedInfo",
    "SealedReader",
    "SegmentError",
    "TruncatedError",
    "inspect_sealed",
    "is_sealed",
    "open_sealed",
    "seal",
    "unwrap_file_key",
]

FILE_KEY_SIZE = 32
SALT_SIZE = 32
_HEADER_INFO = b"request-crypto-sealed/v1 header"
_PAYLOAD_INFO = b"request-crypto-sealed/v1 payload"

#: Where `open_sealed` and `seal` write: a binary file object, or a path (atomic).
Destination = Union[IO[bytes], str, "os.PathLike[str]"]


class DataKeySource(Protocol):
    """A key service making and unwrapping file keys (`keys.aws_kms_data_key.KMSDataKey`)."""

    def generate(self, context: dict[str, str]) -> tuple[bytes, str, bytes]:
        """A new 32-byte key: (plaintext, the service key's id, the wrapped blob)."""
        ...

    def unwrap(self, key_id: str, blob: bytes, context: dict[str, str]) -> bytes | None:
        """The key in `blob`, or None when it is not this key's (or this context's)."""
        ...


#: What opens a sealed file: any key source holding a recipient's private key, or the KMS
#: key of its aws-kms recipient.
OpeningKeys = KeySource | DataKeySource


@dataclass(frozen=True)
class SealedInfo:
    """What a sealed file says about itself without a key. Nothing here is authenticated."""

    kids: tuple[str, ...]
    algs: tuple[str, ...]
    segment_size: int
    header_size: int
    segments: int
    plaintext_length: int
    kms_keys: tuple[str, ...] = ()
    version: int = 1

    def to_dict(self) -> dict[str, Any]:
        """What `inspect` prints: JSON-ready, kids and sizes only."""
        return {
            "format": "sealed",
            "version": self.version,
            "recipients": [{"aws_kms_key": arn} for arn in self.kms_keys]
            + [
                {"kid": kid, "alg": alg, "enc": RECIPIENT_ENC}
                for kid, alg in zip(self.kids, self.algs, strict=True)
            ],
            "segment_size": self.segment_size,
            "segments": self.segments,
            "header_size": self.header_size,
            "plaintext_length": self.plaintext_length,
            "authenticated": False,
        }


def is_sealed(prefix: bytes) -> bool:
    """Whether data starting with `prefix` (a few dozen bytes) claims to be a sealed file."""
    return prefix.startswith(FORMAT_NAME) or (
        len(prefix) < len(FORMAT_NAME) and bool(prefix) and FORMAT_NAME.startswith(prefix)
    )


# ---------------------------------------------------------------------------------------------
# Keys


def _derive(file_key: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt, info).derive(file_key)


def _header_mac(file_key: bytes, salt: bytes, authenticated: bytes) -> bytes:
    return hmac.new(_derive(file_key, salt, _HEADER_INFO), authenticated, hashlib.sha256).digest()


def unwrap_file_key(keys: KeySource, recipient: str) -> bytes:
    """The file key inside one recipient's compact JWE: the one place a key is unwrapped.

    `keys` may hold the private key anywhere (a file, an HSM, KMS): the source unwraps the
    content key (`KeySource.unwrap`), the 32-byte file key is AES-GCM-decrypted here
    (`open_compact`). Every way the key does not open it is the one
    HeaderAuthenticationError, so no answer tells a wrong key from a forged JWE; a source
    that cannot answer (KeySourceError, e.g. an unreachable HSM or KMS) is raised as such,
    never taken for a wrong key.
    """
    try:
        file_key = open_compact(
            keys,
            recipient,
            what="a sealed file's recipient",
            max_token_size=DEFAULT_MAX_WRAPPED_KEY_SIZE,
            max_plaintext=FILE_KEY_SIZE,
        ).payload
    except DecryptionError:
        file_key = b""
    except KeySourceError:
        raise
    except RequestCryptoError as exc:  # a too-long plaintext, an alg the key is not for
        raise HeaderAuthenticationError() from exc
    if len(file_key) != FILE_KEY_SIZE:
        raise HeaderAuthenticationError()
    return file_key


def _file_key(header: Header, keys: OpeningKeys) -> bytes:
    """Unwrap with the first recipient the key source can decrypt for (or the KMS data key);
    then check the MAC."""
    file_key = None
    if is_key_source(keys):
        for kid, recipient in zip(header.kids, header.recipients, strict=True):
            if keys.can_decrypt(kid):
                file_key = unwrap_file_key(keys, recipient)
                break
    else:
        data_key = cast(DataKeySource, keys)  # not a KeySource: the other OpeningKeys
        for arn, blob in header.kms:
            file_key = data_key.unwrap(arn, blob, kms_context(header.salt)) or b""
    if file_key is None:
        raise NoRecipientKeyError(
            [*header.kids, *(f"aws-kms:{arn}" for arn, _ in header.kms)] or ["(none)"]
        )
    if len(file_key) != FILE_KEY_SIZE or not hmac.compare_digest(
        _header_mac(file_key, header.salt, header.authenticated), header.mac
    ):
        raise HeaderAuthenticationError()
    return file_key


def _recipient_set(
    recipients: Iterable[Mapping[str, Any]] | JWKManager, kms: bool = False
) -> JWKManager:
    """The recipients as a key set: a list of public JWKs, or a set already loaded (as is);
    with a KMS recipient besides (`kms`), the set may be empty."""
    if isinstance(recipients, (Mapping, str, bytes)):
        raise InvalidArgumentError(
            "recipients must be a list of public JWKs (e.g. [jwks.get_public_jwk(kid)])"
        )
    if isinstance(recipients, JWKManager):
        keys = recipients
    else:
        keys = JWKManager({"keys": [dict(jwk) for jwk in recipients]})
    if not 1 <= len(keys.kids()) + kms <= MAX_RECIPIENTS:
        raise InvalidArgumentError(
            f"a sealed file has 1 to {MAX_RECIPIENTS} recipients, not {len(keys.kids()) + kms}"
        )
    return keys


# ---------------------------------------------------------------------------------------------
# Header: writing


def _header(
    recipients: JWKManager,
    file_key: bytes,
    segment_size: int,
    salt: bytes,
    kms: tuple[str, bytes] | None,
) -> bytes:
    """The header: v1, or v2 with the KMS line `kms` (ARN, blob) first."""
    lines = [
        MAGIC_KMS if kms else MAGIC,
        SEGMENT_LINE + b"%d\n" % segment_size,
        SALT_LINE + b64url_encode(salt).encode("ascii") + b"\n",
    ]
    if kms:
        arn, blob = kms
        lines.append(b"%s%s %s\n" % (KMS_LINE, arn.encode("ascii"), b64url_encode(blob).encode()))
    for kid in recipients.kids():
        token = recipients.encrypt_jwe(kid, file_key, enc=RECIPIENT_ENC)
        lines.append(RECIPIENT_LINE + token.encode("ascii") + b"\n")
    authenticated = b"".join(lines)
    mac = _header_mac(file_key, salt, authenticated)
    header = authenticated + MAC_LINE + b64url_encode(mac).encode("ascii") + b"\n"
    if len(header) > MAX_HEADER_SIZE:
        raise InvalidArgumentError(
            f"the header would be {len(header)} bytes, over {MAX_HEADER_SIZE}; use fewer "
            "recipients or smaller keys"
        )
    return header


def _payload_cipher(header: Header, keys: OpeningKeys) -> SegmentCipher:
    return SegmentCipher(_derive(_file_key(header, keys), header.salt, _PAYLOAD_INFO))


# ---------------------------------------------------------------------------------------------
# Streaming: seal and open


class _ReadAdapter:
    """`readinto` over an object that only has `read` (a generator wrapper, say)."""

    def __init__(self, source: Any) -> None:
        self._read = source.read

    def readinto(self, buffer: memoryview) -> int:
        data = self._read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _readable(source: Any) -> Readable:
    if hasattr(source, "readinto"):
        return source  # type: ignore[no-any-return]
    if hasattr(source, "read"):
        return _ReadAdapter(source)
    raise InvalidArgumentError(
        f"a source must be a binary file object, not {type(source).__name__}"
    )


def _to_destination(dst: Destination, mode: int, work: Any) -> int:
    """Run `work(write)` into `dst`; a path is written atomically (whole, or not at all)."""
    if isinstance(dst, (str, os.PathLike)):
        with atomic_output(dst, mode=mode) as handle:
            result: int = work(handle.write)
        return result
    if not hasattr(dst, "write"):
        raise InvalidArgumentError(
            f"a destination must be a binary file object or a path, not {type(dst).__name__}"
        )
    return int(work(dst.write))


class FileSealer:
    """One sealed file's header and payload key, made once by whoever writes that file.

    `seal` makes one per file and drops it. A writer that must show what it wrote reads back
    (the receiver's archive sink) keeps it: `check` authenticates a sealed file against this
    header and key without any private key. It writes once: a second file under the same key
    and nonces would be GCM nonce reuse. `recipients`: public JWKs, or a `JWKManager` of
    them (every key a recipient), which a writer of many files loads once. With `kms`, the
    file key comes from its `generate` (KMS GenerateDataKey) and the header is v2.
    """

    def __init__(
        self,
        recipients: Iterable[Mapping[str, Any]] | JWKManager,
        *,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
        kms: DataKeySource | None = None,
    ) -> None:
        if not isinstance(segment_size, int) or not (
            MIN_SEGMENT_SIZE <= segment_size <= MAX_SEGMENT_SIZE
            and not segment_size & (segment_size - 1)
        ):
            raise InvalidArgumentError(
                f"segment_size must be a power of two from {MIN_SEGMENT_SIZE} to {MAX_SEGMENT_SIZE}"
            )
        keys = _recipient_set(recipients, kms is not None)
        salt = os.urandom(SALT_SIZE)
        wrapped = None
        if kms is None:
            file_key = os.urandom(FILE_KEY_SIZE)
        else:
            file_key, arn, blob = kms.generate(kms_context(salt))
            wrapped = (arn, blob)
        self.header = _header(keys, file_key, segment_size, salt, wrapped)
        self.segment_size = segment_size
        self._cipher = SegmentCipher(_derive(file_key, salt, _PAYLOAD_INFO))
        self._written = False

    def write(self, src: Any, write: Callable[[Any], object]) -> int:
        """Write the header and every segment of `src` through `write`; the plaintext length."""
        if self._written:
            raise InvalidArgumentError("a FileSealer writes one file; make a new one")
        self._written = True
        write(self.header)
        return encrypt_segments(self._cipher, _readable(src), write, self.segment_size)

    def check(self, src: Any) -> int:
        """Read back a file this sealer wrote, authenticating every segment; its length.

        Raises a `RequestCryptoError` subclass if it is another file, cut short or changed.
        """
        source = _readable(src)
        header, rest = read_header(source)
        if header.size != len(self.header) or not self.header.startswith(header.authenticated):
            raise HeaderAuthenticationError()
        if not self.header.endswith(b64url_encode(header.mac).encode("ascii") + b"\n"):
            raise HeaderAuthenticationError()
        return decrypt_segments(self._cipher, source, _discard, self.segment_size, rest)


def _discard(data: memoryview) -> None:
    """A `write` that keeps nothing (`FileSealer.check` only authenticates)."""


def seal(
    src: Any,
    dst: Destination,
    recipients: Iterable[Mapping[str, Any]],
    *,
    segment_size: int = DEFAULT_SEGMENT_SIZE,
    kms: DataKeySource | None = None,
) -> int:
    """Seal everything `src` holds to `recipients` (public JWKs); returns the plaintext length.

    `dst` is a binary file object, or a path that appears (0644) only once sealing is done.
    With `kms`, the file key is a KMS data key (GenerateDataKey), stored wrapped by KMS and
    bound to this file; `recipients` may then be empty, else each also gets the key.
    """
    sealer = FileSealer(recipients, segment_size=segment_size, kms=kms)
    source = _readable(src)
    return _to_destination(dst, 0o644, lambda write: sealer.write(source, write))


def open_sealed(src: Any, dst: Destination, keys: OpeningKeys) -> int:
    """Open a sealed file from `src` into `dst` with a key source holding a recipient's
    private key (or the KMS key of its aws-kms recipient); returns its length.

    Every piece reaches `dst` only after it was authenticated. A path `dst` appears only
    after the final segment was; a file object may hold a prefix of the data if a later
    segment fails, so discard it on error.
    """
    source = _readable(src)
    header, rest = read_header(source)
    cipher = _payload_cipher(header, keys)
    return _to_destination(
        dst,
        0o600,
        lambda write: decrypt_segments(cipher, source, write, header.segment_size, rest),
    )


def inspect_sealed(src: Any) -> SealedInfo:
    """Kids, segment size and plaintext length of a sealed file, without any key.

    The length comes from the file's size (seeking when it can, else reading to the end in
    constant memory); it is only authenticated when the file is opened.
    """
    source = _readable(src)
    header, rest = read_header(source)
    size = len(rest)
    if _seekable(src):
        here = int(src.tell())
        size += int(src.seek(0, io.SEEK_END)) - here
    else:
        buffer = memoryview(bytearray(1 << 20))
        while count := source.readinto(buffer):
            size += count
    segments, length = segment_layout(size, header.segment_size)
    return SealedInfo(
        header.kids,
        header.algs,
        header.segment_size,
        header.size,
        segments,
        length,
        tuple(arn for arn, _ in header.kms),
        header.version,
    )


def _seekable(src: Any) -> bool:
    try:
        return bool(src.seekable())
    except (AttributeError, OSError, ValueError):
        return False


# ---------------------------------------------------------------------------------------------
# Random access


class SealedReader(io.RawIOBase):
    """A read-only, seekable file object over a sealed file; decrypts only what is read.

    Built on a seekable binary `src` (a file opened "rb"), it reads the header, unwraps the
    file key and authenticates the final segment at once, so `length` is authenticated and a
    truncated file fails here, not halfway through a read. It caches one segment.
    """

    def __init__(self, src: Any, keys: OpeningKeys, *, close_source: bool = False) -> None:
        super().__init__()
        if not _seekable(src):
            raise InvalidArgumentError("SealedReader needs a seekable source; use open_sealed")
        self._src = src
        self._close_source = close_source
        src.seek(0)
        header, _rest = read_header(_readable(src))
        self._header = header
        self._segments, self.length = segment_layout(
            int(src.seek(0, io.SEEK_END)) - header.size, header.segment_size
        )
        self._cipher = _payload_cipher(header, keys)
        self._cached_index = -1
        self._cached = b""
        self._position = 0
        self._segment(self._segments - 1)

    @classmethod
    def open(cls, path: str | os.PathLike[str], keys: OpeningKeys) -> SealedReader:
        """A reader over the sealed file at `path`; closing the reader closes the file."""
        handle = Path(path).open("rb")  # noqa: SIM115 - the reader owns it, closes it
        try:
            return cls(handle, keys, close_source=True)
        except BaseException:
            handle.close()
            raise

    def close(self) -> None:
        if not self.closed and self._close_source:
            self._src.close()
        super().close()

    @property
    def kids(self) -> tuple[str, ...]:
        """The recipients' kids, in header order."""
        return self._header.kids

    @property
    def segment_size(self) -> int:
        """Plaintext bytes per segment (the last one may be shorter)."""
        return self._header.segment_size

    def readable(self) -> bool:
        """Always: a reader decrypts on demand."""
        return True

    def seekable(self) -> bool:
        """Always: any offset maps to one segment, decrypted when read."""
        return True

    def tell(self) -> int:
        """The plaintext offset the next read starts at."""
        self._check_open()
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Move to a plaintext offset; nothing is read or decrypted until the next read."""
        self._check_open()
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self.length}.get(whence)
        if base is None:
            raise InvalidArgumentError(f"invalid whence ({whence})")
        if base + offset < 0:
            raise InvalidArgumentError(f"negative seek position {base + offset}")
        self._position = base + offset
        return self._position

    def readinto(self, buffer: Any) -> int:
        """Fill `buffer` from the current offset, decrypting only the segments it spans."""
        self._check_open()
        out = memoryview(buffer).cast("B")
        done = 0
        size = self._header.segment_size
        while done < len(out) and self._position < self.length:
            index, offset = divmod(self._position, size)
            segment = self._segment(index)
            count = min(len(out) - done, len(segment) - offset)
            out[done : done + count] = segment[offset : offset + count]
            done += count
            self._position += count
        return done

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("I/O operation on closed SealedReader")

    def _segment(self, index: int) -> bytes:
        if index != self._cached_index:
            size = self._header.segment_size
            sealed_size = size + TAG_SIZE
            final = index == self._segments - 1
            length = (self.length - index * size if final else size) + TAG_SIZE
            self._src.seek(self._header.size + index * sealed_size)
            sealed = _read_exactly(self._src, length)
            self._cached = self._cipher.open(index, final, memoryview(sealed))
            self._cached_index = index
        return self._cached


def _read_exactly(src: Any, size: int) -> bytes:
    pieces = []
    while size:
        piece = src.read(size)
        if not piece:
            raise TruncatedError()  # the file shrank since the reader measured it
        pieces.append(piece)
        size -= len(piece)
    return b"".join(pieces)
