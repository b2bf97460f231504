"""JSON text as JavaScript's JSON.stringify writes it, where Python can, and a bounded parse.

Both formats carry `utf8(JSON.stringify(payload))`. Matching JavaScript's text (compact, raw
non-ASCII, lone surrogates escaped) keeps bodies comparable across the two implementations.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import gc
import json
import math
import re
import sys
import threading
from collections.abc import Iterator
from typing import Any, NamedTuple

from . import _accel
from .errors import InvalidArgumentError, JSONBudgetError, MalformedBodyError
from .limits import DEFAULT_MAX_JSON_DEPTH, DEFAULT_MAX_JSON_VALUES

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def reject_constant(name: str) -> Any:
    """A json `parse_constant` hook: NaN and Infinity are not JSON."""
    raise ValueError(f"{name} is not JSON")


def finite_float(text: str) -> float:
    """A json `parse_float` hook: a number out of a double's range (1e400) is refused, as
    msgspec refuses it, rather than read as Infinity, which has no JSON form to store."""
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"the number {text[:20]} is out of range")
    return value


#: Built once: json.loads with a hook would build a decoder (and its scanner) per payload.
_PAYLOAD_DECODER = json.JSONDecoder(parse_constant=reject_constant, parse_float=finite_float)


def loads_text(text: str) -> Any:
    """Parse JSON text as payloads are parsed: NaN, Infinity and out-of-range numbers refused
    (a ValueError, json.JSONDecodeError for bad syntax)."""
    return _PAYLOAD_DECODER.decode(text)


def dumps_utf8(value: Any) -> bytes:
    """Serialize like JSON.stringify and encode as UTF-8 (what it writes: `dumps_utf8_standard`)."""
    if _accel.orjson is not None:
        fast = _fast_dumps(value)
        if fast is not None:
            return fast
    return dumps_utf8_standard(value)


def dumps_utf8_standard(value: Any) -> bytes:
    """`dumps_utf8` by the standard library alone (the same bytes); it does not import orjson.

    What JSON cannot hold is written as orjson, msgspec and JSON.stringify write it: NaN and
    Infinity as null, an Enum member as its value, a UUID as its text (and an orjson.Fragment
    as the JSON it holds). Everything else json refuses is refused: one InvalidArgumentError.
    """
    try:
        try:
            text = _dumps_text(value)
        except ValueError:  # NaN or Infinity somewhere (or a cycle: the walk then refuses it)
            text = _dumps_text(_finite(value))
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidArgumentError(
            "the payload must be a JSON value (dict, list, tuple, str, int, float, bool or None; "
            f"an Enum member or a UUID is written as its value): {type(exc).__name__}"
        ) from None
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return _escape_surrogates(text).encode("utf-8")


def _dumps_text(value: Any) -> str:
    return json.dumps(
        value, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_json_form
    )


def _json_form(value: Any) -> Any:
    """json's `default`: the value orjson writes for the three types it takes and json does not.

    Their modules are looked up, not imported: no UUID or Fragment exists before its module.
    """
    if isinstance(value, enum.Enum):
        return value.value
    uuid = sys.modules.get("uuid")
    if uuid is not None and isinstance(value, uuid.UUID):
        return str(value)
    orjson = sys.modules.get("orjson")
    if orjson is not None and isinstance(value, orjson.Fragment):
        return _PAYLOAD_DECODER.decode(orjson.dumps(value).decode("utf-8"))
    raise TypeError(f"{type(value).__name__} is not a JSON value")


def _finite(value: Any) -> Any:
    """`value` with every NaN and Infinity replaced by None, as orjson and JSON.stringify write
    them (the rare path: json refused the value as it was)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (str, int)) or value is None:
        return value
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    try:
        return _finite(_json_form(value))
    except TypeError:
        return value  # json refuses it in its turn


# --- the accelerated paths: used only where they mean exactly what the standard ones do ----


@functools.cache
def _orjson_options(orjson: Any) -> int:
    """What orjson passes to `default`, which declines: the standard path decides for them."""
    return int(
        orjson.OPT_PASSTHROUGH_SUBCLASS
        | orjson.OPT_PASSTHROUGH_DATACLASS
        | orjson.OPT_PASSTHROUGH_DATETIME
    )


