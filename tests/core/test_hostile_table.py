"""Issue 5: each hand-made hostile body gets exactly its error class, and a message that names
the problem without quoting the body; the crafted bodies are otherwise valid.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest

from request_crypto import (
    JWKManager,
    RequestDecryptor,
    unpack_body,
)
from request_crypto import _jose as jwe_module
from request_crypto._jose import CONTENT_ENCRYPTION_ALGORITHMS
from request_crypto.errors import (
    DecryptionError,
    InvalidJWKSError,
    JSONBudgetError,
    MalformedBodyError,
    MissingKidInBodyError,
    NoKeyFoundError,
    PayloadTooLargeError,
    RequestCryptoError,
    UnsupportedAlgorithmError,
)
from tests.core.hostile import (
    CASES,
    PAYLOAD,
    PLAIN,
    REFUSED_ALGS,
    Case,
    Kit,
    assert_quotes_nothing_of,
    craft,
    decryptor_for,
    deflate,
    elastic,
    elastic_with_length_mod,
    header,
    token,
    url_alphabet_body,
)
from tests.core.outcomes import FAST_PATHS, compare_paths


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_body_gets_exactly_its_error(kit: Kit, bodies: dict[str, Any], case: Case) -> None:
    body = bodies[case.id]
    decryptor = decryptor_for(kit, case)
    with pytest.raises(RequestCryptoError) as caught:
        decryptor.decrypt(body)
    assert type(caught.value) is case.error, f"{case.id}: {caught.value!r}"
    assert_quotes_nothing_of(body, str(caught.value))
    if case.error is DecryptionError:
        # One error, one message, and nothing chained that would tell which step failed.
        assert str(caught.value) == DecryptionError.MESSAGE
        assert caught.value.__cause__ is None
        assert caught.value.__context__ is None

    # get_jwk_metadata decrypts the whole body too (the original opens only the wrapped key).
    with pytest.raises(RequestCryptoError) as again:
        decryptor.get_jwk_metadata(body)
    assert type(again.value) is case.error

    if case.token_level:
        with pytest.raises(RequestCryptoError) as direct:
            kit.keys.decrypt(body)
        assert type(direct.value) is (case.token_error or case.error)


@pytest.mark.parametrize("path", FAST_PATHS)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_cases_get_the_same_error_with_each_fast_path_off(
    case: Case, path: str, kit: Kit, bodies: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each format's fast path refuses every hostile body as the general path does."""
    decryptor = RequestDecryptor(kit.keys, **case.limits)
    fast, general = compare_paths(decryptor, bodies[case.id], monkeypatch, path)
    assert fast == general
    assert fast[0] == "error" and issubclass(fast[1][0], case.error)


MESSAGES = {
    "J-2-parts": "has 2 dot-separated parts",
    "J-6-parts": "has 6 dot-separated parts",
    "E-missing-payload": "'encryptedPayload'",
    "E-key-not-string": "'encryptedAESKey'",
    "E-not-base64": "base64",
    "E-non-ascii-str": "non-ASCII",
    "E-payload-base64url": "standard base64",
    "E-payload-too-short": "shorter than",
    "J-header-not-json": "protected header is not UTF-8 JSON",
    "J-header-missing-alg": "'alg'",
    "J-alg-list": "'alg'",
    "J-kid-int": "'kid'",
    "J-duplicate-alg": "repeats",
    "J-alg-none": "RSA-OAEP or RSA-OAEP-256",
    "J-enc-'A192GCM'": "A256GCM",
    "J-crit": "crit",
    "J-alg-differs-256-to-oaep-key": "declared for RSA-OAEP",
    "J-huge-header": "protected header is",
    "J-payload-deep": "nested too deeply",
    "J-payload-not-json": "not valid UTF-8 JSON",
    "E-body-over-limit": "over the limit of 900 bytes",
    "E-key-over-wrapped-limit": "the wrapped key is",
    "J-zip-DEF-valid": "carries no compression",
    "J-zip-inflates-over-limit": "'zip' is refused",
    "J-json-values-over-limit": "holds 101 JSON values",
    "E-json-values-over-limit": "raise max_json_values",
    "J-json-deeper-than-limit": "more than 8 levels",
    "type-None": "str or bytes, not NoneType",
}


@pytest.mark.parametrize(("case_id", "words"), MESSAGES.items())
def test_messages_name_what_is_wrong(
    kit: Kit, bodies: dict[str, Any], case_id: str, words: str
) -> None:
    case = next(c for c in CASES if c.id == case_id)
    with pytest.raises(case.error) as caught:
        decryptor_for(kit, case).decrypt(bodies[case_id])
    assert words in str(caught.value)


@pytest.mark.parametrize("alg", [*REFUSED_ALGS, None, 1])
def test_a_key_declaring_a_refused_alg_is_refused(private_jwks: dict[str, Any], alg: Any) -> None:
    """The allow-list holds for keys too: no key can be declared for RSA1_5 & co, so the
    header-must-match-the-key rule can never let one through."""
    with pytest.raises(InvalidJWKSError):
        JWKManager({"keys": [{**private_jwks["keys"][0], "alg": alg}]})
    with pytest.raises(RequestCryptoError):
        JWKManager().add_key("k", alg=alg)


