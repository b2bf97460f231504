"""The common `jwe` body's straight-line path gives what the general path gives, or steps aside.

`parse_common_compact` against `parse_compact`, and `RequestDecryptor` with the common path
against the same decryptor with it switched off: the same value, or the same error class and
message, on valid bodies, on every hostile case of tests/core/hostile.py, on mutations and on
random headers (a hypothesis property). Whatever the common path answers, it answers with at
most one RSA operation, and it declines before any key is used.
"""

from __future__ import annotations

import base64
import json
import os
import random
import tracemalloc
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from request_crypto import RequestDecryptor, RequestEncryptor, _accel, _b64, _jose
from request_crypto.formats import Opened
from request_crypto.formats.jwe import JWE
from request_crypto.keys.jwks import JWKManager
from request_crypto.keys.signing import generate_signing_jwk, public_key_set
from request_crypto.keys.source import JWKDecryptResult
from request_crypto.limits import DEFAULT_LIMITS
from request_crypto.nested import SignerInfo
from tests.core.hostile import PLAIN, Kit, character_edits, craft
from tests.core.outcomes import compare_paths, count_unwraps, outcome, plain_outcome
from tests.core.strategies import header_members

RSA_ALGS = tuple(_jose.KEY_MANAGEMENT_ALGORITHMS)
PAYLOAD = {"a": [1, 2.5, None, True], "b": "\u00e9" * 40, "c": {"d": "x" * 500}}


def both(
    decryptor: RequestDecryptor, body: Any, monkeypatch: pytest.MonkeyPatch
) -> tuple[tuple[str, Any], tuple[str, Any]]:
    """The outcome with the `jwe` common path, then with it switched off."""
    return compare_paths(decryptor, body, monkeypatch, "jwe")


def common(token: Any, limits: Any = DEFAULT_LIMITS) -> _jose.CompactJWE | None:
    return _jose.parse_common_compact(
        token, max_token_size=limits.max_body_size, max_plaintext=limits.max_inflated_size
    )


def mutations(body: str, rng: random.Random) -> Iterator[str | bytes]:
    yield body
    yield body.encode()
    parts = body.split(".")
    for index in range(5):
        yield ".".join(p + "=" * (i == index) for i, p in enumerate(parts))  # padding
        yield ".".join(p[:-1] if i == index else p for i, p in enumerate(parts))
        yield ".".join(p + "A" if i == index else p for i, p in enumerate(parts))
    yield from character_edits(body, rng)


def test_the_common_body_takes_the_common_path(kit: Kit) -> None:
    """Guards the tests below: they would compare the general path with itself otherwise."""
    for kid in ("kibana_1", "oaep256"):
        body = kit.jwe.encrypt(kid, PAYLOAD)
        parsed = common(body)
        assert parsed is not None and parsed == _jose.parse_compact(body)
        opened = JWE.open_common(kit.keys, body, DEFAULT_LIMITS)
        assert opened is not None and json.loads(opened.plaintext) == PAYLOAD


