"""Live interoperability with the real npm packages (interop/package-lock.json) and JOSE libraries.

Both directions, both formats: `elastic` bodies with @elastic/request-crypto 2.0.3, node-crypto
outputs with @elastic/node-crypto 1.2.3, `jwe` bodies with jose (npm), jwcrypto and joserfc,
and key sets made on either side. Each harness call starts node once, so every test batches
its work into one call.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwcrypto.jwe
import jwcrypto.jwk
import pytest
from joserfc import jwe as joserfc_jwe
from joserfc.jwk import RSAKey

from request_crypto import (
    Format,
    JWKManager,
    PassphraseCipher,
    RequestDecryptor,
    RequestEncryptor,
    pack_body,
)
from tests.conftest import PYTHON_KIDS

pytestmark = pytest.mark.interop

PAYLOADS: list[Any] = [
    {"cluster_uuid": "abc", "stack_stats": {"kibana": {"count": 3, "versions": ["8.12.0"]}}},
    [1, 2, 3, {"a": None, "b": True, "c": False}],
    "just a string",
    42,
    -0.5,
    None,
    {},
    {"text": "héllo wörld — 日本語 — emoji 🚀", "rtl": "שלום", "lone": "\ud800"},
    {"rows": [{"id": i, "name": f"row-{i}"} for i in range(300)]},
]
ELASTIC_PROTECTED = ["zip", "enc", "alg", "kid"]
ENCS = ["A256GCM", "A128CBC-HS256", "A128GCM", "A256CBC-HS512"]
JWE_KIDS = ["kibana_1", *PYTHON_KIDS.values()]
AAD = "kibana_8.12.0"


@dataclass(frozen=True)
class KeySet:
    private: dict[str, Any]
    public: dict[str, Any]
    decryptor: RequestDecryptor

    @property
    def kids(self) -> list[str]:
        return [key["kid"] for key in self.public["keys"]]

    def alg(self, kid: str) -> str:
        return next(str(k["alg"]) for k in self.public["keys"] if k["kid"] == kid)


@pytest.fixture(scope="module")
def js_made_live(js: Any) -> dict[str, Any]:
    """A key set the JavaScript JWKManager makes now: {"private": ..., "public": ...}."""
    made: dict[str, Any] = js("generate", kids=["js-live-1", "js-live-2"])
    return made


@pytest.fixture(scope="module", params=["js-vectors", "js-live", "python"])
def key_set(
    request: pytest.FixtureRequest,
    private_jwks: dict[str, Any],
    public_jwks: dict[str, Any],
    python_private_jwks: dict[str, Any],
) -> KeySet:
    """A private set and its public half, made by JavaScript (recorded or now) or here."""
    if request.param == "js-vectors":
        private, public = private_jwks, public_jwks
    elif request.param == "js-live":
        made = request.getfixturevalue("js_made_live")
        private, public = made["private"], made["public"]
    else:
        private = python_private_jwks
        public = JWKManager(python_private_jwks).get_public_jwks()
    return KeySet(private, public, RequestDecryptor(private))


def values(answers: list[dict[str, Any]]) -> list[Any]:
    """The values of a harness `settle` answer, failing on the first JavaScript error."""
    errors = [a["error"] for a in answers if not a["ok"]]
    assert errors == []
    return [a["value"] for a in answers]


# --- elastic format, @elastic/request-crypto ------------------------------------------------


def test_python_elastic_bodies_decrypt_in_javascript(js: Any, key_set: KeySet) -> None:
    cases = [(kid, payload) for kid in key_set.kids for payload in PAYLOADS]
    bodies = RequestEncryptor(key_set.public).encrypt_many(cases)
    answers = values(js("decrypt", jwks=key_set.private, bodies=bodies))
    assert [a["payload"] for a in answers] == [payload for _, payload in cases]
    for (kid, _), body, answer in zip(cases, bodies, answers, strict=True):
        metadata = answer["metadata"]
        assert metadata["protected"] == ELASTIC_PROTECTED
        assert metadata["key"]["kid"] == kid
        assert metadata == key_set.decryptor.get_jwk_metadata(body).to_dict()


def test_live_javascript_elastic_bodies_decrypt_in_python(js: Any, key_set: KeySet) -> None:
    cases = [[kid, payload] for kid in key_set.kids for payload in PAYLOADS]
    bodies = values(js("encrypt", jwks=key_set.public, items=cases))
    assert key_set.decryptor.decrypt_many(bodies) == [payload for _, payload in cases]
    for (kid, _), body in zip(cases, bodies, strict=True):
        alg = key_set.alg(kid)
        assert key_set.decryptor.get_jwk_metadata(body).to_dict() == {
            "key": {"kid": kid, "kty": "RSA", "use": "enc", "alg": alg, "length": 2048},
            "protected": ELASTIC_PROTECTED,
            "header": {"zip": "DEF", "enc": "A128CBC-HS256", "alg": alg, "kid": kid},
        }


PACK_CASES = [["eyJ6aXAi.a.b.c.d", "QUJD+/=="], ["é日🚀", '"\\'], ["\ud800", "\x1f"], ["", ""]]


def test_pack_body_and_unpack_body_match_javascript(js: Any) -> None:
    bodies = [pack_body(key, payload) for key, payload in PACK_CASES]
    assert bodies == js("pack_body", items=PACK_CASES)
    assert values(js("unpack_body", bodies=bodies)) == [
        {"encryptedAESKey": key, "encryptedPayload": payload} for key, payload in PACK_CASES
    ]


def test_both_sides_publish_the_same_public_set(js: Any, key_set: KeySet) -> None:
    published = js("well_knowns", jwks=key_set.private)
    assert json.dumps(published) == json.dumps(key_set.decryptor.get_well_knowns())
    assert json.dumps(published) == json.dumps(key_set.public)


def test_javascript_refuses_a_body_to_a_key_it_does_not_hold(
    js: Any, private_jwks: dict[str, Any], python_private_jwks: dict[str, Any]
) -> None:
    # The parity of NoKeyFoundError's text, checked against the live original.
    body = RequestEncryptor(python_private_jwks).encrypt(PYTHON_KIDS["RSA-OAEP"], 1)
    assert js("decrypt", jwks=private_jwks, bodies=[body]) == [
        {"ok": False, "error": "no key found"}
    ]
    assert js("encrypt", jwks=private_jwks, items=[["kibana_3", 1]]) == [
        {"ok": False, "error": "Missing kid (kibana_3)."}
    ]


# --- node-crypto --------------------------------------------------------------------------

PASSPHRASES: dict[str, dict[str, str]] = {
    "bytes": {"passphrase_hex": bytes(range(32)).hex()},
    "str": {"passphrase_utf8": "a hümän passphrase"},
}
NODE_CRYPTO_CASES = [(payload, aad) for payload in PAYLOADS for aad in (None, AAD)]


def cipher_for(passphrase: str) -> PassphraseCipher:
    given = PASSPHRASES[passphrase]
    if "passphrase_utf8" in given:
        return PassphraseCipher(given["passphrase_utf8"])
    return PassphraseCipher(bytes.fromhex(given["passphrase_hex"]))


@pytest.mark.parametrize("passphrase", PASSPHRASES)
def test_python_node_crypto_decrypts_in_javascript(js: Any, passphrase: str) -> None:
    cipher = cipher_for(passphrase)
    items = [{"encrypted": cipher.encrypt(p, aad), "aad": aad} for p, aad in NODE_CRYPTO_CASES]
    wrong_aad = {"encrypted": cipher.encrypt("x", AAD), "aad": AAD + "x"}
    answers = js("nodecrypto_decrypt", **PASSPHRASES[passphrase], items=[*items, wrong_aad])
    assert values(answers[:-1]) == [payload for payload, _ in NODE_CRYPTO_CASES]
    assert answers[-1]["ok"] is False  # node-crypto does check the AAD


@pytest.mark.parametrize("passphrase", PASSPHRASES)
def test_javascript_node_crypto_decrypts_in_python(js: Any, passphrase: str) -> None:
    items = [{"payload": payload, "aad": aad} for payload, aad in NODE_CRYPTO_CASES]
    outputs = values(js("nodecrypto_encrypt", **PASSPHRASES[passphrase], items=items))
    cipher = cipher_for(passphrase)
    assert [
        cipher.decrypt(out, aad) for out, (_, aad) in zip(outputs, NODE_CRYPTO_CASES, strict=True)
    ] == [payload for payload, _ in NODE_CRYPTO_CASES]


STRINGIFY_VALUES: list[Any] = [
    {"b": 1, "a": [1, 2, {"c": None}]},
    [True, False, 0, -5, 1.5, 0.1, -2.5e-3, 1e21, 2**53],
    "héllo — 日本語 🚀",
    "\ud800",
    "a\udc00b\udbff",
    "\ud83d\ude80",
    {"\udfff": ["\ud800\ud800", "ok"]},
    '\x00\x08\t\n\x0c\r\x1f\x7f\u2028\u2029"\\/',
    "\\ud800 is text",
]


def test_payload_text_is_what_json_stringify_writes(js: Any) -> None:
    cipher = PassphraseCipher(b"k" * 32)
    ours = [
        cipher.decrypt_bytes(base64.b64decode(cipher.encrypt(v))).decode("utf-8")
        for v in STRINGIFY_VALUES
    ]
    assert ours == js("stringify", values=STRINGIFY_VALUES)


# --- jwe format: jose (npm), jwcrypto, joserfc ---------------------------------------------

JOSERFC_REGISTRY = joserfc_jwe.JWERegistry(algorithms=["RSA-OAEP", "RSA-OAEP-256", *ENCS])


Opened = list[tuple[bytes, dict[str, Any]]]


def jwcrypto_decrypt(jwk: dict[str, Any], tokens: list[str]) -> Opened:
    key = jwcrypto.jwk.JWK(**jwk)
    opened = []
    for token in tokens:
        message = jwcrypto.jwe.JWE()
        message.deserialize(token, key=key)
        opened.append((message.payload, message.jose_header))
    return opened


def joserfc_decrypt(jwk: dict[str, Any], tokens: list[str]) -> Opened:
    key = RSAKey.import_key(jwk)
    results = [joserfc_jwe.decrypt_compact(t, key, registry=JOSERFC_REGISTRY) for t in tokens]
    return [(result.plaintext, dict(result.protected)) for result in results]


def jwcrypto_encrypt(
    jwk: dict[str, Any], header: dict[str, str], plaintexts: list[bytes]
) -> list[str]:
    key = jwcrypto.jwk.JWK(**jwk)
    tokens = []
    for plaintext in plaintexts:
        message = jwcrypto.jwe.JWE(plaintext, protected=json.dumps(header))
        message.add_recipient(key)
        tokens.append(str(message.serialize(compact=True)))
    return tokens


def joserfc_encrypt(
    jwk: dict[str, Any], header: dict[str, str], plaintexts: list[bytes]
) -> list[str]:
    key = RSAKey.import_key(jwk)
    return [
        joserfc_jwe.encrypt_compact(header, plaintext, key, registry=JOSERFC_REGISTRY)
        for plaintext in plaintexts
    ]


DECRYPTERS: dict[str, Callable[[dict[str, Any], list[str]], Opened]] = {
    "jwcrypto": jwcrypto_decrypt,
    "joserfc": joserfc_decrypt,
}
ENCRYPTERS: dict[str, Callable[[dict[str, Any], dict[str, str], list[bytes]], list[str]]] = {
    "jwcrypto": jwcrypto_encrypt,
    "joserfc": joserfc_encrypt,
}


@pytest.fixture(scope="module")
def jwe_keys(private_jwks: dict[str, Any], python_private_jwks: dict[str, Any]) -> JWKManager:
    """A JavaScript-made RSA-OAEP key and this library's RSA-OAEP and RSA-OAEP-256 keys."""
    return JWKManager({"keys": private_jwks["keys"][:1] + python_private_jwks["keys"]})


