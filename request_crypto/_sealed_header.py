"""The header of sealed files: its bytes written, read and checked, and the keys behind it.

`sealed` holds the API around it; docs/FILE-FORMAT.md gives the exact bytes. Two versions:
v1 (recipients are compact JWEs only) and v2, written only when an AWS KMS key is a
recipient: one `aws-kms` line (the key's ARN and the KMS-wrapped file key) beside any JWE
lines. Every check that needs no key (magic, version, sizes, recipient count, each line's
shape) runs here, before any RSA or KMS call; nothing is trusted until the MAC is checked.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ._b64 import b64url_decode_canonical, b64url_encode
from ._jose import parse_compact
from ._stream import Readable
from .errors import InvalidArgumentError, SealedFormatError
from .limits import DEFAULT_MAX_WRAPPED_KEY_SIZE

__all__ = [
    "FORMAT_NAME",
    "KMS_LINE",
    "MAGIC",
    "MAGIC_KMS",
    "MAX_HEADER_SIZE",
    "MAX_KMS_BLOB",
    "MAX_RECIPIENTS",
    "RECIPIENT_ENC",
    "SALT_SIZE",
    "Header",
    "build_header",
    "derive",
    "header_mac",
    "kms_context",
    "parse_header",
    "read_header",
]

#: The first line: the format's name and version. v2 only when a KMS key is a recipient.
MAGIC = b"request-crypto-sealed/v1\n"
MAGIC_KMS = b"request-crypto-sealed/v2\n"
FORMAT_NAME = b"request-crypto-sealed/"
_VERSIONS = {MAGIC: 1, MAGIC_KMS: 2}
MIN_SEGMENT_SIZE = 1024
MAX_SEGMENT_SIZE = 4 * 1024 * 1024
MAX_HEADER_SIZE = 64 * 1024
MAX_RECIPIENTS = 64
SALT_SIZE = 32
#: The recipients' JWE: the key's own RSA-OAEP variant, and this content encryption.
RECIPIENT_ENC = "A256GCM"
#: A KMS ciphertext blob is at most 6144 bytes (the KMS API's own limit).
MAX_KMS_BLOB = 6144
_SEGMENT_LINE = b"segment-size "
_SALT_LINE = b"salt "
_RECIPIENT_LINE = b"recipient "
KMS_LINE = b"aws-kms "
_MAC_LINE = b"mac "
_B64_32 = 43  # base64url characters of 32 bytes, unpadded
#: A KMS key ARN: printable ASCII without spaces (AWS's own ARN alphabet is narrower).
_ARN = re.compile(rb"arn:[!-~]{1,2044}")
#: The HKDF labels: the same for v1 and v2 (the MAC covers the magic line, so no downgrade).
HEADER_INFO = b"request-crypto-sealed/v1 header"
PAYLOAD_INFO = b"request-crypto-sealed/v1 payload"
_READ_CHUNK = 16 * 1024


@dataclass(frozen=True)
class Header:
    """A parsed header; nothing in it is trusted until `mac` is checked with the file key."""

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


def derive(file_key: bytes, salt: bytes, info: bytes) -> bytes:
    """HKDF-SHA-256 of the file key: the header key or the payload key."""
    return HKDF(hashes.SHA256(), 32, salt, info).derive(file_key)


def header_mac(file_key: bytes, salt: bytes, authenticated: bytes) -> bytes:
    """HMAC-SHA-256 under the header key of every header byte before the mac line."""
    return hmac.new(derive(file_key, salt, HEADER_INFO), authenticated, hashlib.sha256).digest()


def kms_context(salt: bytes) -> dict[str, str]:
    """The KMS EncryptionContext binding a wrapped file key to one file (its random salt)."""
    return {"request-crypto-sealed": "v2", "salt": b64url_encode(salt)}


def build_header(
    file_key: bytes,
    salt: bytes,
    segment_size: int,
    recipients: list[str],
    kms: tuple[str, bytes] | None = None,
) -> bytes:
    """The header for `recipients` (compact JWEs of the file key) and an optional KMS line."""
    lines = [
        MAGIC_KMS if kms else MAGIC,
        _SEGMENT_LINE + b"%d\n" % segment_size,
        _SALT_LINE + b64url_encode(salt).encode("ascii") + b"\n",
    ]
    if kms:
        arn, blob = kms
        lines.append(b"%s%s %s\n" % (KMS_LINE, arn.encode("ascii"), b64url_encode(blob).encode()))
    lines += [_RECIPIENT_LINE + token.encode("ascii") + b"\n" for token in recipients]
    authenticated = b"".join(lines)
    mac = header_mac(file_key, salt, authenticated)
    header = authenticated + _MAC_LINE + b64url_encode(mac).encode("ascii") + b"\n"
    if len(header) > MAX_HEADER_SIZE:
        raise InvalidArgumentError(
            f"the header would be {len(header)} bytes, over {MAX_HEADER_SIZE}; use fewer "
            "recipients or smaller keys"
        )
    return header


def read_header(source: Readable) -> tuple[Header, bytes]:
    """Read and check the header; (header, the bytes read past it)."""
    data = bytearray()
    chunk = bytearray(_READ_CHUNK)
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
    return parse_header(bytes(data[:end])), bytes(data[end:])


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
    at = data.find(b"\n" + _MAC_LINE)
    if at < 0:
        return -1
    end = at + 1 + len(_MAC_LINE) + _B64_32 + 1
    return end if len(data) >= end else -1


def parse_header(header: bytes) -> Header:
    """Check every line of a whole header (MAC line included); SealedFormatError if bad."""
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
    salt = _b64_field(lines[2], _SALT_LINE, "salt")
    mac = _b64_field(lines[-1], _MAC_LINE, "mac")
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


def _segment_size(line: bytes) -> int:
    digits = line[len(_SEGMENT_LINE) :]
    if (
        not line.startswith(_SEGMENT_LINE)
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
    if decoded is None or len(value) != _B64_32:
        raise SealedFormatError(
            f"the sealed file's header has no valid {name!r} line (32 bytes in base64url)"
        )
    return decoded


def _kms_recipient(line: bytes) -> tuple[str, bytes]:
    """`aws-kms ARN BLOB`: the KMS key's ARN and the wrapped file key (1 to 6144 bytes)."""
    arn, space, text = line[len(KMS_LINE) :].partition(b" ")
    blob = (
        b64url_decode_canonical(text) if space and len(text) <= MAX_KMS_BLOB * 4 // 3 + 1 else None
    )
    if not _ARN.fullmatch(arn) or not blob or len(blob) > MAX_KMS_BLOB:
        raise SealedFormatError(
            "the sealed file's aws-kms line is not 'aws-kms ARN BLOB' (a key ARN, then 1 to "
            f"{MAX_KMS_BLOB} bytes in base64url)"
        )
    return arn.decode("ascii"), blob


def _recipient(line: bytes) -> tuple[str, str, str]:
    if not line.startswith(_RECIPIENT_LINE):
        raise SealedFormatError("the sealed file's header has a line that is not a recipient")
    token = line[len(_RECIPIENT_LINE) :]
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
