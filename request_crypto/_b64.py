"""Strict base64url: bodies come from the internet, so anything off-alphabet is refused.

Python's lenient decoders silently skip bad characters; these check the whole input at C speed
(``bytes.translate`` with a delete set) before decoding.
"""

from __future__ import annotations

import base64
import binascii

from .errors import MalformedBodyError

_URL_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_URL_TO_STANDARD = bytes.maketrans(b"-_", b"+/")


def b64url_encode(data: bytes) -> str:
    """base64url without ``=`` padding, as the JavaScript side writes it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def ascii_bytes(data: str | bytes | bytearray | memoryview, what: str) -> bytes:
    if isinstance(data, str):
        try:
            return data.encode("ascii")
        except UnicodeEncodeError:
            raise MalformedBodyError(f"{what} contains non-ASCII characters") from None
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise MalformedBodyError(f"{what} must be str or bytes, not {type(data).__name__}")


def b64url_decode(data: str | bytes, what: str) -> bytes:
    """Decode base64url with or without ``=`` padding; anything else is a MalformedBodyError."""
    raw = ascii_bytes(data, what).rstrip(b"=")
    if raw.translate(None, _URL_ALPHABET) or len(raw) % 4 == 1:
        raise MalformedBodyError(f"{what} is not valid base64url")
    try:
        return binascii.a2b_base64(raw.translate(_URL_TO_STANDARD) + b"=" * (-len(raw) % 4))
    except binascii.Error:  # pragma: no cover - excluded by the checks above
        raise MalformedBodyError(f"{what} is not valid base64url") from None
