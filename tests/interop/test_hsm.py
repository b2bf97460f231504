"""Bodies made by the JavaScript original and by npm `jose` with the HSM key's public JWK
(read from SoftHSM) decrypt through the HSM: the private key never leaves the token."""

from __future__ import annotations

import json
from typing import Any

import pytest

from request_crypto import JWKManager, RequestDecryptor, RequestEncryptor
from request_crypto.keys.pkcs11 import PKCS11KeySource
from request_crypto.keys.signing import generate_signing_jwk, public_key_set

pytestmark = pytest.mark.interop

PAYLOADS: list[Any] = [{"cluster_uuid": "abc", "n": [1, 2, 3]}, "text", 42]


def test_js_original_jose_and_this_library_bodies_open_in_the_hsm(softhsm: Any, js: Any) -> None:
    source = PKCS11KeySource(softhsm.uri("recv-1"))
    public = RequestDecryptor(source).get_well_knowns()
    jwk = public["keys"][0]
    elastic, jose = js(
        "batch",
        requests=[
            {"op": "encrypt", "jwks": public, "items": [["recv-1", p] for p in PAYLOADS]},
            {
                "op": "jose_encrypt",
                "jwk": jwk,
                "enc": "A256GCM",
                "plaintexts": [json.dumps(p) for p in PAYLOADS],
            },
        ],
    )
    ours = [RequestEncryptor(public, format="jwe").encrypt("recv-1", p) for p in PAYLOADS]
    decryptor = RequestDecryptor(source)
    for made in (elastic, jose):
        assert all(item["ok"] for item in made), made
        assert [decryptor.decrypt(item["value"]) for item in made] == PAYLOADS
    assert [decryptor.decrypt(body) for body in ours] == PAYLOADS


TOKEN_SIGNING = ["ES256", "RS256", "PS256"]


@pytest.fixture(scope="module")
def token_signers(softhsm: Any) -> dict[str, Any]:
    """One signing key pair per alg, generated in the token (not extractable)."""
    from request_crypto.keys.pkcs11_signing import PKCS11SigningKey, generate_signing_key

    signers = {}
    for alg in TOKEN_SIGNING:
        label = f"interop-{alg.lower()}"
        generate_signing_key(softhsm.uri(label, token="rc-sign"), alg)
        signers[alg] = PKCS11SigningKey(softhsm.uri(label, token="rc-sign", alg=alg))
    return signers


@pytest.fixture(scope="module")
def rsa_receiver() -> dict[str, Any]:
    manager = JWKManager()
    manager.add_key("rx-hsm")
    return {"private": manager.get_private_jwks(), "public": manager.get_public_jwks()}


def test_tokens_signed_in_the_hsm_verify_in_jose(
    js: Any, token_signers: dict[str, Any], rsa_receiver: dict[str, Any]
) -> None:
    requests = []
    for alg in TOKEN_SIGNING:
        sender = RequestEncryptor(
            rsa_receiver["public"], sign_with=token_signers[alg], issuer="kibana"
        )
        requests.append(
            {
                "op": "jose_decrypt_verify",
                "decrypt_jwk": rsa_receiver["private"]["keys"][0],
                "verify_jwk": token_signers[alg].public_jwk,
                "tokens": [sender.encrypt("rx-hsm", {"n": alg})],
                "issuer": "kibana",
            }
        )
    answers = js("batch", requests=requests)
    for alg, answer in zip(TOKEN_SIGNING, answers, strict=True):
        assert answer[0]["ok"], (alg, answer)
        assert answer[0]["value"]["payload"]["n"] == alg
        assert answer[0]["value"]["jws_header"] == {"alg": alg, "kid": f"interop-{alg.lower()}",
                                                    "typ": "JWT"}  # fmt: skip
    # The same token checked with another key of the alg: jose refuses it.
    other = generate_signing_jwk("interop-es256", "ES256")
    wrong = {**requests[0], "verify_jwk": public_key_set({"keys": [other]})["keys"][0]}
    (refused,) = js("jose_decrypt_verify", **{k: v for k, v in wrong.items() if k != "op"})
    assert not refused["ok"] and "signature" in refused["error"].lower()


@pytest.mark.parametrize("alg", TOKEN_SIGNING)
def test_tokens_signed_in_the_hsm_verify_in_joserfc(
    token_signers: dict[str, Any], rsa_receiver: dict[str, Any], alg: str
) -> None:
    from joserfc import jwe as rfc_jwe
    from joserfc import jwt as rfc_jwt
    from joserfc.errors import BadSignatureError
    from joserfc.jwk import KeySet as RfcKeySet

    sender = RequestEncryptor(rsa_receiver["public"], sign_with=token_signers[alg])
    body = sender.encrypt("rx-hsm", {"n": alg})
    registry = rfc_jwe.JWERegistry(algorithms=["RSA-OAEP", "A256GCM"])
    outer = rfc_jwe.decrypt_compact(
        body, RfcKeySet.import_key_set(rsa_receiver["private"]), registry=registry
    )
    public = RfcKeySet.import_key_set({"keys": [token_signers[alg].public_jwk]})
    assert rfc_jwt.decode(outer.plaintext, public, algorithms=[alg]).claims["n"] == alg
    other = public_key_set({"keys": [generate_signing_jwk(f"interop-{alg.lower()}", alg)]})
    with pytest.raises(BadSignatureError):
        rfc_jwt.decode(outer.plaintext, RfcKeySet.import_key_set(other), algorithms=[alg])
