"""The PKCS#11 key source against a real SoftHSM2 token (the `softhsm` fixture)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from jwcrypto.jwk import JWK

from request_crypto import RequestDecryptor, RequestEncryptor
from request_crypto._b64 import b64url_decode
from request_crypto.errors import (
    DecryptionError,
    KeySourceError,
    NoKeyFoundError,
    UnsupportedAlgorithmError,
)
from request_crypto.keys.external import choose_kid
from request_crypto.keys.jwks import JWKManager
from request_crypto.keys.merged import MergedKeySource
from request_crypto.keys.pkcs11 import PinInURIWarning, PKCS11KeySource, import_key

PAYLOAD = {"event": "login", "n": [1, 2, 3]}


@pytest.fixture(scope="module")
def source(softhsm: Any) -> PKCS11KeySource:
    return PKCS11KeySource(softhsm.uri("recv-1"))


def _public_set(source: PKCS11KeySource) -> dict[str, Any]:
    return {"keys": [source.public_jwk(kid) for kid in source.kids()]}


@pytest.mark.parametrize("format", ["elastic", "jwe"])
def test_bodies_to_the_token_key_decrypt_through_the_token(
    source: PKCS11KeySource, format: str
) -> None:
    body = RequestEncryptor(_public_set(source), format=format).encrypt("recv-1", PAYLOAD)
    decryptor = RequestDecryptor(source)
    assert decryptor.decrypt(body) == PAYLOAD
    assert decryptor.decrypt_request(body).kid == "recv-1"
    assert decryptor.get_well_knowns() == _public_set(source)


def test_public_jwk_is_read_from_the_token(source: PKCS11KeySource) -> None:
    jwk = source.public_jwk("recv-1")
    assert jwk is not None
    assert {k: jwk[k] for k in ("kty", "kid", "use", "alg")} == {
        "kty": "RSA",
        "kid": "recv-1",
        "use": "enc",
        "alg": "RSA-OAEP",
    }
    assert source.key_metadata("recv-1") == {
        "kid": "recv-1",
        "kty": "RSA",
        "use": "enc",
        "alg": "RSA-OAEP",
        "length": 2048,
    }
    assert "d" not in jwk
    assert source.public_jwk("nope") is None


def test_kid_explicit_else_label_else_thumbprint(softhsm: Any, source: PKCS11KeySource) -> None:
    explicit = PKCS11KeySource(softhsm.uri("recv-1", kid="receiver-2026"))
    assert explicit.kids() == ["receiver-2026"]
    assert source.kids() == ["recv-1"]  # the object label
    jwk = source.public_jwk("recv-1")
    assert jwk is not None
    n, e = (int.from_bytes(b64url_decode(jwk[m], m), "big") for m in ("n", "e"))
    expected = JWK(kty="RSA", n=jwk["n"], e=jwk["e"]).thumbprint()
    assert choose_kid(None, None, n, e) == expected
    assert choose_kid(None, "label", n, e) == "label"


def test_a_token_uri_without_object_holds_every_rsa_key(softhsm: Any) -> None:
    imported = import_key(softhsm.uri("other-1", token="rc-whole"), _fresh_private("x"))
    assert imported["kid"] == "other-1"
    whole_token = PKCS11KeySource(softhsm.uri(None, token="rc-whole"))
    assert whole_token.kids() == ["other-1"]
    import_key(softhsm.uri("other-2", token="rc-whole"), _fresh_private("y"))
    assert sorted(PKCS11KeySource(softhsm.uri(None, token="rc-whole")).kids()) == [
        "other-1",
        "other-2",
    ]
    with pytest.raises(KeySourceError, match="kid= names one key"):
        PKCS11KeySource(softhsm.uri(None, token="rc-whole", kid="k"))


def _fresh_private(kid: str, alg: str = "RSA-OAEP") -> dict[str, Any]:
    manager = JWKManager()
    manager.add_key(kid, alg=alg)
    jwk = manager.get_private_jwk(kid)
    assert jwk is not None
    return jwk


def test_imported_key_decrypts_what_the_file_key_did(softhsm: Any) -> None:
    private = _fresh_private("moved-1")
    body = RequestEncryptor({"keys": [private]}, format="jwe").encrypt("moved-1", PAYLOAD)
    public = import_key(softhsm.uri(None), private)
    assert public["kid"] == "moved-1"
    assert public["n"] == private["n"]
    assert RequestDecryptor(PKCS11KeySource(softhsm.uri("moved-1"))).decrypt(body) == PAYLOAD


def test_oaep256_key_fails_once_naming_the_token_limit(softhsm: Any) -> None:
    import_key(softhsm.uri("sha256-key"), _fresh_private("sha256-key", "RSA-OAEP-256"))
    with pytest.raises(KeySourceError) as caught:
        PKCS11KeySource(softhsm.uri("sha256-key", alg="RSA-OAEP-256"))
    message = str(caught.value)
    assert "cannot do RSA-OAEP-256" in message
    assert "'rc-test'" in message and "SoftHSM" in message
    assert type(caught.value) is KeySourceError  # not a body error, not "retry later"


def test_a_body_not_for_the_key_is_the_one_decryption_error(source: PKCS11KeySource) -> None:
    other = _fresh_private("recv-1")
    body = RequestEncryptor({"keys": [other]}, format="jwe").encrypt("recv-1", PAYLOAD)
    with pytest.raises(DecryptionError) as caught:
        RequestDecryptor(source).decrypt(body)
    assert caught.value.__context__ is None
    with pytest.raises(DecryptionError):
        source.unwrap("recv-1", "RSA-OAEP", b"\x00" * 17)  # not one modulus long
    with pytest.raises(UnsupportedAlgorithmError):
        source.unwrap("recv-1", "RSA-OAEP-256", b"\x00" * 256)
    with pytest.raises(NoKeyFoundError):
        source.unwrap("absent", "RSA-OAEP", b"\x00" * 256)


def test_pin_rules(softhsm: Any, tmp_path: Any) -> None:
    with pytest.warns(PinInURIWarning, match="pin-source"):
        PKCS11KeySource(softhsm.uri("recv-1", pin_source="", pin_value="1234"))
    empty = tmp_path / "empty"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(KeySourceError, match="is empty"):
        PKCS11KeySource(softhsm.uri("recv-1", pin_source=f"file:{empty}"))
    with pytest.raises(KeySourceError, match="cannot read the PIN file"):
        PKCS11KeySource(softhsm.uri("recv-1", pin_source=f"file:{tmp_path / 'absent'}"))


def test_wrong_pin_is_one_clear_error(softhsm: Any, tmp_path: Any) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("9999\n", encoding="utf-8")
    # A token nothing in this process has logged in to yet.
    with pytest.raises(KeySourceError, match="refused the PIN"):
        PKCS11KeySource(softhsm.uri(None, token="rc-spare", pin_source=f"file:{wrong}"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda u: u.replace("token=rc-test", "slot-id=1"), "never by slot"),
        (lambda u: u.split("?")[0] + "?pin-value=1", "module-path"),
        (lambda u: u.replace("token=rc-test;", ""), "token=LABEL"),
        (lambda u: u.replace("recv-1", "absent"), "no RSA private key"),
        (lambda u: u.replace("token=rc-test", "token=nosuch"), "no token"),
        (lambda u: u + "&alg=A128KW", "alg 'A128KW' refused"),
    ],
)
def test_bad_uris_are_clear_errors(softhsm: Any, change: Any, message: str) -> None:
    with pytest.raises(KeySourceError, match=message):
        PKCS11KeySource(change(softhsm.uri("recv-1")))


def test_pin_is_never_in_the_source_name(softhsm: Any) -> None:
    with pytest.warns(PinInURIWarning):
        source = PKCS11KeySource(softhsm.uri("recv-1", pin_source="", pin_value="1234"))
    assert "1234" not in source.name and "1234" not in repr(source)


def test_many_threads_on_two_tokens_of_one_module_do_not_crash(
    softhsm: Any, source: PKCS11KeySource
) -> None:
    """python-pkcs11 initialises the module without OS locking and calls it without the GIL:
    two sessions of one module at once crash SoftHSM unless the module is initialised again
    with OS locking (or, where it refuses, every call holds the module's lock)."""
    second_uri = softhsm.uri("conc-1", token="rc-other")
    import_key(second_uri, _fresh_private("conc-1"))
    second = PKCS11KeySource(second_uri)
    merged = MergedKeySource([source, second])
    bodies = [
        RequestEncryptor(_public_set(src), format="jwe").encrypt(kid, {"i": i})
        for i in range(200)
        for src, kid in [((source, second)[i % 2], ("recv-1", "conc-1")[i % 2])]
    ]
    decryptor = RequestDecryptor(merged)
    results: dict[int, Any] = {}

    def work(start: int) -> None:
        for i in range(start, len(bodies), 16):
            results[i] = decryptor.decrypt(bodies[i])
            (source, second)[i % 2].health()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {i: {"i": i} for i in range(200)}
    assert decryptor.decrypt_many(bodies, workers=8) == [{"i": i} for i in range(200)]