#: orjson's output from this size is copied to an exact-size object: orjson leaves up to ~2/3
#: of spare capacity in the bytes it returns (tracemalloc: 8.3 MB held for a 5 MB text), which
#: a 5 MB encrypt would otherwise carry to its peak (3.5x -> 2.9x the payload).
_TRIM_FROM = 1024 * 1024


def _decline(value: Any) -> Any:
    raise TypeError


def _fast_dumps(value: Any) -> bytes | None:
    """orjson's bytes, which mean what `dumps_utf8_standard` writes; None: use that instead.

    orjson writes NaN, Infinity, Enum and UUID values as the standard path does (above). What
    it would write differently goes to `_decline` (subclasses of built-in types, dataclasses,
    dates: the options below) or makes it raise (big ints, non-str keys, lone surrogates, deep
    nesting); both return None, and the standard path gives its bytes or its error. Float text
    may differ in form, never in value: orjson writes 1e-7 where json writes 1e-07
    (JSON.stringify writes 1e-7 too). An orjson.Fragment is written as it is, unchecked (the
    standard path parses it first).
    """
    orjson = _accel.orjson
    assert orjson is not None
    try:
        out: bytes = orjson.dumps(value, default=_decline, option=_orjson_options(orjson))
    except Exception:  # orjson.JSONEncodeError, a TypeError
        return None
    return bytes(memoryview(out)) if len(out) >= _TRIM_FROM else out


@functools.cache
def _msgspec_decoder(msgspec: Any) -> Any:
    """One decoder, built on first use (not at import: msgspec is imported on first use)."""
    return msgspec.json.Decoder()


def _escape_surrogates(text: str) -> str:
    # Pair surrogates that form a character, as JavaScript's UTF-16 strings would, then escape
    # the ones left alone the way JSON.stringify does (lowercase \udxxx).
    paired = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
    return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", paired)


def loads_payload(
    data: bytes | bytearray | str,
    *,
    max_values: int = DEFAULT_MAX_JSON_VALUES,
    max_depth: int = DEFAULT_MAX_JSON_DEPTH,
) -> Any:
    """Parse a decrypted payload within its JSON budget, checked before the parse.

    More than `max_values` values is a JSONBudgetError (a PayloadTooLargeError); nesting
    deeper than `max_depth`, or bad JSON, is a MalformedBodyError.
    """
    size = len(data)
    msgspec = _accel.msgspec  # read on each call, so that tests can switch it off
    if (
        msgspec is not None
        and type(data) is bytes
        and size < max_values
        and size < DEFER_GC_FROM
        and (size <= max_depth or len(data.translate(None, _NOT_OPENING)) <= max_depth)
    ):
        # The common small payload in one straight line: within the budget by its bytes alone
        # (as `within_by_bytes` judges), parsed as `_loads` parses. Right after the RSA of a
        # body each call on the way costs several times its warm price (~0.3 us in all).
        try:
            return _msgspec_decoder(msgspec).decode(data)
        except Exception:  # noqa: S110 - msgspec.DecodeError, RecursionError, ...: json decides
            pass
        return _loads_standard(data)
    if not isinstance(data, str) and within_by_bytes(data, max_values, max_depth):
        return _loads(data) if len(data) < DEFER_GC_FROM else _loads_gc_deferred(data)
    shape = measure_json(data, max_values, max_depth)
    if shape.values > max_values:
        raise JSONBudgetError("the decrypted payload", shape.values, max_values, "max_json_values")
    if shape.too_deep:
        raise MalformedBodyError(
            f"the decrypted payload is nested too deeply: more than {max_depth} levels "
            "(raise max_json_depth if such payloads are expected)"
        )
    if not shape.balanced:
        raise MalformedBodyError(_NOT_JSON)
    return _loads(data) if len(data) < DEFER_GC_FROM else _loads_gc_deferred(data)


def _loads_gc_deferred(data: bytes | bytearray | str) -> Any:
    with _gc_deferred():
        return _loads(data)


