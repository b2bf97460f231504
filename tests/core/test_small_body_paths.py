"""The small-body shortcuts give what the general code gives, or step aside for it.

- `elastic` bodies up to `_WHOLE_UP_TO` are unpacked whole, not streamed (formats/elastic.py);
  tests/core/test_fast_paths.py compares both with the general path on mutated bodies.
- A wrapped key's inflate in one call (`_inflate._inflate_at_once`) against the sliced loop,
  on valid, truncated, trailing, corrupt and oversized DEFLATE streams.
- `parse_compact`'s four parts decoded at once against one by one (padding, bad bytes).
"""

from __future__ import annotations

import base64
import os
import random
import zlib

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from request_crypto import PassphraseCipher, _accel, _b64, _inflate, _jose
from request_crypto.errors import RequestCryptoError
from request_crypto.formats import elastic as envelope
from request_crypto.formats import nodecrypto
from request_crypto.formats.elastic import (
    pack_encrypted_payload,
    pack_sealed,
    unpack_encrypted_payload,
)
from tests.core.test_fast_paths import general


def test_small_bodies_are_unpacked_whole_and_large_ones_streamed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Guards the test above: its `whole` cases would otherwise test the streaming path.

    With pybase64, a large body (or a bytearray) is decoded whole through views, but a str
    ending in a partial group, which cannot be viewed, still goes in pieces.
    """
    calls: list[str] = []
    for name in ("_unpack_whole", "_unpack_streaming", "_unpack_large"):
        real = getattr(envelope, name)
        monkeypatch.setattr(
            envelope, name, lambda body, real=real, name=name: calls.append(name) or real(body)
        )
    small = pack_encrypted_payload("a.b.c.d.e", os.urandom(1000))
    large = pack_encrypted_payload("a.b.c.d.e", os.urandom(60 * 1024))
    grouped = next(
        body
        for size in range(60 * 1024, 60 * 1024 + 8)
        if len(body := pack_encrypted_payload("a.b.c.d.e", os.urandom(size))) % 4 == 0
    )
    assert len(large) % 4  # this key and size: a partial last group
    for body in (small, small.encode(), large, large.encode(), grouped, bytearray(small.encode())):
        assert unpack_encrypted_payload(body) is not None
    large_path = ["_unpack_large"] if _accel.pybase64 is not None else []
    assert calls == [
        "_unpack_whole",
        "_unpack_whole",
        *large_path, "_unpack_streaming",
        *(large_path or ["_unpack_streaming"]),
        *(large_path or ["_unpack_streaming"]),
        *(large_path or ["_unpack_streaming"]),
    ]  # fmt: skip


def test_the_whole_unpack_declines_what_the_regex_refuses(backend: str) -> None:
    """Hand-found members: overlapping prefix, separator and suffix; bytes out of place."""
    layout = base64.b64encode(os.urandom(300)).decode()
    texts = [
        '{"encryptedAESKey":"","encryptedPayload":"}',
        '{"encryptedAESKey":"k","encryptedPayload":"',
        '{"encryptedAESKey":"k\\"","encryptedPayload":"' + layout + '"}',
        '{"encryptedAESKey":"k","encryptedPayload":"' + layout + '","x":""}',
        '{"encryptedAESKey":"k","encryptedPayload":"' + layout[:-8] + '"' + layout[-7:] + '"}',
        '{"encryptedAESKey":"k","encryptedPayload":"' + layout[:8] + "=" + layout[9:] + '"}',
        '{"encryptedAESKey":"k","encryptedPayload":"' + layout + '"} ',
        ' {"encryptedAESKey":"k","encryptedPayload":"' + layout + '"}',
        '{"encryptedAESKey":"k","encryptedPayload":"' + layout + '"}',
    ]
    for text in texts:
        body = base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()
        fast = unpack_encrypted_payload(body)
        assert (None if fast is None else (fast[0], bytes(fast[1]))) in (general(body), None)
        if fast is None:
            assert general(body) is None or not envelope._CANONICAL.fullmatch(text.encode())
    assert unpack_encrypted_payload(body) is not None  # the last, canonical one


def deflated(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


def inflate_outcome(data: bytes, limit: int) -> tuple[str, object]:
    try:
        return "value", _inflate.inflate(data, limit)
    except RequestCryptoError as exc:
        return "error", (type(exc), str(exc), exc.__context__, exc.__cause__)


def test_a_small_inflate_in_one_call_matches_the_sliced_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = random.Random(5)
    streams = [b"", b"\x00", b"\x03\x00", os.urandom(40)]
    for size in (0, 1, 31, 32, 33, 100, 5000):
        text = os.urandom(size) if rng.random() < 0.5 else b"a" * size
        stream = deflated(text)
        streams += [stream, stream[:-1], stream + b"x", stream[:3], stream * 2]
        for _ in range(5):
            corrupt = bytearray(stream or b"\x00")
            corrupt[rng.randrange(len(corrupt))] ^= 1 << rng.randrange(8)
            streams.append(bytes(corrupt))
    kinds = set()
    for stream in streams:
        for limit in (1, 31, 32, 33, 99, 100, 4999, 5000):
            at_once = inflate_outcome(stream, limit)
            with monkeypatch.context() as patch:
                patch.setattr(_inflate, "_INFLATE_PIECE", limit)  # more than one piece: the loop
                looped = inflate_outcome(stream, limit)
            assert at_once == looped, (stream[:20], limit)
            kinds.add(at_once[0] if at_once[0] == "value" else at_once[1][0].__name__)  # type: ignore[index]
    assert kinds == {"value", "DecryptionError", "PayloadTooLargeError"}


def test_a_wrapped_key_is_inflated_in_one_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """Guards the test above: without this path it would compare the loop with itself."""
    calls = []
    at_once = _inflate._inflate_at_once
    monkeypatch.setattr(
        _inflate, "_inflate_at_once", lambda *args: calls.append(args[2]) or at_once(*args)
    )
    assert _inflate.inflate(deflated(b"k" * 32), 32) == b"k" * 32
    with monkeypatch.context() as patch:
        patch.setattr(_inflate, "_INFLATE_PIECE", 32)
        assert _inflate.inflate(deflated(b"k" * 32), 32) == b"k" * 32
    assert calls == [32]


def parse_outcome(token: str | bytes) -> tuple[str, object]:
    try:
        return "value", _jose.parse_compact(token)
    except RequestCryptoError as exc:
        return "error", (type(exc), str(exc))


def test_parse_compact_decodes_the_parts_at_once_as_one_by_one(
    backend: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = random.Random(11)
    header = base64.urlsafe_b64encode(b'{"alg":"RSA-OAEP","enc":"A256GCM","kid":"k"}')
    texts = [header.rstrip(b"=").decode()]
    at_once = 0
    for _ in range(400):
        parts = [base64.urlsafe_b64encode(os.urandom(n)).decode() for n in (256, 12, 40, 16)]
        index = rng.randrange(4)
        change = rng.randrange(6)
        if change:
            parts = [p.rstrip("=") for p in parts]
        part = parts[index]
        position = rng.randrange(len(part))
        if change == 2:
            part = part[:position] + rng.choice("+/=!\u00e9 ") + part[position + 1 :]
        elif change == 3:
            part = part[:-1]
        elif change == 4 and part:
            part = part[:-1] + "B"  # maybe nonzero unused bits
        parts[index] = part
        token = ".".join([*texts, *parts])
        candidate: str | bytes = token.encode() if rng.random() < 0.5 else token
        fast = parse_outcome(candidate)
        with monkeypatch.context() as patch:
            patch.setattr(_jose, "b64url_decode_jwe", lambda text, parts: None)
            assert parse_outcome(candidate) == fast, token
        raw = token.encode("utf-8")
        at_once += fast[0] == "value" and _b64.b64url_decode_jwe(raw, raw.split(b".")) is not None
    assert at_once > 50


def test_small_layouts_seal_and_pack_whole_as_in_pieces(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One AESGCM call and whole base64 layers against the streamed encryptor and pieces:
    with the same salt and IV drawn, the very same body, for every key shape."""
    cipher = PassphraseCipher(b"p" * 32)
    rng = random.Random(3)
    for key in ("", "k", "kk", "a.b_c-d", 'quote"d', "k" * 700):
        for size in (0, 1, 2, 3, 8, 9, 100, 101, 102, 1_000, 3_001, 64 * 1024 - 93):
            plaintext = rng.randbytes(size)
            bodies = []
            for whole in (True, False):
                with monkeypatch.context() as patch:
                    draws = iter([b"s" * 64 + b"i" * 12])  # salt and IV: one draw
                    patch.setattr(nodecrypto.os, "urandom", lambda n, d=draws: next(d))
                    if not whole:
                        patch.setattr(envelope, "_WHOLE_UP_TO", -1)
                        patch.setattr(nodecrypto, "_ONE_SHOT", -1)
                    bodies.append(pack_sealed(key, cipher, plaintext))
            assert bodies[0] == bodies[1], (key, size)
            fast = unpack_encrypted_payload(bodies[0])
            assert fast is not None or key == 'quote"d'
            assert cipher.decrypt_bytes(general(bodies[0])[1]) == plaintext  # type: ignore[index]


