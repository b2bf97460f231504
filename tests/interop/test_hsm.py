"""Bodies made by the JavaScript original and by npm `jose` with the HSM key's public JWK
(read from SoftHSM) decrypt through the HSM: the private key never leaves the token."""

from __future__ import annotations

import json
from typing import Any

import pytest

from request_crypto import RequestDecryptor, RequestEncryptor
from request_crypto.keys.pkcs11 import PKCS11KeySource

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
