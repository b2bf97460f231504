"""JSON text as JavaScript's JSON.stringify writes it, where Python can, and a bounded parse.

Both formats carry `utf8(JSON.stringify(payload))`. Matching JavaScript's text (compact, raw
non-ASCII, lone surrogates escaped) keeps bodies comparable across the two implementations.
"""

from __future__ import annotations

import contextlib
import gc
import json
import marshal
import re
import threading
from collections.abc import Iterator
from typing import Any

from . import _accel
from .errors import InvalidArgumentError, MalformedBodyError

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


#: Built once: json.loads with a hook would build a decoder (and its scanner) per payload.
_PAYLOAD_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def dumps_utf8(value: Any) -> bytes:
    """Serialize like JSON.stringify and encode as UTF-8; NaN and Infinity are refused."""
    if _accel.orjson is not None:
        fast = _fast_dumps(value)
        if fast is not None:
            return fast
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


# --- the orjson fast paths: used only where they give exactly the bytes / values above ------

#: orjson passes these to `default`, which declines: the standard path decides for them.
_ORJSON_OPTIONS = 0
if _accel.orjson is not None:
    _ORJSON_OPTIONS = (
        _accel.orjson.OPT_PASSTHROUGH_SUBCLASS
        | _accel.orjson.OPT_PASSTHROUGH_DATACLASS
        | _accel.orjson.OPT_PASSTHROUGH_DATETIME
    )
#: Floats in marshal's output are a type byte, `g` (or `g` | FLAG_REF = 0xe7), then the 8
#: little-endian bytes of the double; the last two hold the sign and the exponent bits.
#: Exponent bits all ones: NaN or Infinity.
_NON_FINITE = rb"[\xf0-\xff][\x7f\xff]"
#: Or a magnitude of about 1e-10 to 1.2e-4 (biased exponent 989 to 1009), where orjson's text
#: may differ from json's; a superset, so a miss means no such float.
_SMALL = rb"[\xd0-\xff][\x3d\xbd]|[\x00-\xff][\x3e\xbe]|[\x00-\x1f][\x3f\xbf]"
#: One pattern per type byte: a literal first byte keeps the scan at memchr speed.
_SUSPECT_FLOATS = tuple(
    re.compile(prefix + rb"[\x00-\xff]{6}(?:" + _NON_FINITE + rb"|" + _SMALL + rb")", re.DOTALL)
    for prefix in (rb"g", rb"\xe7")
)
_NON_FINITE_FLOATS = tuple(
    re.compile(prefix + rb"[\x00-\xff]{6}" + _NON_FINITE, re.DOTALL) for prefix in (rb"g", rb"\xe7")
)
_NUMBER_CHARS = frozenset(b"0123456789.-+eE")
_NUMBER = re.compile(rb"-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")
#: More places to look at than this, and the standard path is quicker.
_MAX_FLOAT_SPOTS = 4096
_SHORT_NEGATIVE_EXPONENT = re.compile(rb"e-[6-9]")


def _decline(value: Any) -> Any:
    raise TypeError


def _fast_dumps(value: Any) -> bytes | None:
    """orjson's bytes when they are exactly json.dumps' (see dumps_utf8); otherwise None.

    orjson differs from json.dumps in four ways, each guarded here: it accepts a few types
    json refuses (Enum, UUID: marshal, which takes only exact built-in types, rules them
    out); it writes NaN and Infinity as null (so `null` in the output sends us to look for a
    non-finite float in marshal's bytes); it writes 1e-05..1e-09 as 0.00001 / 1e-7 where
    json writes 1e-05 / 1e-07 (rewritten, see _with_python_floats); and it refuses what it
    cannot write exactly (big ints, non-str keys, lone surrogates, deep nesting), raising.
    Any doubt returns None: the standard path then gives its bytes or its error.
    """
    assert _accel.orjson is not None
    try:
        out: bytes = _accel.orjson.dumps(value, default=_decline, option=_ORJSON_OPTIONS)
        exact_types = marshal.dumps(value, 4)
    except Exception:  # orjson.JSONEncodeError (a TypeError), marshal's ValueError, ...
        return None
    if not any(pattern.search(exact_types) for pattern in _SUSPECT_FLOATS):
        return out  # no NaN or Infinity (written as null) and no float written differently
    if b"null" in out and any(pattern.search(exact_types) for pattern in _NON_FINITE_FLOATS):
        return None
    del exact_types
    return _with_python_floats(out)


def _float_spots(out: bytes) -> list[int] | None:
    """Where orjson's text of a float may differ from json's, in order; None if too many.

    orjson writes 1e-5 <= |x| < 1e-4 as 0.0000..., and 1e-10 < |x| < 1e-5 as ...e-6 to e-9.
    """
    spots = {match.start() for match in _SHORT_NEGATIVE_EXPONENT.finditer(out)}
    index = out.find(b"0.0000")
    while index >= 0 and len(spots) <= _MAX_FLOAT_SPOTS:
        spots.add(index)
        index = out.find(b"0.0000", index + 1)
    return sorted(spots) if len(spots) <= _MAX_FLOAT_SPOTS else None


