"""The `elastic` body: pack, unpack, and telling the two wire formats apart.

``body = base64url_nopad(utf8(JSON{"encryptedAESKey": K, "encryptedPayload": P}))``, members in
that order, exactly as `@elastic/request-crypto`'s packBody writes it.
"""

from __future__ import annotations

import base64
import json
import re
from enum import Enum
from typing import Any, NamedTuple

from ._b64 import (
    CHUNK,
    Decline,
    b64encode_standard,
    b64url_decode,
    b64url_encode,
    b64url_encode_padded,
    decode_standard_quads,
    iter_b64url_decode,
)
from ._json import dumps_utf8, measure_json
from .errors import MalformedBodyError

__all__ = ["ElasticBody", "Format", "detect_format", "pack_body", "unpack_body"]


class Format(str, Enum):
    """The two wire formats: the JavaScript-compatible one and one standard compact JWE."""

    ELASTIC = "elastic"
    JWE = "jwe"

    def __str__(self) -> str:
        return self.value


class ElasticBody(NamedTuple):
    encrypted_aes_key: str
    encrypted_payload: str


# What packBody writes; anything else still parses, through the general JSON path.
_CANONICAL = re.compile(
    rb'\{"encryptedAESKey":"([A-Za-z0-9_.-]*)","encryptedPayload":"([A-Za-z0-9+/=]*)"\}'
)


def pack_body(encrypted_aes_key: str, encrypted_payload: str) -> str:
    """Join the wrapped key and the encrypted payload into one base64url body."""
    # JSON.stringify's text, as packBody writes it (lone surrogates escaped, not a crash).
    return b64url_encode(
        dumps_utf8({"encryptedAESKey": encrypted_aes_key, "encryptedPayload": encrypted_payload})
    )


def unpack_body(body: str | bytes) -> ElasticBody:
    """Split an `elastic` body into its two parts (both still encrypted)."""
    decoded = b64url_decode(body, "the body")
    match = _CANONICAL.fullmatch(decoded)
    if match:
        return ElasticBody(match.group(1).decode("ascii"), match.group(2).decode("ascii"))
    return _unpack_json(decoded)


# The canonical form above, in pieces, for the streaming paths (large bodies in bounded memory).
_PREFIX = b'{"encryptedAESKey":"'
_SEPARATOR = b'","encryptedPayload":"'
_SUFFIX = b'"}'
_KEY_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-"
#: A canonical body whose wrapped key has not ended this far in is left to the general path.
_MAX_HEAD = 64 * 1024


