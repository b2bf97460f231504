"""The default size limits, in one place: every body may come from an attacker.

Each limit is checked before the work it bounds (RSA, PBKDF2, inflate, JSON parsing), and
each can be changed per `RequestDecryptor` (and per receiver, `--max-body`).
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_MAX_BODY_SIZE",
    "DEFAULT_MAX_INFLATED_SIZE",
    "DEFAULT_MAX_JSON_DEPTH",
    "DEFAULT_MAX_JSON_VALUES",
    "DEFAULT_MAX_WRAPPED_KEY_SIZE",
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
