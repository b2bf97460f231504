"""Signing key sets and dir secret sets: what loads, what is refused, what is published."""

from __future__ import annotations

import pytest

from request_crypto.errors import InvalidArgumentError, InvalidJWKSError
from request_crypto.keys.signing import (
    SIGNING_ALGORITHMS,
    DirectKeySet,
    SigningKey,
    SigningKeySet,
    generate_direct_jwk,
    generate_signing_jwk,
    key_set_kind,
    public_key_set,
)

PUBLIC_MEMBERS = {
    "ES256": {"kty", "kid", "use", "alg", "crv", "x", "y"},
    "ES384": {"kty", "kid", "use", "alg", "crv", "x", "y"},
    "EdDSA": {"kty", "kid", "use", "alg", "crv", "x"},
    "RS256": {"kty", "kid", "use", "alg", "e", "n"},
    "PS256": {"kty", "kid", "use", "alg", "e", "n"},
}


@pytest.mark.parametrize("alg", list(PUBLIC_MEMBERS))
def test_public_set_writes_the_public_members_of_every_key_type(alg) -> None:
    private = {"keys": [generate_signing_jwk("k", alg)]}
    public = public_key_set(private)["keys"][0]
    assert set(public) == PUBLIC_MEMBERS[alg]
    assert public["use"] == "sig" and public["alg"] == alg
    signature = SigningKeySet(private).signing_key().sign(b"data")
    assert SigningKey(public).verify(b"data", signature)
    assert not SigningKey(public).verify(b"other", signature)
    with pytest.raises(InvalidArgumentError, match="public"):
        SigningKeySet({"keys": [public]}).signing_key()


@pytest.mark.parametrize("jwk", [generate_signing_jwk("h", "HS256"), generate_direct_jwk("d")])
def test_public_set_refuses_secrets(jwk) -> None:
    with pytest.raises(InvalidArgumentError, match="no public half"):
        public_key_set({"keys": [jwk]})


def test_kinds_are_told_apart_and_never_mixed() -> None:
    assert key_set_kind({"keys": [generate_signing_jwk("s", "ES256")]}) == "sig"
    assert key_set_kind({"keys": [generate_direct_jwk("d")]}) == "dir"
    assert key_set_kind({"keys": [{"kty": "RSA", "kid": "r", "alg": "RSA-OAEP"}]}) == "enc"
    with pytest.raises(InvalidJWKSError, match="mixes"):
        key_set_kind({"keys": [generate_signing_jwk("s", "ES256"), generate_direct_jwk("d")]})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"alg": "ES384"}, "can only be ES256"),  # a P-256 key declared for ES384
        ({"alg": "HS256"}, "can only be ES256"),
        ({"alg": "none"}, "can only be ES256"),
        ({"crv": "P-521"}, "curve"),
        ({"use": "enc"}, "use 'sig'"),
        ({"kty": "XYZ"}, "kty"),
        ({"x": "AAAA"}, "not a valid EC key"),
    ],
)
def test_a_key_whose_algorithm_is_not_its_own_is_refused(change, message) -> None:
    jwk = {**generate_signing_jwk("k", "ES256"), **change}
    with pytest.raises(InvalidJWKSError, match=message):
        SigningKey(jwk)


def test_rsa_and_oct_keys_must_name_their_alg_and_size() -> None:
    rsa_key = generate_signing_jwk("r", "RS256")
    del rsa_key["alg"]
    with pytest.raises(InvalidJWKSError, match="RS256 or PS256"):
        SigningKey(rsa_key)
    short = {**generate_signing_jwk("h", "HS256"), "k": "c2hvcnQ"}
    with pytest.raises(InvalidJWKSError, match="256-bit"):
        SigningKey(short)
    with pytest.raises(InvalidArgumentError, match="at least 2048"):
        generate_signing_jwk("r", "RS256", size=1024)
    with pytest.raises(InvalidArgumentError, match="refused"):
        generate_signing_jwk("r", "none")


def test_direct_sets_hold_only_256_bit_dir_secrets() -> None:
    jwk = generate_direct_jwk("d")
    assert DirectKeySet({"keys": [jwk]}).kids() == ["d"]
    with pytest.raises(InvalidJWKSError, match="256-bit"):
        DirectKeySet({"keys": [{**jwk, "k": "c2hvcnQ"}]})
    with pytest.raises(InvalidJWKSError, match="not a dir secret"):
        DirectKeySet({"keys": [generate_signing_jwk("h", "HS256")]})
    with pytest.raises(InvalidJWKSError, match="twice"):
        DirectKeySet({"keys": [jwk, jwk]})


def test_every_algorithm_is_generated() -> None:
    for alg in SIGNING_ALGORITHMS:
        key = SigningKeySet({"keys": [generate_signing_jwk("k", alg)]}).signing_key("k")
        assert key.alg == alg and key.verify(b"x", key.sign(b"x"))