@pytest.fixture(scope="module")
def jwe_encryptor(jwe_keys: JWKManager) -> RequestEncryptor:
    return RequestEncryptor(jwe_keys.get_public_jwks(), format=Format.JWE)


@pytest.fixture(scope="module")
def jwe_decryptor(jwe_keys: JWKManager) -> RequestDecryptor:
    return RequestDecryptor(jwe_keys)


def private_jwk(keys: JWKManager, kid: str) -> dict[str, Any]:
    jwk = keys.get_private_jwk(kid)
    assert jwk is not None
    return jwk


def key_alg(keys: JWKManager, kid: str) -> str:
    return private_jwk(keys, kid)["alg"]  # type: ignore[no-any-return]


def public_jwk(keys: JWKManager, kid: str) -> dict[str, Any]:
    jwk = keys.get_public_jwk(kid)
    assert jwk is not None
    return jwk


def test_python_jwe_bodies_decrypt_with_jose(
    js: Any, jwe_keys: JWKManager, jwe_encryptor: RequestEncryptor
) -> None:
    requests = [
        {
            "op": "jose_decrypt",
            "jwk": private_jwk(jwe_keys, kid),
            "tokens": [jwe_encryptor.encrypt(kid, payload) for payload in PAYLOADS],
        }
        for kid in JWE_KIDS
    ]
    for kid, answers in zip(JWE_KIDS, js("batch", requests=requests), strict=True):
        opened = values(answers)
        assert [json.loads(o["plaintext"]) for o in opened] == PAYLOADS
        header = {"alg": key_alg(jwe_keys, kid), "enc": "A256GCM", "kid": kid}
        assert all(o["header"] == header for o in opened)


