"""The whole-text paths for large `elastic` bodies and the windowed depth check give what the
general paths give.

- `_unpack_large` (both base64 layers decoded whole through views) against `unpack_body` +
  `decode_standard_base64` on mutated bodies as bytes, bytearray and str, hostile bytes at
  every region (the key, the separator, the payload's text and its padded end);
- `decode_standard_text` against `decode_standard_base64` with `=` and stray bytes anywhere;
- `_deeper_than` (windows first, then the passes) against the maximum prefix depth;
- the peak memory of a large decrypt from bytes, through the whole path, within 3x.
"""

from __future__ import annotations

import base64
import gc
import json
import os
import random
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest

from request_crypto import RequestDecryptor, RequestEncryptor, _accel, _b64, _json
from request_crypto.errors import JSONBudgetError, MalformedBodyError
from request_crypto.formats import elastic as envelope
from request_crypto.formats.elastic import pack_body, pack_encrypted_payload
from request_crypto.formats.nodecrypto import decode_standard_base64
from tests.core.test_fast_paths import general, mutations

pytestmark = pytest.mark.skipif(
    _accel.pybase64 is None, reason="pybase64 is a dependency: the whole paths need it"
)


def large(body: str | bytes | bytearray) -> tuple[str, bytes] | None:
    try:
        key, raw = envelope._unpack_large(body)
    except _b64.Decline:
        return None
    return key, bytes(raw)


def hostile(body: str, rng: random.Random) -> Iterator[str]:
    """Bytes out of place in each region of the decoded body, re-encoded canonically."""
    text = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    start = text.index(b'"encryptedPayload":"') + len('"encryptedPayload":"')
    regions = [(0, 20), (20, start), (start, start + 8), (start + 8, len(text) - 12)]
    regions += [(len(text) - 12, len(text))]
    for low, high in regions:
        for byte in b'=+/-_ "\\\xe9A':
            spot = rng.randrange(low, max(high, low + 1))
            changed = text[:spot] + bytes([byte]) + text[spot + 1 :]
            yield base64.urlsafe_b64encode(changed).rstrip(b"=").decode()
            inserted = text[:spot] + bytes([byte]) + text[spot:]
            yield base64.urlsafe_b64encode(inserted).rstrip(b"=").decode()


def test_the_whole_large_unpack_matches_the_general_path() -> None:
    rng = random.Random(21)
    answered = 0
    for key in ("", "a.b.c.d.e", "k" * 700):
        for size in (0, 1, 2, 3, 91, 92, 93, 70_000, 70_001, 70_002):
            layout = os.urandom(size)
            body = pack_encrypted_payload(key, layout)
            inner = base64.b64encode(layout).decode()
            variants = [inner + "=", inner.rstrip("="), inner[:-1], inner + "A", "QUJD=",
                        inner + "==", inner[:-4] + "=" + inner[-3:], "=" + inner[1:]]  # fmt: skip
            candidates = [*mutations(body, rng), *hostile(body, rng)]
            candidates += [pack_body(key, v) for v in variants]
            for candidate in candidates:
                forms = [candidate]
                if isinstance(candidate, str) and candidate.isascii():
                    forms += [candidate.encode(), bytearray(candidate.encode())]
                for form in forms:
                    fast = large(form)
                    if fast is not None:
                        answered += 1
                        expected = general(bytes(form) if isinstance(form, bytearray) else form)
                        assert fast == expected, (key, size, form[:60])
            assert large(body.encode()) == (key, layout)  # canonical bodies are answered
    assert answered > 500