def test_small_layouts_take_the_one_call_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    """Guards the test above: without these paths it would compare the pieces with themselves."""
    monkeypatch.setattr(
        PassphraseCipher, "seal_pieces", lambda *a: pytest.fail("small layouts are whole")
    )
    calls = []
    monkeypatch.setattr(nodecrypto, "AESGCM", lambda key: calls.append(key) or AESGCM(key))
    cipher = PassphraseCipher(b"p" * 32)
    body = pack_sealed("k", cipher, b"x" * 1000)
    assert len(calls) == 1
    assert cipher.decrypt_bytes(general(body)[1]) == b"x" * 1000  # type: ignore[index]


def test_small_plaintexts_deflate_to_the_default_stream() -> None:
    """The small window and hash table write what zlib's defaults write (a random passphrase:
    one stored block), and any small input inflates back."""
    rng = random.Random(9)
    for size in [32] * 300 + list(range(65)) * 5:
        data = (
            os.urandom(size)
            if rng.random() < 0.5
            else rng.choice([b"a", b"ab", b"abc"]) * (size // 3)
        )
        default = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        expected = default.compress(data) + default.flush()
        assert _jose._deflate(data) == expected
        assert _inflate.inflate(_jose._deflate(data), len(data)) == data
    large = os.urandom(5000) + b"a" * 5000
    assert _inflate.inflate(_jose._deflate(large), len(large)) == large
