"""JSON text as JavaScript's JSON.stringify writes it, where Python can, and a bounded parse.

Both formats carry `utf8(JSON.stringify(payload))`. Matching JavaScript's text (compact, raw
non-ASCII, lone surrogates escaped) keeps bodies comparable across the two implementations.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .errors import InvalidArgumentError, MalformedBodyError

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def dumps_utf8(value: Any) -> bytes:
    """Serialize like JSON.stringify and encode as UTF-8; NaN and Infinity are refused."""
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidArgumentError(
            f"the payload must be a JSON value (dict, list, str, int, float, bool or None) "
            f"without NaN or Infinity: {type(exc).__name__}"
        ) from None
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return _escape_surrogates(text).encode("utf-8")


def _escape_surrogates(text: str) -> str:
    # Pair surrogates that form a character, as JavaScript's UTF-16 strings would, then escape
    # the ones left alone the way JSON.stringify does (lowercase \udxxx).
    paired = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
    return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", paired)


def loads_payload(data: bytes | str) -> Any:
    """Parse a decrypted payload; bad or absurdly nested JSON is a MalformedBodyError."""
    try:
        # Strict UTF-8, as the JavaScript side reads it: json.loads(bytes) would also accept
        # UTF-16/32 and a BOM, which JSON.parse(buffer.toString("utf8")) refuses.
        text = data if isinstance(data, str) else str(data, "utf-8")
        return json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        problem = "the decrypted payload is nested too deeply to parse"
    except (ValueError, TypeError):
        # UnicodeDecodeError and JSONDecodeError are ValueErrors; neither is kept, because
        # both hold the plaintext (.object, .doc) and quote it.
        problem = "the decrypted payload is not valid UTF-8 JSON"
    # Raised outside the handlers: `from None` would still keep the parser's exception, and
    # the plaintext it holds, as __context__.
    raise MalformedBodyError(problem)
