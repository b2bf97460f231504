"""Signed bodies (issue 14): a JWT signed by the sender inside the `jwe` body, verified on receipt.

Every refusal the issue lists is made here with a real token built around the rule it breaks.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import utils

from request_crypto import JWKManager, RequestDecryptor, RequestEncryptor
from request_crypto._b64 import b64url_decode, b64url_encode
from request_crypto.errors import (
    ClaimsError,
    InvalidArgumentError,
    InvalidJWKSError,
    MalformedBodyError,
    RequestCryptoError,
    SignatureError,
    TokenExpiredError,
    UnknownSignerError,
    UnsignedBodyError,
    UnsupportedAlgorithmError,
)
from request_crypto.keys.signing import (
    SIGNING_ALGORITHMS,
    SigningKeySet,
    generate_direct_jwk,
    generate_signing_jwk,
    public_key_set,
)

ASYMMETRIC = [alg for alg in SIGNING_ALGORITHMS if alg != "HS256"]


@pytest.fixture(scope="module")
def receiver() -> dict[str, Any]:
    manager = JWKManager()
    manager.add_key("rx-oaep")
    manager.add_key("rx-oaep256", alg="RSA-OAEP-256")
    return {"private": manager.get_private_jwks(), "public": manager.get_public_jwks()}


@pytest.fixture(scope="module")
def senders() -> dict[str, dict[str, Any]]:
    """One private signing set per algorithm (kid `s-ALG`)."""
    return {alg: {"keys": [generate_signing_jwk(f"s-{alg}", alg)]} for alg in SIGNING_ALGORITHMS}


def verify_set(senders: dict[str, dict[str, Any]], alg: str) -> dict[str, Any]:
    """What the receiver holds: the public half, or the HS256 secret itself."""
    return senders[alg] if alg == "HS256" else public_key_set(senders[alg])


def seal_jws(receiver: dict[str, Any], jws: str, kid: str = "rx-oaep") -> str:
    """A `jwe` body carrying any JWS text (cty JWT): how forged tokens reach the verifier."""
    return JWKManager(receiver["public"]).encrypt_jwe(kid, jws.encode(), cty="JWT")


def jws_with(header: dict[str, Any], claims: dict[str, Any], sign: Any) -> str:
    signing_input = (
        b64url_encode(json.dumps(header).encode())
        + "."
        + b64url_encode(json.dumps(claims).encode())
    )
    return signing_input + "." + b64url_encode(sign(signing_input.encode()))


def fresh_claims(**extra: Any) -> dict[str, Any]:
    return {"exp": int(time.time()) + 600, **extra}


@pytest.mark.parametrize("alg", SIGNING_ALGORITHMS)
@pytest.mark.parametrize("kid", ["rx-oaep", "rx-oaep256"])
def test_signed_body_round_trip_for_every_algorithm(receiver, senders, alg, kid) -> None:
    encryptor = RequestEncryptor(
        receiver["public"], sign_with=senders[alg], issuer="kibana", audience="telemetry"
    )
    assert encryptor.format.value == "jwe"  # sign_with without a format selects jwe
    body = encryptor.encrypt(kid, {"clusters": 3})
    header = json.loads(b64url_decode(body.split(".")[0], "header"))
    assert header["cty"] == "JWT"
    decryptor = RequestDecryptor(
        receiver["private"],
        verify_with=verify_set(senders, alg),
        issuer="kibana",
        audience="telemetry",
    )
    result = decryptor.decrypt_request(body)
    assert result.payload["clusters"] == 3
    assert result.signer is not None
    assert (result.signer.kid, result.signer.alg, result.signer.iss) == (f"s-{alg}", alg, "kibana")
    assert result.payload["exp"] - result.payload["iat"] == 3600
    assert len(b64url_decode(result.signer.jti, "jti")) == 16
    assert result.kid == kid


def test_dir_seed_form_round_trip_and_refusal_by_rsa_receiver(receiver, senders) -> None:
    secret = {"keys": [generate_direct_jwk("shared")]}
    body = RequestEncryptor(secret, sign_with=senders["ES256"]).encrypt("shared", {"a": 1})
    header = json.loads(b64url_decode(body.split(".")[0], "header"))
    assert (header["alg"], header["enc"], header["cty"]) == ("dir", "A256GCM", "JWT")
    assert body.split(".")[1] == ""
    verify = verify_set(senders, "ES256")
    assert RequestDecryptor(secret, verify_with=verify).decrypt(body)["a"] == 1
    with pytest.raises(UnsupportedAlgorithmError, match="dir"):
        RequestDecryptor(receiver["private"], verify_with=verify).decrypt(body)
    other = {"keys": [generate_direct_jwk("shared")]}
    with pytest.raises(RequestCryptoError):
        RequestDecryptor(other, verify_with=verify).decrypt(body)
    rsa_body = RequestEncryptor(receiver["public"], sign_with=senders["ES256"]).encrypt(
        "rx-oaep", {"a": 1}
    )
    with pytest.raises(UnsupportedAlgorithmError, match="only alg 'dir'"):
        RequestDecryptor(secret, verify_with=verify).decrypt(rsa_body)


def test_alg_none_is_refused(receiver, senders) -> None:
    token = jws_with({"alg": "none", "kid": "s-ES256"}, fresh_claims(), lambda _: b"")
    decryptor = RequestDecryptor(receiver["private"], verify_with=verify_set(senders, "ES256"))
    with pytest.raises(SignatureError, match="none"):
        decryptor.decrypt(seal_jws(receiver, token))


def test_hs256_with_a_public_key_as_the_secret_is_refused(receiver, senders) -> None:
    public = verify_set(senders, "RS256")
    for secret in (json.dumps(public["keys"][0]).encode(), public["keys"][0]["n"].encode()):
        token = jws_with(
            {"alg": "HS256", "kid": "s-RS256"},
            fresh_claims(),
            lambda data, s=secret: hmac.new(s, data, hashlib.sha256).digest(),
        )
        decryptor = RequestDecryptor(receiver["private"], verify_with=public)
        with pytest.raises(SignatureError, match="fixed by the key"):
            decryptor.decrypt(seal_jws(receiver, token))


def test_es256_header_on_an_rs256_key_is_refused(receiver, senders) -> None:
    es_key = SigningKeySet(senders["ES256"]).signing_key()
    token = jws_with({"alg": "ES256", "kid": "s-RS256"}, fresh_claims(), es_key.sign)
    decryptor = RequestDecryptor(receiver["private"], verify_with=verify_set(senders, "RS256"))
    with pytest.raises(SignatureError, match="RS256 only"):
        decryptor.decrypt(seal_jws(receiver, token))


@pytest.mark.parametrize(
    "extra",
    [
        {"b64": False, "crit": ["b64"]},
        {"b64": False},
        {"crit": ["exp"]},
        {"jwk": {"kty": "EC"}},
        {"jku": "https://attacker.example/jwks"},
        {"x5u": "https://attacker.example/cert"},
        {"x5c": ["MIIB"]},
    ],
)
def test_refused_jws_header_members(receiver, senders, extra) -> None:
    key = SigningKeySet(senders["ES256"]).signing_key()
    token = jws_with({"alg": "ES256", "kid": "s-ES256", **extra}, fresh_claims(), key.sign)
    decryptor = RequestDecryptor(receiver["private"], verify_with=verify_set(senders, "ES256"))
    with pytest.raises(SignatureError, match="refused"):
        decryptor.decrypt(seal_jws(receiver, token))


@pytest.mark.parametrize("alg", ["ES256", "ES384"])
def test_ecdsa_der_and_wrong_length_signatures_are_refused(receiver, senders, alg) -> None:
    key = SigningKeySet(senders[alg]).signing_key()
    size = 32 if alg == "ES256" else 48
    header = {"alg": alg, "kid": f"s-{alg}"}

    def der(data: bytes) -> bytes:
        raw = key.sign(data)
        return utils.encode_dss_signature(
            int.from_bytes(raw[:size], "big"), int.from_bytes(raw[size:], "big")
        )

    decryptor = RequestDecryptor(receiver["private"], verify_with=verify_set(senders, alg))
    good = jws_with(header, fresh_claims(), key.sign)
    assert decryptor.decrypt(seal_jws(receiver, good))["exp"] > 0
    for sign in (der, lambda data: key.sign(data) + b"\0", lambda data: key.sign(data)[:-1]):
        token = jws_with(header, fresh_claims(), sign)
        with pytest.raises(SignatureError, match="does not verify"):
            decryptor.decrypt(seal_jws(receiver, token))


def test_altered_claims_do_not_verify(receiver, senders) -> None:
    key = SigningKeySet(senders["EdDSA"]).signing_key()
    token = jws_with({"alg": "EdDSA", "kid": "s-EdDSA"}, fresh_claims(role="user"), key.sign)
    head, _, signature = token.split(".")
    forged = ".".join(
        (head, b64url_encode(json.dumps(fresh_claims(role="admin")).encode()), signature)
    )
    decryptor = RequestDecryptor(receiver["private"], verify_with=verify_set(senders, "EdDSA"))
    with pytest.raises(SignatureError, match="does not verify"):
        decryptor.decrypt(seal_jws(receiver, forged))


def test_claims_are_checked(receiver, senders) -> None:
    key = SigningKeySet(senders["ES256"]).signing_key()
    verify = verify_set(senders, "ES256")
    header = {"alg": "ES256", "kid": "s-ES256"}
    now = int(time.time())
    cases = [
        ({"exp": now - 100}, TokenExpiredError, {}),
        ({"exp": now + 600, "nbf": now + 300}, ClaimsError, {}),
        ({"iat": now}, ClaimsError, {}),  # no exp
        ({"exp": "tomorrow"}, ClaimsError, {}),
        ({"exp": now + 600, "iss": "other"}, ClaimsError, {"issuer": "kibana"}),
        ({"exp": now + 600, "aud": ["a", "b"]}, ClaimsError, {"audience": "telemetry"}),
    ]
    for claims, error, options in cases:
        body = seal_jws(receiver, jws_with(header, claims, key.sign))
        with pytest.raises(error):
            RequestDecryptor(receiver["private"], verify_with=verify, **options).decrypt(body)
    # Leeway lets a just-expired token and a slightly early nbf through.
    body = seal_jws(receiver, jws_with(header, {"exp": now - 5, "nbf": now + 5}, key.sign))
    assert RequestDecryptor(receiver["private"], verify_with=verify, leeway=60).decrypt(body)
    body = seal_jws(
        receiver, jws_with(header, {"exp": now + 60, "aud": ["x", "telemetry"]}, key.sign)
    )
    assert RequestDecryptor(receiver["private"], verify_with=verify, audience="telemetry").decrypt(
        body
    )


def test_unknown_kid_and_kid_less_tokens(receiver, senders) -> None:
    key = SigningKeySet(senders["ES256"]).signing_key()
    verify = verify_set(senders, "ES256")
    unknown = jws_with({"alg": "ES256", "kid": "nobody"}, fresh_claims(), key.sign)
    with pytest.raises(UnknownSignerError, match="does not hold"):
        RequestDecryptor(receiver["private"], verify_with=verify).decrypt(
            seal_jws(receiver, unknown)
        )
    kid_less = seal_jws(receiver, jws_with({"alg": "ES256"}, fresh_claims(), key.sign))
    assert (
        RequestDecryptor(receiver["private"], verify_with=verify)
        .decrypt_request(kid_less)
        .signer.kid
        == "s-ES256"
    )
    two = {
        "keys": [
            *verify["keys"],
            public_key_set({"keys": [generate_signing_jwk("s2", "ES256")]})["keys"][0],
        ]
    }
    with pytest.raises(UnknownSignerError, match="must set the kid"):
        RequestDecryptor(receiver["private"], verify_with=two).decrypt(kid_less)


def test_nesting_stops_at_one_level(receiver, senders) -> None:
    key = SigningKeySet(senders["ES256"]).signing_key()
    token = jws_with({"alg": "ES256", "kid": "s-ES256", "cty": "JWT"}, fresh_claims(), key.sign)
    decryptor = RequestDecryptor(receiver["private"], verify_with=verify_set(senders, "ES256"))
    with pytest.raises(SignatureError, match="one level"):
        decryptor.decrypt(seal_jws(receiver, token))
    inner = RequestEncryptor(receiver["public"], sign_with=senders["ES256"]).encrypt("rx-oaep", {})
    with pytest.raises(MalformedBodyError):  # a JWE where a JWS belongs
        decryptor.decrypt(seal_jws(receiver, inner))


def test_unsigned_and_signed_bodies_by_configuration(receiver, senders) -> None:
    unsigned = RequestEncryptor(receiver["public"], format="jwe").encrypt("rx-oaep", {"a": 1})
    elastic = RequestEncryptor(receiver["public"]).encrypt("rx-oaep", {"a": 1})
    verify = verify_set(senders, "ES256")
    for body in (unsigned, elastic):
        with pytest.raises(UnsignedBodyError, match="requires a signed body"):
            RequestDecryptor(receiver["private"], verify_with=verify).decrypt(body)
        lenient = RequestDecryptor(receiver["private"], verify_with=verify, require_signature=False)
        assert lenient.decrypt_request(body).signer is None
    signed = RequestEncryptor(receiver["public"], sign_with=senders["ES256"]).encrypt("rx-oaep", {})
    with pytest.raises(SignatureError, match="verify_with"):
        RequestDecryptor(receiver["private"]).decrypt(signed)


def test_sender_arguments_are_checked(receiver, senders) -> None:
    with pytest.raises(InvalidArgumentError, match="elastic format has no signatures"):
        RequestEncryptor(receiver["public"], format="elastic", sign_with=senders["ES256"])
    encryptor = RequestEncryptor(receiver["public"], sign_with=senders["ES256"])
    with pytest.raises(InvalidArgumentError, match="JSON object"):
        encryptor.encrypt("rx-oaep", [1, 2])
    with pytest.raises(InvalidArgumentError, match="exp"):
        encryptor.encrypt("rx-oaep", {"exp": 1})
    with pytest.raises(InvalidArgumentError, match="public"):
        RequestEncryptor(receiver["public"], sign_with=public_key_set(senders["ES256"]))
    with pytest.raises(InvalidArgumentError, match="expires_in"):
        RequestEncryptor(receiver["public"], sign_with=senders["ES256"], expires_in=0)
    short = RequestEncryptor(receiver["public"], sign_with=senders["ES256"], expires_in=30)
    claims = RequestDecryptor(
        receiver["private"], verify_with=verify_set(senders, "ES256")
    ).decrypt(short.encrypt("rx-oaep", {}))
    assert claims["exp"] - claims["iat"] == 30


def test_key_sets_stay_apart(receiver, senders) -> None:
    with pytest.raises(InvalidJWKSError):
        JWKManager(public_key_set(senders["ES256"]))  # the RSA sets stay strict
    with pytest.raises(InvalidJWKSError, match="mixes"):
        RequestDecryptor({"keys": [*receiver["private"]["keys"], generate_direct_jwk("d")]})
    with pytest.raises(InvalidJWKSError):
        SigningKeySet(receiver["public"])  # use 'enc' is no signing key


def test_any_altered_byte_of_the_signed_jwt_is_a_request_crypto_error(receiver, senders) -> None:
    """Every one-byte change of the inner JWT is refused with a RequestCryptoError, unchained."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    token = RequestEncryptor(receiver["public"], sign_with=senders["ES256"]).signer.sign({"a": 1})
    decryptor = RequestDecryptor(receiver["private"], verify_with=verify_set(senders, "ES256"))
    manager = JWKManager(receiver["public"])

    @settings(max_examples=150, deadline=None)
    @given(st.integers(0, len(token) - 1), st.integers(1, 255))
    def altered(position: int, delta: int) -> None:
        data = bytearray(token.encode())
        data[position] = (data[position] + delta) % 256
        body = manager.encrypt_jwe("rx-oaep", bytes(data), cty="JWT")
        try:
            decryptor.decrypt(body)
        except RequestCryptoError as exc:
            assert exc.__cause__ is None and exc.__context__ is None
        else:
            pytest.fail(f"a token altered at byte {position} was accepted")

    altered()


def test_describe_signer_verified_or_labelled_unverified(receiver, senders) -> None:
    encryptor = RequestEncryptor(receiver["public"], sign_with=senders["PS256"], issuer="kibana")
    body = encryptor.encrypt("rx-oaep", {"a": 1})
    plain = RequestDecryptor(receiver["private"])
    unverified = plain.describe_signer(body)
    assert unverified["verified"] is False
    assert (unverified["kid"], unverified["alg"], unverified["claims"]["iss"]) == (
        "s-PS256",
        "PS256",
        "kibana",
    )
    assert plain.get_jwk_metadata(body).key["kid"] == "rx-oaep"  # the receiver's key
    checked = RequestDecryptor(receiver["private"], verify_with=verify_set(senders, "PS256"))
    assert checked.describe_signer(body)["verified"] is True
    wrong = RequestDecryptor(receiver["private"], verify_with=verify_set(senders, "RS256"))
    with pytest.raises(UnknownSignerError):
        wrong.describe_signer(body)
    unsigned = RequestEncryptor(receiver["public"], format="jwe").encrypt("rx-oaep", {})
    assert plain.describe_signer(unsigned) is None
