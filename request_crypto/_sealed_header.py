"""The sealed format's header: its constants, and reading it back (no key needed).

`sealed` writes headers and holds every key operation; this module only parses, and refuses
anything malformed (magic, version, sizes, recipient count, each line's shape) before any RSA
or KMS work. Nothing here is trusted until `sealed` has checked the header's MAC. Two
versions: v1 (recipients are compact JWEs only) and v2, written only when an AWS KMS key is a
recipient: one `aws-kms` line (the key's ARN and the KMS-wrapped file key) before any JWE
lines, its blob bound to the file by `kms_context` (docs/FILE-FORMAT.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ._b64 import b64url_decode_canonical, b64url_encode
from ._jose import parse_compact
from ._stream import Readable
from .errors import SealedFormatError
from .limits import DEFAULT_MAX_WRAPPED_KEY_SIZE

__all__ = [
    "B64_32",
    "DEFAULT_SEGMENT_SIZE",
    "FORMAT_NAME",
    "KMS_LINE",
    "MAC_LINE",
    "MAGIC",
    "MAGIC_KMS",
    "MAX_HEADER_SIZE",
    "MAX_RECIPIENTS",
    "MAX_SEGMENT_SIZE",
    "MIN_SEGMENT_SIZE",
    "RECIPIENT_ENC",
    "RECIPIENT_LINE",
    "SALT_LINE",
    "SEGMENT_LINE",
    "Header",
    "kms_context",
    "read_header",
]

#: The first line: the format's name and version. v2 only when a KMS key is a recipient.
MAGIC = b"request-crypto-sealed/v1\n"
MAGIC_KMS = b"request-crypto-sealed/v2\n"
FORMAT_NAME = b"request-crypto-sealed/"
_VERSIONS = {MAGIC: 1, MAGIC_KMS: 2}
DEFAULT_SEGMENT_SIZE = 64 * 1024
#: Segment sizes are powers of two in this range: a reader holds a few segments in memory.
MIN_SEGMENT_SIZE = 1024
MAX_SEGMENT_SIZE = 4 * 1024 * 1024
MAX_HEADER_SIZE = 64 * 1024
MAX_RECIPIENTS = 64
#: The recipients' JWE: the key's own RSA-OAEP variant, and this content encryption.
RECIPIENT_ENC = "A256GCM"
SEGMENT_LINE = b"segment-size "
SALT_LINE = b"salt "
RECIPIENT_LINE = b"recipient "
MAC_LINE = b"mac "
KMS_LINE = b"aws-kms "
#: A KMS ciphertext blob is at most 6144 bytes (the KMS API's own limit).
MAX_KMS_BLOB = 6144
#: A KMS key ARN: printable ASCII without spaces (AWS's own ARN alphabet is narrower).
_ARN = re.compile(rb"arn:[!-~]{1,2044}")
B64_32 = 43  # base64url characters of 32 bytes, unpadded
READ_CHUNK = 16 * 1024


@dataclass(frozen=True)
class Header:
    """A parsed header; `authenticated` is what its MAC covers."""

    version: int
    segment_size: int
    salt: bytes
    recipients: tuple[str, ...]  # compact JWEs
    kids: tuple[str, ...]
    algs: tuple[str, ...]
    kms: tuple[tuple[str, bytes], ...]  # (KMS key ARN, wrapped file key): v2, exactly one
    mac: bytes
    authenticated: bytes  # every header byte the MAC covers
    size: int  # the whole header, MAC line included


def read_header(source: Readable) -> tuple[Header, bytes]:
    """Read and check the header; (header, the bytes read past it)."""
    data = bytearray()
    chunk = bytearray(READ_CHUNK)
    view = memoryview(chunk)
    end = -1
    while end < 0:
        count = source.readinto(view)
        if not count:
            break
        data += view[:count]
        if len(data) >= len(MAGIC) and bytes(data[: len(MAGIC)]) not in _VERSIONS:
            _refuse_start(bytes(data[: len(MAGIC)]))
        end = _header_end(data)
        if end < 0 and len(data) > MAX_HEADER_SIZE:
            raise SealedFormatError(
                f"the sealed file's header is longer than {MAX_HEADER_SIZE} bytes; refused unread"
            )
    if end < 0:
        if not data:
            raise SealedFormatError("the input is empty; it is not a sealed file")
        if bytes(data[: len(MAGIC)]) not in _VERSIONS:
            _refuse_start(bytes(data))
        raise SealedFormatError("the sealed file ends inside its header (truncated)")
    return _parse_header(bytes(data[:end])), bytes(data[end:])


def _refuse_start(start: bytes) -> None:
    if start.startswith(FORMAT_NAME):
        version = start[len(FORMAT_NAME) :].split(b"\n")[0][:16]
        raise SealedFormatError(
            f"sealed-file version {version.decode('ascii', 'replace')!r} is not supported; "
            "this version reads v1 and v2"
        )
    raise SealedFormatError(
        f"the input is not a sealed file (it does not start with {MAGIC.decode('ascii').strip()!r})"
    )


def _header_end(data: bytearray) -> int:
    """Where the header ends (after the MAC line), or -1 if it is not all here yet."""
    at = data.find(b"\n" + MAC_LINE)
    if at < 0:
        return -1
    end = at + 1 + len(MAC_LINE) + B64_32 + 1
    return end if len(data) >= end else -1


def _parse_header(header: bytes) -> Header:
    lines = header.split(b"\n")[:-1]  # every line ends with \n: the last piece is empty
    if len(header) > MAX_HEADER_SIZE:
        raise SealedFormatError(f"the sealed file's header is over {MAX_HEADER_SIZE} bytes")
    version = _VERSIONS.get(lines[0] + b"\n") if lines else None
    if version is None:
        _refuse_start(header[: len(MAGIC)])
    if len(lines) < 5:
        raise SealedFormatError("the sealed file's header has no recipient")
    recipients = lines[3:-1]
    if len(recipients) > MAX_RECIPIENTS:
        raise SealedFormatError(
            f"the sealed file names {len(recipients)} recipients, over the limit of "
            f"{MAX_RECIPIENTS}"
        )
    segment_size = _segment_size(lines[1])
    salt = _b64_field(lines[2], SALT_LINE, "salt")
    mac = _b64_field(lines[-1], MAC_LINE, "mac")
    kms = tuple(_kms_recipient(line) for line in recipients if line.startswith(KMS_LINE))
    if len(kms) != (1 if version == 2 else 0) or (kms and not recipients[0].startswith(KMS_LINE)):
        raise SealedFormatError(
            "a v2 sealed file's header has exactly one aws-kms line, the first recipient; "
            "a v1 header has none"
        )
    tokens, kids, algs = [], [], []
    for line in recipients[len(kms) :]:
        token, kid, alg = _recipient(line)
        if kid in kids:
            raise SealedFormatError(f"the sealed file names recipient {kid!r} twice")
        tokens.append(token)
        kids.append(kid)
        algs.append(alg)
    authenticated = header[: len(header) - len(lines[-1]) - 1]
    return Header(
        version or 1,
        segment_size,
        salt,
        tuple(tokens),
        tuple(kids),
        tuple(algs),
        kms,
        mac,
        authenticated,
        len(header),
    )


def kms_context(salt: bytes) -> dict[str, str]:
    """The KMS EncryptionContext binding a wrapped file key to one file (its random salt)."""
    return {"request-crypto-sealed": "v2", "salt": b64url_encode(salt)}


def _kms_recipient(line: bytes) -> tuple[str, bytes]:
    """`aws-kms ARN BLOB`: the KMS key's ARN and the wrapped file key (1 to 6144 bytes)."""
    arn, space, text = line[len(KMS_LINE) :].partition(b" ")
    fits = space and len(text) <= MAX_KMS_BLOB * 4 // 3 + 1
    blob = b64url_decode_canonical(text) if fits else None
    if not _ARN.fullmatch(arn) or not blob or len(blob) > MAX_KMS_BLOB:
        raise SealedFormatError(
            "the sealed file's aws-kms line is not 'aws-kms ARN BLOB' (a key ARN, then 1 to "
            f"{MAX_KMS_BLOB} bytes in base64url)"
        )
    return arn.decode("ascii"), blob


