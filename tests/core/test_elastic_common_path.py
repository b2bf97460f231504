"""The canonical `elastic` body's straight-line path gives what the general path gives.

`ElasticFormat.decrypt_common` (with `parse_common_wrapped_key` and
`decrypt_common_wrapped_key`), through `decrypt_request` and through `decrypt()`, against the
same decryptor with it switched off: the same value, or the same error class and message, on
valid bodies, on every hostile case of tests/core/hostile.py, on mutations, on limits and on
random wrapped-key headers (a hypothesis property). It declines before any key is used, and
whatever it answers costs at most one RSA operation.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import random
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from request_crypto import RequestDecryptor, _jose, pack_body
from request_crypto._b64 import b64url_encode
from request_crypto.errors import RequestCryptoError
from request_crypto.formats.elastic import ELASTIC, ElasticFormat
from request_crypto.limits import DEFAULT_LIMITS
from tests.core.hostile import (
    ELASTIC_KEY_HEADER,
    Kit,
    b64url_decode,
    character_edits,
    deflate,
    elastic,
    encrypted_payload,
    flip,
    parts_of,
    token,
    wrapped_key,
)
from tests.core.outcomes import compare_paths, count_unwraps, outcome, plain_outcome
from tests.core.strategies import header_members

PAYLOAD = {"a": [1, 2.5, None, True], "b": "\u00e9" * 40, "c": {"d": "x" * 500}}
PLAIN = json.dumps(PAYLOAD).encode()


def both(
    decryptor: RequestDecryptor, body: Any, monkeypatch: pytest.MonkeyPatch
) -> tuple[tuple[str, Any], tuple[str, Any]]:
    """The outcome with the `elastic` common path, then with it switched off."""
    return compare_paths(decryptor, body, monkeypatch, "elastic")


def taken(kit: Kit, body: Any, **limits: int) -> bool:
    """Whether the common path answered (a value or, once a key was used, an error)."""
    try:
        limited = dataclasses.replace(DEFAULT_LIMITS, **limits)
        return ELASTIC.open_common(kit.keys, body, limited) is not None
    except RequestCryptoError:
        return True


def mutations(body: str, rng: random.Random) -> Iterator[str | bytes]:
    yield body
    yield body.encode()
    yield body + "="
    yield body[:-1]
    yield from character_edits(body, rng)


def envelope_mutations(kit: Kit, rng: random.Random) -> Iterator[str]:
    """Canonical envelopes around altered wrapped keys and payloads (past the outer decode)."""
    passphrase = bytes(range(32))
    key = wrapped_key(kit, passphrase)
    payload = encrypted_payload(passphrase, PLAIN)
    parts = key.split(".")
    for index in range(5):
        yield pack(".".join(p + "=" * (i == index) for i, p in enumerate(parts)), payload)
        yield pack(".".join(p[:-1] if i == index else p for i, p in enumerate(parts)), payload)
        yield pack(".".join(p + "A" if i == index else p for i, p in enumerate(parts)), payload)
        if index:
            yield pack(".".join(flip(p) if i == index else p for i, p in enumerate(parts)), payload)
    yield pack(key + ".AAAA", payload)
    yield pack(key, payload[:-4])
    yield pack(key, flip_standard(payload, rng))
    for passphrase_bytes in (b"", b"x" * 31, b"x" * 33, b"x" * 200):
        yield pack(wrapped_key(kit, passphrase_bytes), payload)


def pack(key: str, payload: str) -> str:
    return pack_body(key, payload)


def flip_standard(payload: str, rng: random.Random) -> str:
    raw = bytearray(base64.b64decode(payload))
    raw[rng.randrange(len(raw))] ^= 1
    return base64.b64encode(bytes(raw)).decode()


def test_the_canonical_body_takes_the_common_path(kit: Kit) -> None:
    """Guards the tests below: they would compare the general path with itself otherwise."""
    for kid in ("kibana_1", "kibana_2", "oaep256"):
        body = kit.elastic.encrypt(kid, PAYLOAD)
        assert taken(kit, body) and taken(kit, body.encode())
        key = b64url_decode(body).split(b'"')[3]
        parsed = _jose.parse_common_wrapped_key(key, max_token_size=8192)
        assert parsed is not None and parsed == _jose.parse_compact(key)
        assert kit.decryptor.decrypt_request(body).payload == PAYLOAD


def test_valid_and_mutated_bodies_open_the_same(kit: Kit, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(13)
    fast_ones = 0
    candidates = [*mutations(kit.elastic.encrypt("kibana_1", PAYLOAD), rng)]
    candidates += envelope_mutations(kit, rng)
    for candidate in candidates:
        fast_ones += taken(kit, candidate)
        fast, general = both(kit.decryptor, candidate, monkeypatch)
        assert fast == general, candidate[:80]
    assert fast_ones >= 8


@pytest.mark.parametrize(
    ("limits", "error"),
    [
        ({"max_inflated_size": 100}, "PayloadTooLargeError"),
        ({"max_body_size": 500}, "PayloadTooLargeError"),
        ({"max_wrapped_key_size": 100}, "PayloadTooLargeError"),
        ({"max_json_values": 3}, "JSONBudgetError"),
    ],
)
def test_limits_hold_on_the_common_path(
    kit: Kit, monkeypatch: pytest.MonkeyPatch, limits: dict[str, int], error: str
) -> None:
    decryptor = RequestDecryptor(kit.keys, **limits)
    body = kit.elastic.encrypt("kibana_1", PAYLOAD)
    fast, general = both(decryptor, body, monkeypatch)
    assert fast == general and fast[0] == "error"
    assert fast[1][0].__name__ == error


def test_a_required_signature_is_refused_before_any_key_is_used(
    kit: Kit, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = count_unwraps(monkeypatch)
    decryptor = RequestDecryptor(kit.keys, require_signature=True)
    fast, general = both(decryptor, kit.elastic.encrypt("kibana_1", PAYLOAD), monkeypatch)
    assert fast == general and fast[1][0].__name__ == "UnsignedBodyError"
    assert calls == []


def test_a_declined_or_failed_body_costs_at_most_one_rsa(
    kit: Kit, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = count_unwraps(monkeypatch)
    rng = random.Random(5)
    body = kit.elastic.encrypt("kibana_1", PAYLOAD)
    key, payload = parts_of(body)
    parts = key.split(".")
    tampered_key = ".".join([*parts[:3], flip(parts[3]), parts[4]])
    for candidate in (body, pack(tampered_key, payload), pack(key, flip_standard(payload, rng))):
        for open_body in (outcome, plain_outcome):
            calls.clear()
            result = open_body(kit.decryptor, candidate)
            assert len(calls) == 1, result


def test_decrypt_opens_the_common_body_without_the_result_objects(
    kit: Kit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`decrypt()` keeps only the payload: neither `open_common` nor `open` is called."""

    def refuse(*args: Any) -> None:
        raise AssertionError("decrypt() took a path that builds result objects")

    monkeypatch.setattr(ElasticFormat, "open_common", refuse)
    monkeypatch.setattr(ElasticFormat, "open", refuse)
    for kid in ("kibana_1", "oaep256"):
        body = kit.elastic.encrypt(kid, PAYLOAD)
        assert kit.decryptor.decrypt(body) == PAYLOAD
        assert kit.decryptor.decrypt(body.encode()) == PAYLOAD