def _with_python_floats(out: bytes) -> bytes | None:
    """orjson's output with each float written as json.dumps writes it (float.__repr__).

    The two differ only for magnitudes 1e-4 to 1e-10, where orjson writes 0.0000... or
    <digits>e-<one digit>. Those spots are found with two fast searches; a spot is a float
    when it is a whole number token between JSON punctuation and outside every string
    (an even count of unescaped quotes before it). None when unsure: the caller falls back.
    """
    spots = _float_spots(out)
    if not spots:
        return out if spots is not None else None
    edits: list[tuple[int, int, bytes]] = []
    done = 0
    counted = quotes = 0  # unescaped quotes in out[:counted]
    backslash = b"\\" in out
    if backslash and b"\\\\" in out:
        return None  # an escaped backslash: quotes can no longer be counted simply
    for index in spots:
        if index < done:
            continue
        start, end = index, index
        while start > 0 and out[start - 1] in _NUMBER_CHARS:
            start -= 1
        while end < len(out) and out[end] in _NUMBER_CHARS:
            end += 1
        done = end
        token = out[start:end]
        if (
            not _NUMBER.fullmatch(token)
            or (start > 0 and out[start - 1] not in b":,[")
            or (end < len(out) and out[end] not in b",]}")
        ):
            continue
        quotes += out.count(b'"', counted, start)
        if backslash:  # then every \" is an escaped quote, not the end of a string
            quotes -= out.count(b'\\"', counted, start)
        counted = start
        if quotes % 2:
            continue  # inside a string
        text = repr(float(token)).encode("ascii")
        if text != token:
            edits.append((start, end, text))
    if not edits:
        return out
    pieces: list[bytes] = []
    position = 0
    for start, end, text in edits:
        pieces += (out[position:start], text)
        position = end
    pieces.append(out[position:])
    return b"".join(pieces)


def _fast_loads(data: bytes | bytearray | memoryview) -> tuple[bool, Any]:
    """(True, value) when msgspec parses `data`; (False, None) sends it to json.loads.

    msgspec refuses whatever json.loads refuses here (bad UTF-8, a BOM, NaN, trailing text)
    and a few things json accepts (1e400, lone surrogate escapes, very deep nesting); what it
    accepts, it reads to the same value (big integers included; tests compare the two).
    """
    assert _MSGSPEC_DECODER is not None
    try:
        return True, _MSGSPEC_DECODER.decode(data)
    except Exception:  # msgspec.DecodeError / ValidationError, RecursionError, ...
        return False, None


_MSGSPEC_DECODER: Any = _accel.msgspec.json.Decoder() if _accel.msgspec is not None else None


def _escape_surrogates(text: str) -> str:
    # Pair surrogates that form a character, as JavaScript's UTF-16 strings would, then escape
    # the ones left alone the way JSON.stringify does (lowercase \udxxx).
    paired = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
    return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", paired)


def loads_payload(data: bytes | str) -> Any:
    """Parse a decrypted payload; bad or absurdly nested JSON is a MalformedBodyError."""
    if len(data) < DEFER_GC_FROM:
        return _loads(data)
    with _gc_deferred():
        return _loads(data)


#: From this size, parsing runs with the cyclic GC paused. Parsing a 5 MB document creates
#: ~100k containers, each allocation counting towards a collection, and the collections it
#: triggers (scanning every object of the process) measured 37 -> 87 ms mean per parse.
#: Parsed JSON holds no reference cycles, so deferring collection loses nothing.
DEFER_GC_FROM = 1024 * 1024


class _GCPause:
    """Pause the cyclic GC while any thread parses a large payload; restore it after the last.

    Counted under a lock, so overlapping parses on several threads re-enable it exactly once,
    and a GC the application had disabled itself stays disabled.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._was_enabled = True

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._depth == 0:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0 and self._was_enabled:
                    gc.enable()


_gc_deferred = _GCPause()


def _loads(data: bytes | str) -> Any:
    if _MSGSPEC_DECODER is not None and _accel.msgspec is not None and not isinstance(data, str):
        parsed, value = _fast_loads(data)
        if parsed:
            return value
    try:
        # Strict UTF-8, as the JavaScript side reads it: json.loads(bytes) would also accept
        # UTF-16/32 and a BOM, which JSON.parse(buffer.toString("utf8")) refuses.
        text = data if isinstance(data, str) else str(data, "utf-8")
        return _PAYLOAD_DECODER.decode(text)
    except RecursionError:
        problem = "the decrypted payload is nested too deeply to parse"
    except (ValueError, TypeError):
        # UnicodeDecodeError and JSONDecodeError are ValueErrors; neither is kept, because
        # both hold the plaintext (.object, .doc) and quote it.
        problem = "the decrypted payload is not valid UTF-8 JSON"
    # Raised outside the handlers: `from None` would still keep the parser's exception, and
    # the plaintext it holds, as __context__.
    raise MalformedBodyError(problem)
