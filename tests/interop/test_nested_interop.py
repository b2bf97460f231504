"""Signed bodies against the real packages: npm `jose` both ways, jwcrypto and joserfc.

The seed's own form (ES256 inside `dir` + A256GCM with a shared secret, no kid anywhere) is
one of the cases.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from joserfc import jwe as rfc_jwe
from joserfc import jwt as rfc_jwt
from joserfc.jwk import KeySet as RfcKeySet
from jwcrypto import jwk as cjwk
from jwcrypto import jwt as cjwt

from request_crypto import JWKManager, RequestDecryptor, RequestEncryptor
from request_crypto.keys.signing import (
    SIGNING_ALGORITHMS,
    generate_direct_jwk,
    generate_signing_jwk,
    public_key_set,
)

pytestmark = pytest.mark.interop
RECEIVERS = ["RSA-OAEP", "RSA-OAEP-256", "dir"]


@pytest.fixture(scope="module")
def keys() -> dict[str, Any]:
    manager = JWKManager()
    manager.add_key("rx-RSA-OAEP", alg="RSA-OAEP")
    manager.add_key("rx-RSA-OAEP-256", alg="RSA-OAEP-256")
    private = manager.get_private_jwks()["keys"]
    receivers = {key["alg"]: {"keys": [key]} for key in private}
    receivers["dir"] = {"keys": [generate_direct_jwk("rx-dir")]}
    senders = {alg: {"keys": [generate_signing_jwk(f"s-{alg}", alg)]} for alg in SIGNING_ALGORITHMS}
    return {"receivers": receivers, "senders": senders}


def public_receiver(keys: dict[str, Any], alg: str) -> dict[str, Any]:
    document = keys["receivers"][alg]
    return document if alg == "dir" else JWKManager(document).get_public_jwks()


def verify_set(keys: dict[str, Any], alg: str) -> dict[str, Any]:
    sender = keys["senders"][alg]
    return sender if alg == "HS256" else public_key_set(sender)


@pytest.mark.parametrize("receiver", RECEIVERS)
def test_jose_tokens_verify_and_decrypt_here(js, keys, receiver) -> None:
    requests = []
    for alg in SIGNING_ALGORITHMS:
        requests.append(
            {
                "op": "jose_sign_encrypt",
                "sign_jwk": keys["senders"][alg]["keys"][0],
                "encrypt_jwk": public_receiver(keys, receiver)["keys"][0],
                "items": [{"claims": {"n": alg}, "issuer": "kibana", "audience": "telemetry"}],
            }
        )
    answers = js("batch", requests=requests)
    for alg, answer in zip(SIGNING_ALGORITHMS, answers, strict=True):
        assert answer[0]["ok"], answer
        decryptor = RequestDecryptor(
            keys["receivers"][receiver],
            verify_with=verify_set(keys, alg),
            issuer="kibana",
            audience="telemetry",
        )
        result = decryptor.decrypt_request(answer[0]["value"])
        assert result.payload["n"] == alg
        assert (result.signer.kid, result.signer.alg) == (f"s-{alg}", alg)


def test_the_seed_form_without_any_kid(js, keys) -> None:
    """ES256 inside dir + A256GCM, {alg: "dir", cty: "JWT", enc: "A256GCM"}, as documented."""
    answer = js(
        "jose_sign_encrypt",
        sign_jwk=keys["senders"]["ES256"]["keys"][0],
        encrypt_jwk=keys["receivers"]["dir"]["keys"][0],
        items=[{"claims": {"event": "seed"}, "issuer": "producer", "audience": "consumer"}],
        jws_kid=False,
        jwe_kid=False,
    )
    body = answer[0]["value"]
    decryptor = RequestDecryptor(
        keys["receivers"]["dir"],
        verify_with=verify_set(keys, "ES256"),
        issuer="producer",
        audience="consumer",
    )
    assert decryptor.decrypt(body)["event"] == "seed"


@pytest.mark.parametrize("receiver", RECEIVERS)
def test_tokens_made_here_verify_and_decrypt_in_jose(js, keys, receiver) -> None:
    requests, kid = [], f"rx-{receiver}"
    for alg in SIGNING_ALGORITHMS:
        encryptor = RequestEncryptor(
            public_receiver(keys, receiver),
            sign_with=keys["senders"][alg],
            issuer="kibana",
            audience="telemetry",
        )
        requests.append(
            {
                "op": "jose_decrypt_verify",
                "decrypt_jwk": keys["receivers"][receiver]["keys"][0],
                "verify_jwk": verify_set(keys, alg)["keys"][0],
                "tokens": [encryptor.encrypt(kid, {"n": alg})],
                "issuer": "kibana",
                "audience": "telemetry",
            }
        )
    for alg, answer in zip(SIGNING_ALGORITHMS, js("batch", requests=requests), strict=True):
        assert answer[0]["ok"], (alg, answer)
        value = answer[0]["value"]
        assert value["payload"]["n"] == alg and value["jws_header"]["alg"] == alg
        assert value["jwe_header"]["cty"] == "JWT"


@pytest.mark.parametrize("receiver", RECEIVERS)
@pytest.mark.parametrize("alg", SIGNING_ALGORITHMS)
def test_tokens_made_here_verify_and_decrypt_in_jwcrypto(keys, receiver, alg) -> None:
    encryptor = RequestEncryptor(
        public_receiver(keys, receiver), sign_with=keys["senders"][alg], issuer="kibana"
    )
    body = encryptor.encrypt(f"rx-{receiver}", {"n": alg})
    outer = cjwt.JWT(
        jwt=body,
        key=cjwk.JWK(**keys["receivers"][receiver]["keys"][0]),
        expected_type="JWE",
        algs=[receiver, "A256GCM"],
    )
    inner = cjwt.JWT(
        jwt=outer.claims,
        key=cjwk.JWK(**verify_set(keys, alg)["keys"][0]),
        expected_type="JWS",
        algs=[alg],
        check_claims={"iss": "kibana"},
    )
    assert json.loads(inner.claims)["n"] == alg


@pytest.mark.parametrize("receiver", RECEIVERS)
@pytest.mark.parametrize("alg", SIGNING_ALGORITHMS)
@pytest.mark.filterwarnings("ignore:EdDSA is deprecated")
def test_tokens_made_here_verify_and_decrypt_in_joserfc(keys, receiver, alg) -> None:
    encryptor = RequestEncryptor(public_receiver(keys, receiver), sign_with=keys["senders"][alg])
    body = encryptor.encrypt(f"rx-{receiver}", {"n": alg})
    decrypt_keys = RfcKeySet.import_key_set(keys["receivers"][receiver])
    registry = rfc_jwe.JWERegistry(algorithms=[receiver, "A256GCM"])
    outer = rfc_jwe.decrypt_compact(body, decrypt_keys, registry=registry)
    assert outer.protected["cty"] == "JWT"
    verify_keys = RfcKeySet.import_key_set(verify_set(keys, alg))
    token = rfc_jwt.decode(outer.plaintext, verify_keys, algorithms=[alg])
    rfc_jwt.JWTClaimsRegistry(exp={"essential": True}).validate(token.claims)
    assert token.claims["n"] == alg