RSA_ALGS = tuple(_jose.KEY_MANAGEMENT_ALGORITHMS)
ENCS = ("A128CBC-HS256", "A256CBC-HS512", "A256GCM")
MEMBERS = header_members(["alg", "enc", "kid", "zip", "cty", "x"])


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(header=MEMBERS, to=st.sampled_from(["kibana_1", "oaep256"]), as_bytes=st.booleans())
def test_random_wrapped_key_headers_open_the_same(
    kit: Kit, header: dict[str, Any], to: str, as_bytes: bool
) -> None:
    claimed, enc = header.get("alg"), header.get("enc")
    alg = claimed if isinstance(claimed, str) and claimed in RSA_ALGS else "RSA-OAEP"
    enc = enc if isinstance(enc, str) and enc in ENCS else "A128CBC-HS256"
    passphrase = bytes(range(32))
    key = token(kit, header, deflate(passphrase), to=to, alg=alg, enc=enc)
    body = pack(key, encrypted_payload(passphrase, PLAIN))
    candidate: str | bytes = body.encode() if as_bytes else body
    with pytest.MonkeyPatch.context() as monkeypatch:
        fast, general = both(kit.decryptor, candidate, monkeypatch)
    assert fast == general
    parsed = _jose.parse_common_wrapped_key(key.encode(), max_token_size=8192)
    if parsed is not None:
        assert parsed == _jose.parse_compact(key)
        assert header == {**ELASTIC_KEY_HEADER, "kid": header["kid"]}


def test_wrapped_key_headers_are_copies_and_bounded(kit: Kit) -> None:
    key = wrapped_key(kit, bytes(32)).encode()
    first = _jose.parse_common_wrapped_key(key, max_token_size=8192)
    assert first is not None
    first.header["kid"] = "tampered"  # a caller mutating its copy (it goes into metadata)
    again = _jose.parse_common_wrapped_key(key, max_token_size=8192)
    assert again is not None and again.header["kid"] == "kibana_1"
    rest = key.split(b".", 1)[1]
    for n in range(3 * 256):
        text = json.dumps({**ELASTIC_KEY_HEADER, "kid": f"k{n}"}).encode()
        protected = b64url_encode(text).encode()
        _jose.parse_common_wrapped_key(protected + b"." + rest, max_token_size=8192)
        assert len(_jose._WRAPPED_KEY_HEADERS) <= 256


@pytest.mark.parametrize("body", [None, 5, ["a"], bytearray(b"AAAA"), memoryview(b"AAAA"), ""])
def test_the_common_path_declines_what_it_does_not_vouch_for(kit: Kit, body: Any) -> None:
    assert not taken(kit, body)


def test_a_body_over_64_kib_is_left_to_the_streaming_path(kit: Kit) -> None:
    body = elastic(kit, json.dumps({"x": "y" * 70_000}).encode())
    assert not taken(kit, body)
    assert kit.decryptor.decrypt(body) == {"x": "y" * 70_000}