def pack_encrypted_payload(encrypted_aes_key: str, payload: bytes | bytearray | memoryview) -> str:
    """`pack_body(key, standard_base64(payload))`, the same text, in bounded extra memory.

    Neither base64 text is ever held whole: the standard base64 of `payload` is produced a
    chunk at a time and fed straight into the outer base64url, written into one buffer the
    size of the body.
    """
    key = encrypted_aes_key.encode("ascii", "replace")
    if key.translate(None, _KEY_ALPHABET):  # would need JSON escaping: the general path
        return pack_body(encrypted_aes_key, b64encode_standard(payload).decode("ascii"))
    prefix = _PREFIX + key + _SEPARATOR
    total = len(prefix) + 4 * ((len(payload) + 2) // 3) + len(_SUFFIX)
    out = bytearray(4 * ((total + 2) // 3))
    position = 0
    carry = b""

    def emit(data: bytes, final: bool = False) -> None:
        nonlocal position, carry
        data = carry + data if carry else data
        cut = len(data) if final else len(data) - len(data) % 3
        encoded = b64url_encode_padded(data[:cut])
        out[position : position + len(encoded)] = encoded
        position += len(encoded)
        carry = data[cut:]

    emit(prefix)
    view = memoryview(payload)
    step = CHUNK // 4 * 3  # whole groups: no padding until the last piece
    for start in range(0, len(view), step):
        emit(b64encode_standard(view[start : start + step]))
    emit(_SUFFIX, final=True)
    return str(memoryview(out)[: (total * 4 + 2) // 3], "ascii")


def unpack_encrypted_payload(body: str | bytes) -> tuple[str, bytearray] | None:
    """`unpack_body` then the standard-base64 decode of the payload, in bounded extra memory.

    For a body in packBody's canonical form (what both implementations write) this returns the
    wrapped key and the decoded payload (salt, IV, tag, ciphertext), exactly what
    `unpack_body` + `decode_standard_base64` give. For anything else it returns None, and the
    caller takes that general path, which raises the error the body deserves.
    """
    try:
        return _unpack_streaming(body)
    except Decline:
        return None


def _unpack_streaming(body: str | bytes) -> tuple[str, bytearray]:
    pieces = iter_b64url_decode(body)
    head = b""
    for decoded in pieces:
        head += decoded
        separator = head.find(_SEPARATOR, len(_PREFIX))
        if separator >= 0:
            break
        if len(head) > _MAX_HEAD:
            raise Decline
    else:
        raise Decline
    key = head[len(_PREFIX) : separator]
    if not head.startswith(_PREFIX) or key.translate(None, _KEY_ALPHABET):
        raise Decline
    pending = head[separator + len(_SEPARATOR) :]
    del head
    # The decoded body is at most 3/4 of the body's length; the payload at most 3/4 of that.
    out = bytearray((max(len(body) * 3 // 4 - separator, 0) * 3) // 4 + 3)
    view = memoryview(out)
    position = 0
    for decoded in pieces:
        data = pending + decoded
        cut = (len(data) - 8) & ~3  # hold back the end: padding and the suffix live there
        if cut > 0:
            chunk = decode_standard_quads(data[:cut])
            if position + len(chunk) > len(out):  # pragma: no cover - sized above
                raise Decline
            view[position : position + len(chunk)] = chunk
            position += len(chunk)
            pending = data[cut:]
        else:
            pending = data
    if not pending.endswith(_SUFFIX):
        raise Decline
    try:
        # The very decoder of decode_standard_base64: the chunks before were whole groups of
        # the alphabet only, so its verdict on this tail is its verdict on the whole text.
        chunk = base64.b64decode(pending[: -len(_SUFFIX)], validate=True)
    except ValueError:  # binascii.Error
        raise Decline from None
    if position + len(chunk) > len(out):  # pragma: no cover - sized above
        raise Decline
    view[position : position + len(chunk)] = chunk
    position += len(chunk)
    view.release()
    del out[position:]
    return key.decode("ascii"), out


#: The envelope's own JSON budget. It holds two strings; the JavaScript side ignores any other
#: member, so a few are tolerated, but never the millions of values that would cost a GB to
#: parse before anything is authenticated.
ENVELOPE_MAX_VALUES = 64
ENVELOPE_MAX_DEPTH = 8


def _unpack_json(decoded: bytes) -> ElasticBody:
    shape = measure_json(decoded, ENVELOPE_MAX_VALUES, ENVELOPE_MAX_DEPTH)
    if shape.values > ENVELOPE_MAX_VALUES or shape.too_deep:
        raise MalformedBodyError(
            f"the decoded body is not an elastic envelope: it holds more than "
            f"{ENVELOPE_MAX_VALUES} JSON values or nests more than {ENVELOPE_MAX_DEPTH} levels"
        )
    try:
        # Strict UTF-8 as the JavaScript side reads it (json.loads(bytes) would also take
        # UTF-16/32 and a BOM): the same body must not mean something here and fail there.
        document: Any = json.loads(decoded.decode("utf-8"))
    except (ValueError, RecursionError):
        raise MalformedBodyError("the decoded body is not UTF-8 JSON") from None
    if not isinstance(document, dict):
        raise MalformedBodyError("the decoded body is not a JSON object")
    parts = []
    for member in ("encryptedAESKey", "encryptedPayload"):
        value = document.get(member)
        if not isinstance(value, str):
            raise MalformedBodyError(f"the body has no {member!r} string member")
        parts.append(value)
    return ElasticBody(*parts)


def detect_format(body: str | bytes) -> Format:
    """A compact JWE has exactly five dot-separated parts; an `elastic` body has no dot."""
    # find first: memchr speed, and an elastic body (no dot) needs no count at all.
    if isinstance(body, str):
        dots = body.count(".") if body.find(".") >= 0 else 0
    elif isinstance(body, (bytes, bytearray)):
        dots = body.count(b".") if body.find(b".") >= 0 else 0
    else:
        raise MalformedBodyError(f"a body must be str or bytes, not {type(body).__name__}")
    if dots == 0:
        return Format.ELASTIC
    if dots == 4:
        return Format.JWE
    raise MalformedBodyError(
        f"the body has {dots + 1} dot-separated parts: neither an elastic body (one part) "
        "nor a compact JWE (five parts)"
    )
