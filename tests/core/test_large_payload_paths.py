"""The large-payload fast paths of issue 13 give what the general paths give.

- the `jwe` shape test (bounded `find`s) against a dot count;
- the canonical base64url decoder, validating inside pybase64, against the strict decoder on
  long parts with every byte at several places;
- the aligned `elastic` packing against pack_body, for every residue of the prefix length
  and payloads around every piece boundary; sealing in pieces against sealing whole;
- the streaming base64's str slices and ranged views against the bytes answers;
- the JSON budget's byte-count shortcut against the full scan and the exact count;
- the paused GC after a large parse: restored, objects promoted, an application's own frozen
  objects and its own disabled GC left alone.
"""

from __future__ import annotations

import base64
import gc
import json
import os
import random
from collections.abc import Iterator
from typing import Any

import pytest

from request_crypto import _accel, _b64, _json
from request_crypto.errors import InvalidArgumentError, MalformedBodyError
from request_crypto.formats import elastic as envelope
from request_crypto.formats import nodecrypto
from request_crypto.formats.elastic import (
    pack_body,
    pack_encrypted_payload,
    pack_sealed,
    unpack_body,
)
from request_crypto.formats.jwe import JWE
from request_crypto.formats.nodecrypto import PassphraseCipher


@pytest.fixture(params=["stdlib", "accelerated"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "stdlib":
        monkeypatch.setattr(_accel, "pybase64", None)
    elif _accel.pybase64 is None:
        pytest.skip("pybase64 is not installed")
    yield request.param


def test_jwe_shape_is_exactly_four_dots() -> None:
    rng = random.Random(13)
    texts = ["", ".", "....", ".....", "a.b.c.d.e", "a.b.c.d.e.", "...." + "x" * 10_000]
    for _ in range(400):
        texts.append("".join(rng.choice("ab.") for _ in range(rng.randrange(0, 30))))
    texts.append("A" * 3_000_000 + ".B.C.D.E")
    texts.append("A" * 3_000_000 + ".B.C.D.E.F")
    for text in texts:
        for body in (text, text.encode()):
            assert JWE.detect(body) is (text.count(".") == 4), text[:40]


def strict(part: bytes) -> bytes | None:
    """The general decoder's verdict: the bytes, or None for a refusal."""
    try:
        return _b64.b64url_decode(part, "part")
    except MalformedBodyError:
        return None


def test_long_canonical_parts_decode_as_the_strict_decoder_does(backend: str) -> None:
    rng = random.Random(5)
    for size in (3_000, 3_001, 3_002):
        good = base64.urlsafe_b64encode(rng.randbytes(size)).rstrip(b"=")
        assert _b64.b64url_decode_canonical(good) == strict(good)
        for at in (0, 1, len(good) // 2, len(good) - 2, len(good) - 1):
            for byte in range(256):
                part = bytearray(good)
                part[at] = byte
                fast = _b64.b64url_decode_canonical(bytes(part))
                if fast is not None:
                    assert fast == strict(bytes(part)), (size, at, byte)
                else:
                    assert b"=" in part or strict(bytes(part)) is None, (size, at, byte)


@pytest.mark.parametrize("chunk", [12, 24, 64])
def test_aligned_packing_is_pack_body_for_every_prefix_residue(
    backend: str, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    monkeypatch.setattr(envelope, "CHUNK", chunk)
    step = 9 * max(chunk // 12, 1)
    for key in ("", "k", "kk", "kkk", "a.b_c-d"):  # prefix lengths of every residue mod 3
        for base in (0, step, 2 * step, 5 * step):
            for extra in range(-4, 9):
                size = base + extra
                if size < 0:
                    continue
                layout = os.urandom(size)
                expected = pack_body(key, base64.b64encode(layout).decode())
                assert pack_encrypted_payload(key, layout) == expected, (key, size)
                assert pack_encrypted_payload(key, bytearray(layout)) == expected


LARGE = b"[" + b",".join(b'{"a":[1,2,{"b":null}],"c":"x"}' for _ in range(40_000)) + b"]"


def test_a_large_parse_restores_the_gc_and_promotes_what_it_made() -> None:
    assert len(LARGE) >= _json.DEFER_GC_FROM
    assert gc.isenabled()
    value = _json.loads_payload(LARGE)
    assert gc.isenabled()
    # Promoted to the oldest generation, so no young collection walks the document.
    assert any(obj is value for obj in gc.get_objects(generation=2))
    assert value[0] == {"a": [1, 2, {"b": None}], "c": "x"}


def test_an_applications_frozen_objects_and_disabled_gc_are_left_alone() -> None:
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        assert frozen > 0
        _json.loads_payload(LARGE)
        assert gc.get_freeze_count() == frozen
        assert gc.isenabled()
    finally:
        gc.unfreeze()
    gc.disable()
    try:
        _json.loads_payload(LARGE)
        assert not gc.isenabled()
    finally:
        gc.enable()


@pytest.mark.parametrize("chunk", [12, 64, 1 << 18])
def test_sealing_in_pieces_packs_what_the_whole_layout_packs(
    backend: str, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    """pack_sealed (layout never whole) against pack_encrypted_payload(seal()): same salt
    and IV drawn, so the very same body; and it opens."""
    monkeypatch.setattr(envelope, "CHUNK", chunk)
    cipher = PassphraseCipher(b"p" * 32)
    rng = random.Random(chunk)
    for key in ("", "k", "kk", "a.b_c-d", 'quote"d'):
        for size in (0, 1, 2, 3, 8, 9, 100, 101, 102, 3_000, 3_001, 300_000):
            plaintext = rng.randbytes(size)
            draws = iter([b"s" * 64 + b"i" * 12] * 2)  # salt and IV: one draw per seal
            monkeypatch.setattr(nodecrypto.os, "urandom", lambda n, d=draws: next(d))
            pieces = pack_sealed(key, cipher, plaintext)
            whole = pack_encrypted_payload(key, cipher.seal(plaintext))
            monkeypatch.undo()
            monkeypatch.setattr(envelope, "CHUNK", chunk)
            if backend == "stdlib":
                monkeypatch.setattr(_accel, "pybase64", None)
            assert pieces == whole, (key, size)
            parts = unpack_body(pieces)
            raw = base64.b64decode(parts.encrypted_payload)
            assert cipher.decrypt_bytes(raw) == plaintext


def test_sealing_pieces_refuse_a_head_without_room_for_the_header() -> None:
    with pytest.raises(InvalidArgumentError, match="header"):
        list(PassphraseCipher(b"k").seal_pieces(b"x" * 500, 91, 9))


def exact_shape(value: Any) -> tuple[int, int]:
    """(values, depth) of parsed JSON, member names counted as values."""
    if isinstance(value, dict):
        inner = [exact_shape(v) for v in value.values()]
        return 1 + len(value) + sum(n for n, _ in inner), 1 + max((d for _, d in inner), default=0)
    if isinstance(value, list):
        inner = [exact_shape(v) for v in value]
        return 1 + sum(n for n, _ in inner), 1 + max((d for _, d in inner), default=0)
    return 1, 0


def test_the_byte_count_shortcut_only_passes_what_the_scan_and_the_count_pass() -> None:
    """Whenever `within_by_bytes` lets text through unscanned, the full scan (and, for valid
    JSON, the exact count of the parsed value) is within the same limits; hostile text too."""
    rng = random.Random(11)
    texts = [b'{"a":[1,{"b":"[[[["}],"c":"\\"{"}', b"[" * 40, b"]" * 40 + b"[" * 40]
    texts += [b",,,,,,,", b'"' + b"[" * 30 + b'"', b"[{}]" * 9, b"1"]
    for _ in range(3000):
        texts.append(bytes(rng.choice(b'[]{},:"\\ 1a') for _ in range(rng.randrange(1, 60))))
    for _ in range(300):
        value: Any = rng.choice([1, "s", None])
        for _ in range(rng.randrange(0, 12)):
            value = rng.choice([[value, 2], {"k": value, "x[": "{"}, [value]])
        texts.append(json.dumps(value, separators=(",", ":")).encode())
    taken = 0
    for text in texts:
        for max_values in (3, 8, 20, 61):
            for max_depth in (1, 3, 6):
                within = _json.within_by_bytes(text, max_values, max_depth)
                assert within == _json.within_by_bytes(bytearray(text), max_values, max_depth)
                if not within:
                    continue
                taken += 1
                shape = _json.scan_json(text, max_values, max_depth)
                assert shape.values <= max_values and not shape.too_deep, text
                try:
                    values, depth = exact_shape(json.loads(text))
                except ValueError:
                    continue
                assert values <= max_values and depth <= max_depth, text
    assert taken > 1000


@pytest.mark.parametrize("length", [8, 300, 4000])
def test_url_quads_of_a_str_refuse_what_the_bytes_refuse(backend: str, length: int) -> None:
    """A str body's pieces go to the decoder as str slices (no ASCII copy): each answer is
    the one the same text as bytes gets, for every byte at every place, and non-ASCII text
    (a lone surrogate too) is declined, not an error that escapes."""
    good = base64.urlsafe_b64encode(os.urandom(length * 3 // 4)).decode()
    assert len(good) == length
    odd = [chr(c) for c in range(128)] + ["\u00e9", "\ud800", "\U0001f600"]
    for place in sorted({0, 1, length // 2, length - 2, length - 1}):
        for char in odd:
            text = good[:place] + char + good[place + 1 :]
            try:
                expected: bytes | None = _b64._decode_url_quads(text.encode("ascii"))
            except (UnicodeEncodeError, _b64.Decline):
                expected = None
            try:
                got: bytes | None = _b64._decode_url_quads(text)
            except _b64.Decline:
                got = None
            assert got == expected, (place, char)
            # the same through a range of a longer text, as iter_b64url_decode reads a body
            framed = "." + text + "!"
            try:
                ranged: bytes | None = _b64._decode_url_quads(framed, 1, 1 + length)
            except _b64.Decline:
                ranged = None
            assert ranged == expected, (place, char)


def test_standard_quads_of_a_range_are_those_of_its_slice(backend: str) -> None:
    """decode_standard_quads(text, start, stop) reads the range through a view: the same
    bytes, or the same refusal, as the slice; `=` anywhere in the range is refused (the SIMD
    decoder would take it as padding at the end) and `=` outside it does not matter."""
    good = base64.b64encode(os.urandom(600))
    for start, stop in [(0, 800), (4, 800), (0, 400), (100, 700), (396, 400)]:
        assert _b64.decode_standard_quads(good, start, stop) == base64.b64decode(good[start:stop])
        for place in range(start, stop, 7 if stop - start > 8 else 1):
            for byte in b"=-_*":
                bad = bytearray(good)
                bad[place] = byte
                with pytest.raises(_b64.Decline):
                    _b64.decode_standard_quads(bytes(bad), start, stop)
        for place in range(stop - 2, stop):
            bad = bytearray(good)
            bad[place] = ord("=")
            with pytest.raises(_b64.Decline):
                _b64.decode_standard_quads(bytes(bad), start, stop)
        padded = b"==" + good[start:stop] + b"=="
        assert _b64.decode_standard_quads(padded, 2, 2 + stop - start) == base64.b64decode(
            good[start:stop]
        )
