"""Strict base64url: bodies come from the internet, so anything off-alphabet is refused.

Python's lenient decoders silently skip bad characters; these check the whole input at C speed
(``bytes.translate`` with a delete set) before decoding.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator

from . import _accel
from .errors import InternalSignal, MalformedBodyError

_URL_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_URL_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
_INDEX = {char: value for value, char in enumerate(_URL_ALPHABET)}
#: The low bits of the last character that carry no data, by the length of the last group.
_UNUSED_BITS = {2: 0b1111, 3: 0b11}
_STANDARD_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_STANDARD_TO_URL = bytes.maketrans(b"+/", b"-_")
#: Large texts are handled this many base64 characters at a time (a multiple of 4), so the
#: transient copies stay small however big the body is.
CHUNK = 1 << 18
#: From about this many base64 characters the SIMD decoder beats binascii (measured: 0.5 vs
#: 1.0 us at 344, 1.0 vs 4.7 us at 1,668); below it, the call overhead wins.
_ACCELERATE_FROM = 256


def b64url_encode(data: bytes) -> str:
    """base64url without ``=`` padding, as the JavaScript side writes it."""
    encoded = b64url_encode_padded(data)
    # Decoded straight from a view: no stripped copy of a large text on the way to the str.
    return str(memoryview(encoded)[: (len(data) * 4 + 2) // 3], "ascii")


def b64url_uint(value: int) -> str:
    """A non-negative integer as JWK writes one (RFC 7518 §2): big-endian, fewest bytes."""
    return b64url_encode(value.to_bytes((value.bit_length() + 7) // 8 or 1, "big"))


def b64url_encode_padded(data: bytes | bytearray | memoryview) -> bytes:
    """base64url with ``=`` padding (the building block of the unpadded form)."""
    if _accel.pybase64 is not None and len(data) >= _ACCELERATE_FROM:
        return bytes(_accel.pybase64.b64encode(data, altchars=b"-_"))
    return binascii.b2a_base64(data, newline=False).translate(_STANDARD_TO_URL)


def b64encode_standard(data: bytes | bytearray | memoryview) -> bytes:
    """Standard base64 with padding (node-crypto's output alphabet)."""
    if _accel.pybase64 is not None and len(data) >= _ACCELERATE_FROM:
        return bytes(_accel.pybase64.b64encode(data))
    return binascii.b2a_base64(data, newline=False)


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
    """Decode base64url with or without ``=`` padding; anything else is a MalformedBodyError.

    Strict: only the url alphabet; padding either absent or exactly right; and the unused low
    bits of the last character zero, so every byte string has exactly one accepted encoding
    (a body cannot be re-encoded into a different-looking one that decrypts the same).
    """
    raw = data if type(data) is bytes else ascii_bytes(data, what)  # parts of a split: as is
    decoded = b64url_decode_canonical(raw)  # the common case, in fewer passes
    if decoded is not None:
        return decoded
    text = raw.rstrip(b"=")
    padding = len(raw) - len(text)
    if (
        text.translate(None, _URL_ALPHABET)
        or len(text) % 4 == 1
        or (padding and padding != -len(text) % 4)
    ):
        raise MalformedBodyError(f"{what} is not valid base64url")
    if len(text) % 4 and _INDEX[text[-1]] & _UNUSED_BITS[len(text) % 4]:
        raise MalformedBodyError(f"{what} is not canonical base64url (nonzero trailing bits)")
    try:
        if _accel.pybase64 is not None and len(text) >= _ACCELERATE_FROM:
            # Checked above, so any decoder gives the same bytes; this one is SIMD.
            return bytes(_accel.pybase64.b64decode(text + b"=" * (-len(text) % 4), altchars=b"-_"))
        return binascii.a2b_base64(text.translate(_URL_TO_STANDARD) + b"=" * (-len(text) % 4))
    except (binascii.Error, ValueError):  # pragma: no cover - excluded by the checks above
        raise MalformedBodyError(f"{what} is not valid base64url") from None


def b64url_decode_canonical(part: bytes) -> bytes | None:
    """Decode unpadded, canonical base64url; None for anything else, with no error built.

    The fast path of `b64url_decode`, which on None applies its rules one by one, for the
    exact error (or to accept padding). The same rules in fewer passes: one translate checks
    the alphabet (and refuses padding), then any decoder will do.
    """
    rest = len(part) % 4
    if rest and (rest == 1 or part[-1] not in _INDEX or _INDEX[part[-1]] & _UNUSED_BITS[rest]):
        return None
    if _accel.pybase64 is not None and len(part) >= _ACCELERATE_FROM:
        # Validating in the decoder, not with a translate first: one pass instead of two
        # (~4 ms less on a 5 MB JWE). validate=True lets through only `+`, `/` and `=`
        # besides the url alphabet: memchr-speed checks for those.
        if b"+" in part or b"/" in part or b"=" in part:
            return None
        try:
            return bytes(
                _accel.pybase64.b64decode(part + b"=="[: -rest % 4], altchars=b"-_", validate=True)
            )
        except ValueError:  # binascii.Error: a byte outside the alphabet
            return None
    if part.translate(None, _URL_ALPHABET):
        return None
    return binascii.a2b_base64(part.translate(_URL_TO_STANDARD) + b"=="[: -rest % 4])


#: The padding that completes an unpadded group, by its length mod 4 (1 is never valid).
_COMPLETION = (b"", b"", b"==", b"=")
#: The characters that may end a canonical group of each length mod 4 (unused bits zero).
_CANONICAL_LAST: tuple[frozenset[int], ...] = (
    frozenset(),
    frozenset(),
    frozenset(char for char, value in _INDEX.items() if not value & _UNUSED_BITS[2]),
    frozenset(char for char, value in _INDEX.items() if not value & _UNUSED_BITS[3]),
)


def b64url_decode_parts(text: bytes, parts: list[bytes]) -> list[bytes] | None:
    """`b64url_decode_canonical` of each of `parts`, the pieces of `text`; None if any fails.

    For the compact JWE's four parts at once: one memchr-speed look at the whole text for
    the three bytes the SIMD decoder's validation lets through, then one decoder call per
    part, instead of four calls each choosing and checking on its own (~2 us less per
    1 KB body). Gives exactly what the per-part function gives, or None where it might not.
    """
    decode = _accel.pybase64.b64decode if _accel.pybase64 is not None else None
    if decode is None or b"+" in text or b"/" in text or b"=" in text:
        decoded = [b64url_decode_canonical(part) for part in parts]
        return None if None in decoded else decoded  # type: ignore[return-value]
    out = []
    try:
        for part in parts:
            rest = len(part) % 4
            if rest and part[-1] not in _CANONICAL_LAST[rest]:
                return None
            # Positional: pybase64 parses keywords slowly (0.45 vs 0.21 us on a 16-byte IV).
            out.append(decode(part + _COMPLETION[rest], b"-_", True))
    except ValueError:  # binascii.Error: a byte outside the alphabet
        return None
    return out


#: `_CANONICAL_LAST` with any byte allowed after whole groups (the decoder checks those) and
#: none after a lone character: one membership test per part, whatever its length.
_LAST_ALLOWED = (frozenset(range(256)), frozenset(), *_CANONICAL_LAST[2:])


def b64url_decode_jwe(text: bytes, parts: list[bytes]) -> tuple[bytes, bytes, bytes, bytes] | None:
    """`b64url_decode_parts` of the last four of a compact JWE's five `parts` (of `text`).

    The same rules and answers (or None for an empty part: the general decode takes it),
    written out for exactly four parts: no loop, list or per-part branch, ~0.6 us less per
    1 KB body than the loop.
    """
    decode = _accel.pybase64.b64decode if _accel.pybase64 is not None else None
    if decode is None or b"+" in text or b"/" in text or b"=" in text:
        decoded = b64url_decode_parts(text, parts[1:])
        return None if decoded is None else (decoded[0], decoded[1], decoded[2], decoded[3])
    _, key, iv, ciphertext, tag = parts
    k, i, c, t = len(key) % 4, len(iv) % 4, len(ciphertext) % 4, len(tag) % 4
    last, completion = _LAST_ALLOWED, _COMPLETION
    try:
        if not (
            key[-1] in last[k]
            and iv[-1] in last[i]
            and ciphertext[-1] in last[c]
            and tag[-1] in last[t]
        ):
            return None
        return (
            decode(key + completion[k], b"-_", True),
            decode(iv + completion[i], b"-_", True),
            decode(ciphertext + completion[c], b"-_", True),
            decode(tag + completion[t], b"-_", True),
        )
    except (ValueError, IndexError):  # binascii.Error: a byte outside the alphabet; an empty part
        return None


def ascii_piece(piece: str | bytes | bytearray) -> bytes:
    """A short piece of a body as bytes; Decline if a str piece is not ASCII."""
    if isinstance(piece, str):
        try:
            return piece.encode("ascii")
        except UnicodeEncodeError:
            raise Decline from None
    return bytes(piece)


class Decline(InternalSignal):
    """Internal: a fast path met input it does not vouch for, so the general path decides.

    Never escapes the library: callers catch it and run the general (and slower) code, which
    raises the error that input deserves, or accepts it exactly as before.
    """


def _decode_url_quads(
    data: bytes | bytearray | str, start: int = 0, stop: int | None = None
) -> bytes:
    """Decode ``data[start:stop]``, whole groups of url-alphabet base64 (no padding),
    refusing anything else.

    Bytes are read through a view and a str as a slice, never copied to ASCII bytes: the SIMD
    decoder refuses a non-ASCII character as it refuses any other byte outside its alphabet.
    """
    stop = len(data) if stop is None else stop
    if _accel.pybase64 is not None and stop - start >= _ACCELERATE_FROM:
        # validate=True refuses every byte outside the alphabet except these three (it takes
        # the standard alphabet too, and padding at the end): memchr-speed checks for them.
        unsafe = _UNSAFE_STR if isinstance(data, str) else _UNSAFE_BYTES
        if any(data.find(char, start, stop) >= 0 for char in unsafe):  # type: ignore[arg-type]
            raise Decline
        try:
            if isinstance(data, str):
                return bytes(_accel.pybase64.b64decode(data[start:stop], b"-_", True))
            with memoryview(data) as view:
                return bytes(_accel.pybase64.b64decode(view[start:stop], b"-_", True))
        except ValueError:  # binascii.Error; UnicodeEncodeError for a lone surrogate
            raise Decline from None
    raw = ascii_piece(data[start:stop])
    if raw.translate(None, _URL_ALPHABET):
        raise Decline
    return binascii.a2b_base64(raw.translate(_URL_TO_STANDARD))


def decode_url_groups(data: str | bytes | bytearray, stop: int) -> bytes:
    """Decode ``data[:stop]``, whole groups of url-alphabet base64 (no padding), in one SIMD
    call; Decline on any other byte. Needs pybase64 (the caller checks), and for a str,
    `stop` at its end: a str cannot be viewed, and a copy of 9 MB of text would take a 5 MB
    decrypt's peak over 3x the payload (`iter_b64url_decode` takes those a piece at a time).

    Why: at 5 MB the pieces of `iter_b64url_decode` cost ~0.4 ms more than one call.
    """
    decode = _accel.pybase64.b64decode  # type: ignore[union-attr]
    unsafe = _UNSAFE_STR if isinstance(data, str) else _UNSAFE_BYTES
    if any(data.find(char, 0, stop) >= 0 for char in unsafe):  # type: ignore[arg-type]
        raise Decline
    try:
        if isinstance(data, str):
            if stop != len(data):
                raise Decline
            return bytes(decode(data, b"-_", True))
        with memoryview(data) as view:
            return bytes(decode(view[:stop], b"-_", True))
    except ValueError:  # binascii.Error; UnicodeEncodeError for a non-ASCII str
        raise Decline from None


def decode_url_tail(text: str | bytes | bytearray) -> bytes:
    """The last, partial group of an unpadded canonical base64url text (0, 2 or 3
    characters) decoded; Decline for a 1-character group, padding, a byte outside the
    alphabet or nonzero unused bits, as `iter_b64url_decode` refuses them."""
    if not text:
        return b""
    last = ascii_piece(text)
    if (
        len(last) not in _UNUSED_BITS
        or last.translate(None, _URL_ALPHABET)
        or _INDEX[last[-1]] & _UNUSED_BITS[len(last)]
    ):
        raise Decline
    return binascii.a2b_base64(last.translate(_URL_TO_STANDARD) + _COMPLETION[len(last)])


def decode_standard_text(data: bytes | bytearray, start: int, stop: int) -> bytes:
    """Strict standard base64 (node-crypto's, padded) of ``data[start:stop]`` in one SIMD
    call, read through a view: exactly the bytes `nodecrypto.decode_standard_base64` gives
    for that slice, or Decline wherever they might differ. Needs pybase64.

    All but the last 8 to 11 characters must be whole groups of the alphabet (no `=`, the
    one byte outside it that validate=True lets through); that end, where padding may be,
    goes to the standard decoder itself, and pybase64's answer must end with its bytes. So
    the bytes are the standard decoder's on the whole text, without joining two parts.
    """
    cut = start + (max(stop - start - 8, 0) & ~3)
    if data.find(b"=", start, cut) >= 0:
        raise Decline
    try:
        end = base64.b64decode(data[cut:stop], validate=True)
        with memoryview(data) as view:
            out = bytes(_accel.pybase64.b64decode(view[start:stop], validate=True))  # type: ignore[union-attr]
    except ValueError:  # binascii.Error
        raise Decline from None
    if len(out) != (cut - start) // 4 * 3 + len(end) or not out.endswith(end):
        raise Decline
    return out


#: What `_decode_url_quads` must look for itself, as str and as bytes.
_UNSAFE_STR = ("+", "/", "=")
_UNSAFE_BYTES = (b"+", b"/", b"=")


def decode_standard_quads(text: bytes, start: int = 0, stop: int | None = None) -> bytes:
    """Decode ``text[start:stop]``, whole groups of standard base64 without padding; Decline
    on any other byte. The range is read through a view: a large text is not copied."""
    stop = len(text) if stop is None else stop
    if _accel.pybase64 is not None and stop - start >= _ACCELERATE_FROM:
        # `=` is the one byte outside the alphabet that validate=True lets through.
        if text.find(b"=", start, stop) >= 0:
            raise Decline
        try:
            with memoryview(text) as view:
                return bytes(_accel.pybase64.b64decode(view[start:stop], validate=True))
        except ValueError:  # binascii.Error
            raise Decline from None
    raw = text[start:stop]
    if raw.translate(None, _STANDARD_ALPHABET):
        raise Decline
    return binascii.a2b_base64(raw)


def url_padding(data: str | bytes | bytearray) -> int:
    """How many `=` end a base64url text that is otherwise checked piece by piece: none, or
    exactly those completing its last group (as `b64url_decode` accepts); Decline for any
    other padding and for a text whose last group would be one character."""
    tail = ascii_piece(data[len(data) - min(len(data), 3) :])
    padding = len(tail) - len(tail.rstrip(b"="))
    end = len(data) - padding
    if padding == 3 or (padding and padding != -end % 4) or end % 4 == 1:
        raise Decline
    return padding


def iter_b64url_decode(data: str | bytes | bytearray) -> Iterator[bytes]:
    """`b64url_decode`, a piece at a time: the same strict rules, in bounded memory.

    Yields the decoded bytes in order; raises Decline (before or while yielding) wherever
    b64url_decode would raise, so a caller can fall back to it for the exact error. Keep the
    rules here in step with b64url_decode; tests compare the two on mutated bodies.
    """
    if not isinstance(data, (str, bytes, bytearray)):
        raise Decline
    end = len(data) - url_padding(data)
    whole = end - end % 4
    for start in range(0, whole, CHUNK):
        yield _decode_url_quads(data, start, min(start + CHUNK, whole))
    if end > whole:
        last = ascii_piece(data[whole:end])
        if last.translate(None, _URL_ALPHABET) or _INDEX[last[-1]] & _UNUSED_BITS[len(last)]:
            raise Decline
        yield binascii.a2b_base64(last.translate(_URL_TO_STANDARD) + b"=" * (-len(last) % 4))
