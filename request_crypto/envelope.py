"""The `elastic` body: pack, unpack, and telling the two wire formats apart.

``body = base64url_nopad(utf8(JSON{"encryptedAESKey": K, "encryptedPayload": P}))``, members in
that order, exactly as `@elastic/request-crypto`'s packBody writes it.
"""

from __future__ import annotations

import json
import re
from enum import Enum
from typing import Any, NamedTuple

from ._b64 import b64url_decode, b64url_encode
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
    text = json.dumps(
        {"encryptedAESKey": encrypted_aes_key, "encryptedPayload": encrypted_payload},
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return b64url_encode(text.encode("utf-8"))


def unpack_body(body: str | bytes) -> ElasticBody:
    """Split an `elastic` body into its two parts (both still encrypted)."""
    decoded = b64url_decode(body, "the body")
    match = _CANONICAL.fullmatch(decoded)
    if match:
        return ElasticBody(match.group(1).decode("ascii"), match.group(2).decode("ascii"))
    return _unpack_json(decoded)


def _unpack_json(decoded: bytes) -> ElasticBody:
    try:
        document: Any = json.loads(decoded)
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
    if isinstance(body, str):
        dots = body.count(".")
    elif isinstance(body, (bytes, bytearray)):
        dots = body.count(b".")
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