def test_valid_and_mutated_bodies_open_the_same(kit: Kit, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(13)
    taken = 0
    for kid in ("kibana_1", "kibana_2", "oaep256", "public-only"):
        body = RequestEncryptor(kit.keys.get_public_jwks(), format="jwe").encrypt(kid, PAYLOAD)
        for candidate in mutations(body, rng):
            parsed = common(candidate)
            if parsed is not None:
                taken += 1
                assert parsed == _jose.parse_compact(candidate)
            fast, general = both(kit.decryptor, candidate, monkeypatch)
            assert fast == general, candidate[:80]
    assert taken > 20


@pytest.mark.parametrize(
    ("limits", "error"),
    [({"max_inflated_size": 100}, "PayloadTooLargeError"), ({"max_body_size": 500}, None)],
)
def test_limits_hold_on_the_common_path(
    kit: Kit, monkeypatch: pytest.MonkeyPatch, limits: dict[str, int], error: str | None
) -> None:
    decryptor = RequestDecryptor(kit.keys, **limits)
    body = kit.jwe.encrypt("kibana_1", PAYLOAD)
    fast, general = both(decryptor, body, monkeypatch)
    assert fast == general and fast[0] == "error"
    assert error is None or fast[1][0].__name__ == error


def test_signed_and_required_signature_bodies_end_the_same(
    kit: Kit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Signed bodies (cty JWT) open on the common path too; what follows is shared."""
    sender = {"keys": [generate_signing_jwk("s-1", "ES256")]}
    other = {"keys": [generate_signing_jwk("s-2", "ES256")]}
    public = kit.keys.get_public_jwks()
    signed = RequestEncryptor(public, sign_with=sender).encrypt("kibana_1", PAYLOAD)
    unsigned = kit.jwe.encrypt("kibana_1", PAYLOAD)
    odd_cty = ".".join(craft(kit, {**header_of(unsigned), "cty": "text/plain"}, PLAIN))
    assert common(signed) is not None and common(odd_cty) is not None
    decryptors = [
        kit.decryptor,  # no verification keys: a signed body is refused
        RequestDecryptor(kit.keys, verify_with=public_key_set(sender)),
        RequestDecryptor(kit.keys, verify_with=public_key_set(other)),
        RequestDecryptor(kit.keys, require_signature=True),
    ]
    seen = set()
    for decryptor in decryptors:
        for body in (signed, unsigned, odd_cty):
            fast, general = both(decryptor, body, monkeypatch)
            assert fast == general
            seen.add(fast[0] if fast[0] == "value" else fast[1][0].__name__)
    assert {"value", "SignatureError", "UnsignedBodyError", "UnknownSignerError"} <= seen
    cty_number = craft(kit, {**header_of(unsigned), "cty": 5}, PLAIN)
    assert common(".".join(cty_number)) is None  # a cty that is not a string: general path


def test_decrypt_builds_no_result_object_it_throws_away(
    kit: Kit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`decrypt` returns the payload only: no Opened, JWKDecryptResult or SignerInfo (~0.5 us
    each) is built for a common body, signed or not; `decrypt_request` still builds them."""
    built: list[str] = []
    for cls in (Opened, JWKDecryptResult, SignerInfo):
        original = cls.__init__

        def counting(self: Any, *args: Any, _original: Any = original, **kw: Any) -> None:
            built.append(type(self).__name__)
            _original(self, *args, **kw)

        monkeypatch.setattr(cls, "__init__", counting)
    sender = {"keys": [generate_signing_jwk("s-1", "ES256")]}
    public = kit.keys.get_public_jwks()
    signed = RequestEncryptor(public, sign_with=sender).encrypt("kibana_1", PAYLOAD)
    unsigned = kit.jwe.encrypt("kibana_1", PAYLOAD)
    verifying = RequestDecryptor(kit.keys, verify_with=public_key_set(sender))
    assert kit.decryptor.decrypt(unsigned) == PAYLOAD
    assert verifying.decrypt(signed)["c"] == PAYLOAD["c"]
    assert built == []
    verifying.decrypt_request(signed)
    assert sorted(built) == ["JWKDecryptResult", "Opened", "SignerInfo"]


def test_decrypt_asks_no_key_metadata(kit: Kit, monkeypatch: pytest.MonkeyPatch) -> None:
    """`decrypt` returns the payload only, so it builds no metadata dict for the key (~0.4 us
    a body): `can_decrypt` answers for it. `decrypt_request`, which reports it, still asks."""
    asked: list[str] = []
    key_metadata = JWKManager.key_metadata

    def counting(self: JWKManager, kid: str) -> dict[str, Any] | None:
        asked.append(kid)
        return key_metadata(self, kid)

    monkeypatch.setattr(JWKManager, "key_metadata", counting)
    body = kit.jwe.encrypt("kibana_1", PAYLOAD)
    assert kit.decryptor.decrypt(body) == PAYLOAD
    assert asked == []
    assert kit.decryptor.decrypt_request(body).metadata.key["kid"] == "kibana_1"
    assert asked == ["kibana_1"]


def test_a_kid_that_may_not_decrypt_is_refused_alike(kit: Kit) -> None:
    """A common body to a kid the set holds but may not decrypt with (a public key) or does
    not hold: the same NoKeyFoundError from `decrypt` as from `decrypt_request`."""
    for kid in ("public-only", "absent"):
        header = {"alg": "RSA-OAEP", "enc": "A256GCM", "kid": kid}
        body = ".".join(craft(kit, header, PLAIN, to="kibana_1"))
        assert common(body) is not None
        fast = plain_outcome(kit.decryptor, body)
        assert fast == outcome(kit.decryptor, body)
        assert fast[0] == "error" and fast[1][0].__name__ == "NoKeyFoundError"


def header_of(body: str) -> dict[str, Any]:
    protected = body.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(protected + "=" * (-len(protected) % 4)))  # type: ignore[no-any-return]


def test_a_declined_or_failed_body_costs_at_most_one_rsa(
    kit: Kit, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = count_unwraps(monkeypatch)
    parts = kit.jwe.encrypt("kibana_1", PAYLOAD).split(".")
    middle = len(parts[3]) // 2
    flipped = "A" if parts[3][middle] != "A" else "B"
    tampered = [*parts[:3], parts[3][:middle] + flipped + parts[3][middle + 1 :], parts[4]]
    short_iv = [*parts[:2], "A" * 12, *parts[3:]]  # a 9-byte IV
    for body in (".".join(tampered), ".".join(short_iv), ".".join(parts)):
        for attempt in (outcome, plain_outcome):
            calls.clear()
            result = attempt(kit.decryptor, body)
            assert len(calls) == 1, result


MEMBERS = header_members(["alg", "enc", "kid", "zip", "cty", "crit", "x"])


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(header=MEMBERS, to=st.sampled_from(["kibana_1", "oaep256"]), as_bytes=st.booleans())
def test_random_headers_open_the_same(
    kit: Kit, header: dict[str, Any], to: str, as_bytes: bool
) -> None:
    claimed = header.get("alg")
    alg = claimed if isinstance(claimed, str) and claimed in RSA_ALGS else "RSA-OAEP"
    body = ".".join(craft(kit, header, to=to, alg=alg))
    candidate: str | bytes = body.encode() if as_bytes else body
    with pytest.MonkeyPatch.context() as monkeypatch:
        fast, general = both(kit.decryptor, candidate, monkeypatch)
    assert fast == general
    parsed = common(candidate)
    if parsed is not None:
        assert parsed == _jose.parse_compact(candidate)
        assert set(header) == {"alg", "enc", "kid"}


def test_common_headers_are_copies_and_bounded(kit: Kit) -> None:
    body = kit.jwe.encrypt("kibana_1", PAYLOAD)
    first = common(body)
    assert first is not None
    first.header["kid"] = "tampered"  # a caller mutating its copy (it goes into metadata)
    again = common(body)
    assert again is not None and again.header["kid"] == "kibana_1"
    rest = body.split(".", 1)[1]
    for n in range(3 * 256):
        text = json.dumps({"alg": "RSA-OAEP", "enc": "A256GCM", "kid": f"k{n}"}).encode()
        protected = base64.urlsafe_b64encode(text).rstrip(b"=").decode()
        common(protected + "." + rest)
        assert len(_jose._COMMON_HEADERS) <= 256


@pytest.mark.parametrize("accelerated", [True, False], ids=["pybase64", "stdlib"])
def test_decoding_the_parts_at_once_matches_each_part(
    accelerated: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if accelerated and _accel.pybase64 is None:
        pytest.skip("pybase64 is not installed")
    if not accelerated:
        monkeypatch.setattr(_accel, "pybase64", None)
    rng = random.Random(7)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_+/=.!\u00e9 "
    decoded_some = 0
    for _ in range(3000):
        parts = []
        for _ in range(4):
            text = base64.urlsafe_b64encode(os.urandom(rng.choice([0, 1, 2, 12, 16, 300])))
            part = text.rstrip(b"=").decode()
            if rng.random() < 0.3 and part:
                position = rng.randrange(len(part))
                part = part[:position] + rng.choice(alphabet) + part[position + 1 :]
            parts.append(part.encode("utf-8"))
        whole = b".".join([b"eyJ", *parts])
        each = [_b64.b64url_decode_canonical(part) for part in parts]
        expected = None if None in each else each
        assert _b64.b64url_decode_parts(whole, parts) == expected
        # The unrolled four: the same, or None for an empty part (parse_compact takes it).
        unrolled = _b64.b64url_decode_jwe(whole, [b"eyJ", *parts])
        if expected is None or all(parts):
            assert unrolled == (None if expected is None else tuple(expected))
        else:
            assert unrolled in (None, tuple(expected))
        decoded_some += unrolled is not None
    assert decoded_some > 300


def test_a_large_body_is_refused_by_the_common_path_before_it_is_copied() -> None:
    """The common path takes bodies of at most 64 KiB: a 5 MB `elastic` body (a str) used to
    be copied to ASCII bytes first, to be refused after (a body-sized allocation per decrypt)."""
    body = "A" * (5 * 1024 * 1024)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        common = _jose.parse_common_compact(
            body, max_token_size=DEFAULT_LIMITS.max_body_size, max_plaintext=1 << 24
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert common is None
    assert peak < 64 * 1024


@pytest.mark.parametrize(
    "body", [None, 5, ["a.b.c.d.e"], bytearray(b"a.b.c.d.e"), memoryview(b"x")]
)
def test_the_common_path_declines_what_is_not_str_or_bytes(body: Any) -> None:
    assert _jose.parse_common_compact(body, max_token_size=1 << 20, max_plaintext=1 << 20) is None
