"""The RFC 7638 thumbprint and generated RSA members, computed without jwcrypto, agree with it.

`kids.thumbprint` names keys (`keys list`, a token's key without a `kid=`), and new RSA keys are
written from `cryptography`'s numbers; jwcrypto is the independent reference for both.
"""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwcrypto.jwk import JWK

from request_crypto import JWKManager
from request_crypto.errors import InvalidJWKSError
from request_crypto.keys.external import thumbprint as rsa_thumbprint
from request_crypto.kids import thumbprint


def exported(private: Any) -> dict[str, Any]:
    return dict(JWK.from_pyca(private).export(as_dict=True))


KEYS = {
    "RSA-2048": lambda: exported(rsa.generate_private_key(65537, 2048)),
    "RSA e=3": lambda: exported(rsa.generate_private_key(3, 2048)),
    "EC P-256": lambda: exported(ec.generate_private_key(ec.SECP256R1())),
    "EC P-384": lambda: exported(ec.generate_private_key(ec.SECP384R1())),
    "OKP Ed25519": lambda: exported(ed25519.Ed25519PrivateKey.generate()),
    "oct": lambda: JWK.generate(kty="oct", size=256).export(as_dict=True),
}


@pytest.mark.parametrize("kind", KEYS)
def test_thumbprint_is_jwcrypto_s_for_every_key_type(kind: str) -> None:
    jwk = KEYS[kind]()
    expected = JWK(**jwk).thumbprint()
    assert thumbprint(jwk) == expected
    # Members outside RFC 7638's list (kid, alg, use, private parts) do not change it.
    assert thumbprint({**jwk, "kid": "k", "alg": "x", "use": "enc"}) == expected
    if jwk["kty"] != "oct":  # a secret has no public half
        assert thumbprint(JWK(**jwk).export_public(as_dict=True)) == expected


def test_an_external_rsa_key_s_kid_is_its_thumbprint() -> None:
    numbers = rsa.generate_private_key(65537, 2048).public_key().public_numbers()
    expected = JWK.from_pyca(rsa.RSAPublicNumbers(numbers.e, numbers.n).public_key()).thumbprint()
    assert rsa_thumbprint(numbers.n, numbers.e) == expected


@pytest.mark.parametrize(
    "jwk",
    [{}, {"kty": "RSA", "n": "AQAB"}, {"kty": "EC", "crv": "P-256", "x": "AA"}, {"kty": "X"},
     {"kty": "oct", "k": 5}],
)  # fmt: skip
def test_a_key_without_its_members_has_no_thumbprint(jwk: dict[str, Any]) -> None:
    with pytest.raises(InvalidJWKSError, match="thumbprint"):
        thumbprint(jwk)


def test_generated_rsa_members_are_the_key_s_numbers() -> None:
    keys = JWKManager()
    keys.add_key("k", size=2048)
    private = keys.get_private_jwks()["keys"][0]
    reference = JWK(**private)  # jwcrypto checks the members belong to one key
    for name in ("n", "e", "d", "p", "q", "dp", "dq", "qi"):
        assert private[name] == reference.export(as_dict=True)[name]
    assert private["e"] == "AQAB"
    assert keys.decrypt(keys.encrypt_jwe("k", b"x")).plaintext == b"x"
