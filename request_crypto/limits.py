"""The size limits, in one place: every body may come from an attacker.

Each limit is checked before the work it bounds (RSA, PBKDF2, inflate, JSON parsing). They
travel together as one frozen `Limits` object, validated once when it is built, so a
misspelt limit is a type error and a bad value fails at configuration time, not per body:

    RequestDecryptor(jwks, limits=Limits(max_body_size=64 * 1024 * 1024))
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields

from .errors import InvalidArgumentError

__all__ = [
    "DEFAULT_LIMITS",
    "DEFAULT_MAX_BODY_SIZE",
    "DEFAULT_MAX_INFLATED_SIZE",
    "DEFAULT_MAX_JSON_DEPTH",
    "DEFAULT_MAX_JSON_VALUES",
    "DEFAULT_MAX_WRAPPED_KEY_SIZE",
    "Limits",
    "format_size",
    "parse_size",
]

#: A whole body (either format), and a compact JWE given to JWKManager.decrypt directly.
#: 32 MiB holds an `elastic` body of a 16 MiB plaintext (base64 twice: x1.78), and keeps what
#: decoding a body copies (~3x for a `jwe` text) well inside a 256 MiB peak per body.
DEFAULT_MAX_BODY_SIZE = 32 * 1024 * 1024
#: The `elastic` wrapped key is ~1 KB for RSA-4096; 8 KiB is ample and bounds the RSA work.
DEFAULT_MAX_WRAPPED_KEY_SIZE = 8 * 1024
#: A decrypted payload, either format (after DEFLATE, for a JWE given to JWKManager.decrypt:
#: a zip bomb is stopped one byte past it). Telemetry is a few MB; 16 MiB leaves margin while
#: bounding the worst string: one non-ASCII character makes Python store a 16 MiB string in
#: 64 MiB, twice on the standard-library parser's path.
DEFAULT_MAX_INFLATED_SIZE = 16 * 1024 * 1024
#: JSON values in one decrypted payload, member names included (the scan counts one per
#: `[`, `{`, `,` and `:` outside strings, plus one). Parsed, each costs 8 to ~200 bytes, so
#: bytes alone do not bound memory: `[{},{},...]` is 24x its size. 1,000,000 values is ~20x a
#: dense 1 MB telemetry document (~130,000 values per MB) and parses in under ~200 MiB,
#: whatever the values are.
DEFAULT_MAX_JSON_VALUES = 1_000_000
#: Containers nested in one decrypted payload. Real telemetry nests under 20 levels; 256
#: leaves a wide margin and keeps recursive consumers (the parsers, json.dumps, a sink's own
#: walk at up to 3 frames a level) under Python's recursion limit of 1,000.
DEFAULT_MAX_JSON_DEPTH = 256


#: The unit of each limit, for error messages.
_UNITS = {"max_json_values": "values", "max_json_depth": "levels"}


@dataclass(frozen=True, kw_only=True)
class Limits:
    """What one body may cost a receiver; every field is a whole number >= 1.

    Build one with only the fields to change (``Limits(max_body_size=...)``) or derive one
    with `dataclasses.replace`; both validate. The defaults are the DEFAULT_* constants,
    whose comments above say why each value was chosen.
    """

    #: Bytes of a whole body as received (either format; a compact JWE given to
    #: `JWKManager.decrypt` too). Checked first, before anything is decoded.
    max_body_size: int = DEFAULT_MAX_BODY_SIZE
    #: Bytes of the `elastic` format's wrapped key (a compact JWE), checked before its RSA work.
    max_wrapped_key_size: int = DEFAULT_MAX_WRAPPED_KEY_SIZE
    #: Bytes of a decrypted payload, either format, checked before the payload is decrypted
    #: where its length shows (the ciphertext), else while inflating.
    max_inflated_size: int = DEFAULT_MAX_INFLATED_SIZE
    #: JSON values in a decrypted payload, member names included, counted before the parse.
    max_json_values: int = DEFAULT_MAX_JSON_VALUES
    #: Levels of nested containers in a decrypted payload, checked before the parse.
    max_json_depth: int = DEFAULT_MAX_JSON_DEPTH

    def __post_init__(self) -> None:
        for limit in fields(self):
            value = getattr(self, limit.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                unit = _UNITS.get(limit.name, "bytes")
                raise InvalidArgumentError(
                    f"{limit.name} must be a whole number of {unit} >= 1, not {value!r}"
                )


#: The limits used wherever none are given.
DEFAULT_LIMITS = Limits()


# Sizes as operators write them (`--max-body 64MiB`), for every command and setting.

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1000,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1000**3,
    "gib": 1024**3,
}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*")


def parse_size(text: str) -> int:
    """``1048576``, ``512KiB``, ``10MB`` (10**7), ``64MiB``, ``1G`` (binary) -> bytes (>= 1)."""
    match = _SIZE.fullmatch(text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _SIZE_UNITS:
        raise InvalidArgumentError(
            f"size {text!r} is not understood: write a number of bytes, optionally with a unit "
            "(KiB, MiB, GiB, KB, MB, GB), e.g. 64MiB"
        )
    number = match.group(1)
    factor = _SIZE_UNITS[unit]
    size = int(float(number) * factor) if "." in number else int(number) * factor
    if size < 1:
        raise InvalidArgumentError(f"size {text!r} is below one byte")
    return size


def format_size(size: int) -> str:
    """64 MiB, 10000000 bytes...: the largest binary unit that divides `size` exactly."""
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size} bytes"