def _segment_size(line: bytes) -> int:
    digits = line[len(SEGMENT_LINE) :]
    if (
        not line.startswith(SEGMENT_LINE)
        or not digits.isdigit()
        or len(digits) > 8
        or digits.startswith(b"0")
    ):
        raise SealedFormatError("the sealed file's header has no valid 'segment-size' line")
    size = int(digits)
    if not MIN_SEGMENT_SIZE <= size <= MAX_SEGMENT_SIZE or size & (size - 1):
        raise SealedFormatError(
            f"the sealed file's segment size {size} is refused: it must be a power of two "
            f"from {MIN_SEGMENT_SIZE} to {MAX_SEGMENT_SIZE}"
        )
    return size


def _b64_field(line: bytes, prefix: bytes, name: str) -> bytes:
    value = line[len(prefix) :]
    decoded = b64url_decode_canonical(value) if line.startswith(prefix) else None
    if decoded is None or len(value) != B64_32:
        raise SealedFormatError(
            f"the sealed file's header has no valid {name!r} line (32 bytes in base64url)"
        )
    return decoded


def _recipient(line: bytes) -> tuple[str, str, str]:
    if not line.startswith(RECIPIENT_LINE):
        raise SealedFormatError("the sealed file's header has a line that is not a recipient")
    token = line[len(RECIPIENT_LINE) :]
    if len(token) > DEFAULT_MAX_WRAPPED_KEY_SIZE:
        raise SealedFormatError(
            f"a recipient of the sealed file is {len(token)} bytes, over "
            f"{DEFAULT_MAX_WRAPPED_KEY_SIZE}"
        )
    jwe = parse_compact(token)
    if jwe.header.get("enc") != RECIPIENT_ENC or "zip" in jwe.header:
        raise SealedFormatError(
            f"a recipient of the sealed file is not {RECIPIENT_ENC} without compression"
        )
    if not jwe.kid:
        raise SealedFormatError("a recipient of the sealed file has no 'kid'")
    return token.decode("ascii"), jwe.kid, jwe.alg
