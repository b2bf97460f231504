"""The vectors the real npm packages made (fixtures/, copied from the shared vectors).

@elastic/request-crypto 2.0.3 bodies with their payloads and metadata, a body to a key
outside the set, and @elastic/node-crypto 1.2.3 outputs with and without AAD.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from request_crypto import PassphraseCipher, RequestDecryptor, pack_body, unpack_body
from request_crypto.errors import DecryptionError, NoKeyFoundError
from tests.conftest import load_fixture

BODIES = load_fixture("bodies.json")["bodies"]
NODE_CRYPTO = load_fixture("node_crypto.json")["vectors"]
BODY_IDS = [f"{v['name']}-{v['kid']}" for v in BODIES]


def test_the_vectors_cover_what_the_issue_asks() -> None:
    assert {v["kid"] for v in BODIES} == {"kibana_1", "kibana_2"}
    assert len(BODIES) >= 10
    aad = [v["aad"] is not None for v in NODE_CRYPTO if "passphrase_utf8" not in v]
    assert any(aad)
    assert not all(aad)
    assert any("passphrase_utf8" in v for v in NODE_CRYPTO)


@pytest.fixture(scope="module")
def decryptor(private_jwks: dict[str, Any]) -> RequestDecryptor:
    return RequestDecryptor(private_jwks)


@pytest.mark.parametrize("vector", BODIES, ids=BODY_IDS)
def test_javascript_body_decrypts_to_its_payload(
    decryptor: RequestDecryptor, vector: dict[str, Any]
) -> None:
    assert decryptor.decrypt(vector["body"]) == vector["payload"]


@pytest.mark.parametrize("vector", BODIES, ids=BODY_IDS)
def test_metadata_equals_the_javascript_metadata(
    decryptor: RequestDecryptor, vector: dict[str, Any]
) -> None:
    metadata = decryptor.get_jwk_metadata(vector["body"]).to_dict()
    assert metadata == vector["metadata"]
    assert json.dumps(metadata) == json.dumps(vector["metadata"])  # member order too


@pytest.mark.parametrize("vector", BODIES, ids=BODY_IDS)
def test_repacking_gives_the_javascript_bytes(vector: dict[str, Any]) -> None:
    assert pack_body(*unpack_body(vector["body"])) == vector["body"]


def test_bodies_decrypt_as_bytes_padded_and_in_a_batch(decryptor: RequestDecryptor) -> None:
    bodies = [v["body"] for v in BODIES]
    variants = [bodies[0].encode(), bodies[1] + "=" * (-len(bodies[1]) % 4)]
    assert decryptor.decrypt_many(bodies + variants, workers=2) == [
        v["payload"] for v in BODIES + BODIES[:2]
    ]


@pytest.mark.parametrize("operation", ["decrypt", "get_jwk_metadata"])
def test_the_foreign_body_has_no_key(
    decryptor: RequestDecryptor, js_bodies: dict[str, Any], operation: str
) -> None:
    assert js_bodies["foreign_kid"] not in decryptor.keys
    with pytest.raises(NoKeyFoundError) as caught:
        getattr(decryptor, operation)(js_bodies["foreign_body"])
    assert str(caught.value) == "no key found"


def test_public_set_is_the_public_half_of_the_private_set(
    decryptor: RequestDecryptor, public_jwks: dict[str, Any]
) -> None:
    assert json.dumps(decryptor.get_well_knowns()) == json.dumps(public_jwks)


def cipher_for(vector: dict[str, Any], node_crypto_vectors: dict[str, Any]) -> PassphraseCipher:
    if "passphrase_utf8" in vector:
        return PassphraseCipher(vector["passphrase_utf8"])
    return PassphraseCipher(bytes.fromhex(node_crypto_vectors["passphrase_hex"]))


@pytest.mark.parametrize("vector", NODE_CRYPTO, ids=[v["name"] for v in NODE_CRYPTO])
def test_node_crypto_vector_decrypts(
    node_crypto_vectors: dict[str, Any], vector: dict[str, Any]
) -> None:
    cipher = cipher_for(vector, node_crypto_vectors)
    assert cipher.decrypt(vector["encrypted"], vector["aad"]) == vector["payload"]


@pytest.mark.parametrize(
    "vector", [v for v in NODE_CRYPTO if v["aad"]], ids=[v["name"] for v in NODE_CRYPTO if v["aad"]]
)
def test_node_crypto_vector_needs_its_aad(
    node_crypto_vectors: dict[str, Any], vector: dict[str, Any]
) -> None:
    cipher = cipher_for(vector, node_crypto_vectors)
    for wrong in (None, vector["aad"] + "x"):
        with pytest.raises(DecryptionError):
            cipher.decrypt(vector["encrypted"], wrong)