# --- the JSON budget: values and depth, counted before anything is parsed ---------------------
#
# Bytes do not bound what a parse costs: `[{},{},...]` is 24x its size as Python objects. So
# a payload's values and depth are counted first, at C speed (bytes methods only, ~1.3 ms per
# MB), without building any object. Every value but the first follows a `[`, `{`, `,` or `:`
# outside strings, so counting those (plus one) bounds the values, member names included.
# One translate keeps only quotes, backslashes, brackets and separators, `{}:` folded into
# `[],`. Once escaped backslashes and quotes are out, every quote left opens or closes a
# string; removing two adjacent quotes never moves a character in or out of a string, so
# strings holding none of these characters (nearly all) vanish with their quotes.

_FOLD = bytes.maketrans(b"{}:", b"[],")
_NOT_STRUCTURE = bytes(c for c in range(256) if c not in b'"\\[]{},:')
_STRING = re.compile(rb'"[^"]*"')
_NOT_JSON = "the decrypted payload is not valid UTF-8 JSON"


class JSONShape(NamedTuple):
    """What the scan found: `values` is exact when over the limit, an upper bound otherwise."""

    values: int
    too_deep: bool
    balanced: bool  # False: more closing brackets than opening ones, so not JSON


def measure_json(data: bytes | bytearray | str, max_values: int, max_depth: int) -> JSONShape:
    """Count the values of JSON text and check its depth, without parsing it.

    Over a limit, exact for valid JSON; within both, possibly just an upper bound (the byte
    count, when that alone proves it). For invalid JSON the counts bound those of any prefix
    a parser could read before failing, so the budget holds for every input.
    """
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if within_by_bytes(raw, max_values, max_depth):
        return JSONShape(len(raw), False, True)
    return scan_json(raw, max_values, max_depth)


def within_by_bytes(raw: bytes | bytearray, max_values: int, max_depth: int) -> bool:
    """Whether `raw` is within both limits whatever it holds, judged without a scan.

    Every value a parser makes, even of invalid text, starts at a byte of its own, and every
    level opens at a `[` or `{` (those inside strings are counted too, so this only
    overcounts). Most small payloads are decided here (~5 us less per 1 KB body).
    """
    if len(raw) >= max_values:
        return False
    # One translate keeping only the brackets: 0.6 us against 1.0 for two counts at 1 KB,
    # 43 against 80 us at 100 KB.
    return len(raw) <= max_depth or len(raw.translate(None, _NOT_OPENING)) <= max_depth


#: Every byte but `[` and `{` (deleted by `within_by_bytes` to count the two at once).
_NOT_OPENING = bytes(byte for byte in range(256) if byte not in b"[{")


def scan_json(raw: bytes | bytearray, max_values: int, max_depth: int) -> JSONShape:
    """`measure_json`'s scan of UTF-8 text (see the comment above JSONShape).

    At most two of its reductions are held at once beside the text: for a payload of
    structure only (`[{"a":[{"b":[1]}]},...]`) the three together took a decrypt's peak to
    3.6x the payload (tracemalloc); so the first goes once counted, and the exact count of an
    over-limit payload scans the text again (2.9x).
    """
    scan = _structure(raw)
    nested = scan.translate(None, b",")  # quotes and brackets
    separators = len(scan) - len(nested)
    del scan
    brackets = nested.translate(None, b'"')
    opens = brackets.count(b"[")
    values = separators + opens + 1
    if values > max_values:  # separators inside strings were counted: count exactly
        nested = brackets = b""
        scan = _outside_strings(_structure(raw))
        brackets = scan.translate(None, b",")
        opens = brackets.count(b"[")
        values = len(scan) - len(brackets) + opens + 1
        del scan
        if values > max_values:
            return JSONShape(values, False, True)
    elif opens > max_depth and len(nested) - len(brackets) != 2 * nested.count(b'""'):
        brackets = _outside_strings(nested)  # some string holds brackets
        opens = brackets.count(b"[")
    del nested
    if opens <= max_depth:
        return JSONShape(values, False, True)
    if 2 * opens < len(brackets):
        return JSONShape(values, False, False)
    return JSONShape(values, _deeper_than(brackets, max_depth), True)


