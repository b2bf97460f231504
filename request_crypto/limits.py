"""The default size limits, in one place: every body may come from an attacker.

Each limit is checked before the work it bounds (RSA, PBKDF2, inflate, JSON parsing), and
each can be changed per `RequestDecryptor` (and per receiver, `--max-body`).
"""

from __future__ import annotations

__all__ = ["DEFAULT_MAX_BODY_SIZE", "DEFAULT_MAX_INFLATED_SIZE", "DEFAULT_MAX_WRAPPED_KEY_SIZE"]

#: A whole body (either format), and a compact JWE given to JWKManager.decrypt directly.
DEFAULT_MAX_BODY_SIZE = 64 * 1024 * 1024
#: The `elastic` wrapped key is ~1 KB for RSA-4096; 8 KiB is ample and bounds the RSA work.
DEFAULT_MAX_WRAPPED_KEY_SIZE = 8 * 1024
#: A plaintext after DEFLATE: a zip bomb is stopped one byte past this.
DEFAULT_MAX_INFLATED_SIZE = 64 * 1024 * 1024