def test_table_covers_every_error_class() -> None:
    classes = {c.error for c in CASES}
    assert classes == {
        MalformedBodyError,
        UnsupportedAlgorithmError,
        NoKeyFoundError,
        MissingKidInBodyError,
        DecryptionError,
        PayloadTooLargeError,
        JSONBudgetError,
    }


def test_unpack_body_only_raises_library_errors(bodies: dict[str, Any]) -> None:
    for body in bodies.values():
        with contextlib.suppress(RequestCryptoError):
            unpack_body(body)


# -- the crafted bodies are otherwise valid: each case fails for its one reason -----------


def test_baselines_decrypt(kit: Kit) -> None:
    d = kit.decryptor
    for enc in CONTENT_ENCRYPTION_ALGORITHMS:
        assert d.decrypt(token(kit, header(enc=enc))) == PAYLOAD
    assert kit.keys.decrypt(token(kit, header(zip="DEF"), deflate(PLAIN))).payload == PLAIN
    assert (
        d.decrypt(
            token(kit, header("oaep256", alg="RSA-OAEP-256"), to="oaep256", alg="RSA-OAEP-256")
        )
        == PAYLOAD
    )
    assert d.decrypt(token(kit, header(x=[[[[[[["seven deep"]]]]]]]))) == PAYLOAD
    assert d.decrypt(token(kit, header(x="a" * 3000))) == PAYLOAD
    assert d.decrypt(elastic(kit)) == PAYLOAD
    assert d.decrypt(url_alphabet_body(kit)) == PAYLOAD
    assert d.get_jwk_metadata(elastic(kit)).key["kid"] == "kibana_1"
    assert d.decrypt(kit.elastic.encrypt("oaep256", PAYLOAD)) == PAYLOAD
    # Correct padding is accepted (the JavaScript side omits it; other encoders may not).
    body = elastic_with_length_mod(kit, 2)
    assert d.decrypt(body + "==") == d.decrypt(body) != PAYLOAD
    # (Not on the protected header: its text as sent is the AAD, so padding it is tampering.)
    parts = craft(kit, header())
    padded = [parts[0], *(p + "=" * (-len(p) % 4) for p in parts[1:])]
    assert padded != parts
    assert d.decrypt(".".join(padded)) == PAYLOAD
    assert len(parts[0]) % 4
    with pytest.raises(DecryptionError):
        d.decrypt(".".join([parts[0] + "=" * (-len(parts[0]) % 4), *parts[1:]]))
    assert d.decrypt(token(kit, header()).encode()) == PAYLOAD
    assert d.decrypt(bytearray(elastic(kit).encode())) == PAYLOAD
    # The limits are inclusive.
    exact = RequestDecryptor(kit.keys, max_inflated_size=1002)
    assert exact.decrypt(token(kit, header(), b"[" + b" " * 1000 + b"]")) == []
    for enc in ("A128CBC-HS256", "A256GCM"):  # the early ciphertext check is inclusive too
        assert exact.decrypt(token(kit, header(enc=enc), b"[" + b" " * 1000 + b"]")) == []
    assert exact.decrypt(elastic(kit, b"[" + b" " * 1000 + b"]")) == []
    budget = RequestDecryptor(kit.keys, max_json_values=100, max_json_depth=8)
    assert budget.decrypt(token(kit, header(), b"[" + b"0," * 98 + b"0]")) == [0] * 99
    assert budget.decrypt(elastic(kit, b"[" * 8 + b"]" * 8)) == [[[[[[[[]]]]]]]]
    small = elastic(kit)
    assert RequestDecryptor(kit.keys, max_body_size=len(small)).decrypt(small) == PAYLOAD


def test_a_bad_wrapped_key_still_runs_content_decryption(
    kit: Kit, bodies: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """RFC 7516 §11.5: an RSA failure goes on with a random CEK, so it takes the path (and
    about the time) of a tag failure instead of answering early."""
    keys_seen: list[bytes] = []
    aesgcm = jwe_module.AESGCM  # every case below is GCM: `decrypt_compact` opens it itself

    def counting(cek: bytes) -> Any:
        keys_seen.append(cek)
        return aesgcm(cek)

    monkeypatch.setattr(jwe_module, "AESGCM", counting)
    for case in (
        "J-encrypted-key-garbage",
        "J-encrypted-key-short",
        "J-cek-short",
        "J-tag-flip-A256GCM",
    ):
        keys_seen.clear()
        with pytest.raises(DecryptionError):
            kit.decryptor.decrypt(bodies[case])
        assert [len(k) for k in keys_seen] == [32], case


def test_nesting_within_bounds_decrypts(kit: Kit) -> None:
    value: Any = []
    for _ in range(99):
        value = [value]
    assert kit.decryptor.decrypt(token(kit, header(), b"[" * 100 + b"]" * 100)) == value


def test_javascript_vectors_still_decrypt(kit: Kit) -> None:
    for vector in kit.vectors["bodies"]:
        assert kit.decryptor.decrypt(vector["body"]) == vector["payload"]