@pytest.mark.parametrize("kid", JWE_KIDS)
@pytest.mark.parametrize("library", DECRYPTERS)
def test_python_jwe_bodies_decrypt_with(
    jwe_keys: JWKManager, jwe_encryptor: RequestEncryptor, library: str, kid: str
) -> None:
    header = {"alg": key_alg(jwe_keys, kid), "enc": "A256GCM", "kid": kid}
    tokens = [jwe_encryptor.encrypt(kid, payload) for payload in PAYLOADS]
    opened = DECRYPTERS[library](private_jwk(jwe_keys, kid), tokens)
    assert [json.loads(plaintext) for plaintext, _ in opened] == PAYLOADS
    assert all(h == header for _, h in opened)


def test_jose_made_jwes_decrypt_here(
    js: Any, jwe_keys: JWKManager, jwe_decryptor: RequestDecryptor
) -> None:
    cases = [(kid, enc) for kid in JWE_KIDS for enc in ENCS]
    requests = [
        {
            "op": "jose_encrypt",
            "jwk": public_jwk(jwe_keys, kid),
            "enc": enc,
            "plaintexts": [json.dumps(payload) for payload in PAYLOADS],
        }
        for kid, enc in cases
    ]
    for (kid, enc), answers in zip(cases, js("batch", requests=requests), strict=True):
        tokens = values(answers)
        assert jwe_decryptor.decrypt_many(tokens) == PAYLOADS
        assert jwe_decryptor.get_jwk_metadata(tokens[0]).header == {
            "alg": key_alg(jwe_keys, kid),
            "enc": enc,
            "kid": kid,
        }


@pytest.mark.parametrize("enc", ENCS)
@pytest.mark.parametrize("kid", JWE_KIDS)
@pytest.mark.parametrize("library", ENCRYPTERS)
def test_jwes_made_by_python_jose_libraries_decrypt_here(
    jwe_keys: JWKManager, jwe_decryptor: RequestDecryptor, library: str, kid: str, enc: str
) -> None:
    header = {"alg": key_alg(jwe_keys, kid), "enc": enc, "kid": kid}
    plaintexts = [json.dumps(payload).encode() for payload in PAYLOADS]
    tokens = ENCRYPTERS[library](public_jwk(jwe_keys, kid), header, plaintexts)
    assert jwe_decryptor.decrypt_many(tokens) == PAYLOADS
    assert jwe_decryptor.get_jwk_metadata(tokens[0]).header == header