def test_standard_text_is_the_standard_decoder_or_declines() -> None:
    rng = random.Random(8)
    valid = [base64.b64encode(os.urandom(rng.randrange(0, 3000))) for _ in range(200)]
    texts = [b"AB==", b"ABC=", b"QUJD=", b"QQ", b"Q===", b"", b"A", b"===="]
    for _ in range(600):
        text = bytearray(rng.choice(valid))
        for _ in range(rng.randrange(1, 3)):
            position = rng.randrange(len(text) + 1)
            text[position:position] = bytes([rng.choice(b"=+/A \n\xe9-_")])
        texts.append(bytes(text))
    for text in valid + texts:
        framed = b'xy"' + text + b'"}'
        try:
            expected: bytes | None = decode_standard_base64(text, "t")
        except MalformedBodyError:
            expected = None
        try:
            got: bytes | None = _b64.decode_standard_text(framed, 3, 3 + len(text))
        except _b64.Decline:
            assert text not in valid, text[-20:]  # what node-crypto writes is answered
            continue
        assert got == expected, text[-20:]


def prefix_depths(brackets: bytes) -> tuple[int, int]:
    """The deepest and the shallowest of the depths after each bracket."""
    depth = deepest = shallowest = 0
    for byte in brackets:
        depth += 1 if byte == ord("[") else -1
        deepest, shallowest = max(deepest, depth), min(shallowest, depth)
    return deepest, shallowest


def test_windowed_depth_agrees_with_the_maximum_prefix_depth() -> None:
    rng = random.Random(4)
    sequences = [b"", b"[]", b"[" * 300 + b"]" * 300, b"[][" * 50, b"]" * 10 + b"[" * 10]
    sequences += [(b"[" * 100 + b"]" * 100) * 3 + b"[" * 257 + b"]" * 257]
    for _ in range(2000):
        depth, out = 0, bytearray()
        for _ in range(rng.randrange(0, 600)):
            opening = depth == 0 or rng.random() < rng.choice([0.3, 0.5, 0.6, 0.9])
            out += b"[" if opening else b"]"
            depth += 1 if opening else -1
        out += b"]" * depth if rng.random() < 0.9 else b""
        sequences.append(bytes(out))
    decided = 0
    for brackets in sequences:
        deepest, shallowest = prefix_depths(brackets)
        for limit in (0, 1, 2, 5, 64, 128, 256):
            deeper = _json._deeper_than(brackets, limit)
            if 2 * brackets.count(b"[") == len(brackets) and shallowest >= 0:  # balanced
                decided += 1
                assert deeper is (deepest > limit), (brackets[:40], limit)
            elif deepest > limit:
                assert deeper, (brackets[:40], limit)  # never an undercount
    assert decided > 5000


def test_a_large_decrypt_from_bytes_peaks_within_3x_the_payload(
    private_jwks: dict[str, Any], public_jwks: dict[str, Any]
) -> None:
    """tracemalloc's peak beyond the body and the result (benchmarks/large.py's measure)."""
    kid = public_jwks["keys"][0]["kid"]
    payload = [f"{i:08d}-" + "x" * 40 for i in range(40_000)]  # ~2 MB of JSON
    size = len(json.dumps(payload, separators=(",", ":")))
    body = RequestEncryptor(public_jwks, format="elastic").encrypt(kid, payload).encode()
    decryptor = RequestDecryptor(private_jwks)
    assert decryptor.decrypt(body) == payload
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        result = decryptor.decrypt(body)
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result == payload
    assert peak - after <= 3 * size, (peak - after) / size


def test_a_refused_payload_of_structure_only_peaks_within_3x(
    private_jwks: dict[str, Any], public_jwks: dict[str, Any]
) -> None:
    """The budget scan of `[{"a":[{"b":[1]}]},...]`, over max_json_values, held three
    reductions of nearly its size at once beside it: 3.6x the payload (now 2.7x)."""
    kid = public_jwks["keys"][0]["kid"]
    payload = [{"a": [{"b": [1]}]}] * 60_000  # ~1 MB, 480k values
    size = len(json.dumps(payload, separators=(",", ":")))
    body = RequestEncryptor(public_jwks, format="elastic").encrypt(kid, payload)
    decryptor = RequestDecryptor(private_jwks, max_json_values=100_000)
    with pytest.raises(JSONBudgetError):
        decryptor.decrypt(body)
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        with pytest.raises(JSONBudgetError):
            decryptor.decrypt(body)
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak - after <= 3 * size, (peak - after) / size