def _structure(raw: bytes | bytearray) -> bytes | bytearray:
    """The quotes, backslashes, brackets and separators of `raw`, `{}:` folded into `[],`,
    once escaped backslashes and quotes are out (so every quote left opens or closes a
    string)."""
    scan = raw.translate(_FOLD, _NOT_STRUCTURE)
    if b"\\" in scan:
        if b"\\\\" in scan or b'\\"' in scan:  # maybe an escaped quote: drop the escapes
            unescaped = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
            scan = unescaped.translate(_FOLD, _NOT_STRUCTURE)
            del unescaped
        scan = scan.translate(None, b"\\")  # other escapes: no quote among them
    return scan


def _outside_strings(scan: bytes | bytearray) -> bytes | bytearray:
    """`scan` without its strings (quotes and contents); an unterminated one is kept."""
    scan = scan.replace(b'""', b"")
    if b'"' in scan:
        scan = _STRING.sub(b"", scan).replace(b'"', b"")
    return scan


def _deeper_than(brackets: bytes | bytearray, limit: int) -> bool:
    """Whether brackets (`[` and `]` only) nest more than `limit` deep.

    Each pass removes the innermost pairs, so a balanced sequence empties in as many passes as
    it is deep. What is left unmatched is `]]..[[`: the `[` still open add to the depth.
    A balanced sequence is first looked at in windows (`_shallow`), which settles a shallow
    one without the passes.
    """
    if 2 * brackets.count(b"[") == len(brackets) and _shallow(brackets, limit):
        return False
    passes = 0
    while passes <= limit:
        shorter = brackets.replace(b"[]", b"")
        if len(shorter) == len(brackets):
            break
        brackets = shorter
        passes += 1
    return passes + brackets.count(b"[") > limit


def _shallow(brackets: bytes | bytearray, limit: int) -> bool:
    """Whether a balanced bracket sequence never nests more than `limit` deep, by windows of
    `limit // 2`: within one, the depth rises at most by its openings above the (exact)
    depth where it starts. False only means undecided (or unbalanced on the way).

    Why: ~0.2 ms instead of ~0.5 for the passes on the 128 kB of brackets of a 5 MB payload.
    """
    step = max(limit // 2, 1)
    depth = 0
    for start in range(0, len(brackets), step):
        window = brackets[start : start + step]
        opens = window.count(b"[")
        if depth + opens > limit:
            return False
        depth += 2 * opens - len(window)
        if depth < 0:
            return False
    return True


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
                    _promote_young_objects()
                    gc.enable()


def _promote_young_objects() -> None:
    """Move every tracked object to the oldest generation, without a collection.

    The first young collection after a paused parse would otherwise traverse the ~100,000
    containers of a 5 MB document (~5 ms, measured) to find no cycle: parsed JSON holds none.
    gc.freeze() then gc.unfreeze() moves the young generations, in O(1), into the oldest one,
    whose (rare) full collections still find any cycle. Skipped when the application keeps
    objects frozen itself (a pre-fork server): unfreezing would release them too.
    """
    if gc.get_freeze_count() == 0:
        gc.freeze()
        gc.unfreeze()


_gc_deferred = _GCPause()


def _loads(data: bytes | bytearray | str) -> Any:
    """msgspec's value when it parses `data`, else json's value or error.

    msgspec refuses whatever json.loads refuses here (bad UTF-8, a BOM, NaN, 1e400, trailing
    text) and a few things json accepts (lone surrogate escapes, very deep nesting); what it
    accepts, it reads to the same value (big integers included; tests compare the two).
    """
    # `_accel.msgspec` is read on each call so that tests can switch the accelerator off.
    msgspec = _accel.msgspec
    if msgspec is not None and not isinstance(data, str):
        try:
            return _msgspec_decoder(msgspec).decode(data)
        except Exception:  # noqa: S110 - msgspec.DecodeError, RecursionError, ...: json decides
            pass
    return _loads_standard(data)


def _loads_standard(data: bytes | bytearray | str) -> Any:
    """json's value of `data`, or the MalformedBodyError it deserves (`_loads` without msgspec)."""
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
        problem = _NOT_JSON
    # Raised outside the handlers: `from None` would still keep the parser's exception, and
    # the plaintext it holds, as __context__.
    raise MalformedBodyError(problem)
