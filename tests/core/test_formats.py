"""Formats behind one interface: kid-less standard JWEs, `.plaintext`, the registry, hints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jwcrypto.common import base64url_decode
from jwcrypto.jwe import JWE
from jwcrypto.jwk import JWK

from request_crypto import Format, JWKManager, RequestDecryptor, RequestEncryptor, detect_format
from request_crypto.errors import (
    DecryptionError,
    InvalidArgumentError,
    MissingKidInBodyError,
    NoKeyFoundError,
)
from request_crypto.formats import REGISTRY
from request_crypto.formats.elastic import unwrap_passphrase


@pytest.fixture(scope="module")
def keys() -> JWKManager:
    """Two RSA-OAEP keys, one RSA-OAEP-256 key, and the public half of another RSA-OAEP-256."""
    manager = JWKManager()
    manager.add_key("oaep-1")
    manager.add_key("oaep-2")
    manager.add_key("oaep256", alg="RSA-OAEP-256")
    other = JWKManager()
    other.add_key("public-only", alg="RSA-OAEP-256")
    manager.insert_key(other.get_public_jwk("public-only") or {})
    return manager


def _standard_jwe(public_jwk: dict[str, Any], header: dict[str, str], plaintext: bytes) -> str:
    """A compact JWE as another JOSE library writes it (RFC 7516 A.1 shape: no kid)."""
    message = JWE(plaintext, protected=json.dumps(header))
    message.add_recipient(JWK(**public_jwk))
    return str(message.serialize(compact=True))


def _only(keys: JWKManager, *kids: str) -> JWKManager:
    return JWKManager({"keys": [keys.get_private_jwk(kid) for kid in kids]})


def test_a_jwe_without_kid_opens_with_the_one_key_that_fits_its_alg(keys: JWKManager) -> None:
    header = {"alg": "RSA-OAEP", "enc": "A256GCM"}
    body = _standard_jwe(keys.get_public_jwk("oaep-1") or {}, header, b'{"a":1}')
    assert "kid" not in json.loads(base64url_decode(body.split(".")[0]))
    single = _only(keys, "oaep-1", "oaep256")  # oaep256 does not fit RSA-OAEP
    request = RequestDecryptor(single).decrypt_request(body)
    assert request.payload == {"a": 1}
    assert request.format is Format.JWE
    assert request.kid == "oaep-1"
    assert request.metadata.header == header
    assert single.decrypt(body).plaintext == b'{"a":1}'


def test_a_kidless_jwe_picks_the_key_by_alg_among_several(keys: JWKManager) -> None:
    header = {"alg": "RSA-OAEP-256", "enc": "A128CBC-HS256"}
    body = _standard_jwe(keys.get_public_jwk("oaep256") or {}, header, b"[true]")
    # Two RSA-OAEP keys and a public-only RSA-OAEP-256 key fit no better than none.
    assert RequestDecryptor(keys).decrypt(body) == [True]


def test_a_kidless_jwe_fails_saying_the_kid_is_missing_when_keys_are_ambiguous(
    keys: JWKManager,
) -> None:
    body = _standard_jwe(
        keys.get_public_jwk("oaep-2") or {}, {"alg": "RSA-OAEP", "enc": "A256GCM"}, b"1"
    )
    with pytest.raises(MissingKidInBodyError, match="names no kid and 2 keys") as caught:
        RequestDecryptor(keys).decrypt(body)
    assert isinstance(caught.value, NoKeyFoundError)
    assert "senders must set the kid" in str(caught.value)
    assert caught.value.kid is None


def test_a_kidless_jwe_fails_saying_the_kid_is_missing_when_no_key_fits(
    keys: JWKManager,
) -> None:
    # Only the public half of an RSA-OAEP-256 key is held: it cannot decrypt.
    header = {"alg": "RSA-OAEP-256", "enc": "A256GCM"}
    body = _standard_jwe(keys.get_public_jwk("public-only") or {}, header, b"1")
    with pytest.raises(MissingKidInBodyError, match="names no kid and no key"):
        _only(keys, "oaep-1").decrypt(body)
    with pytest.raises(MissingKidInBodyError, match="no key"):
        RequestDecryptor(JWKManager({"keys": [keys.get_public_jwk("public-only")]})).decrypt(body)


def test_a_kidless_jwe_for_another_key_is_the_one_decryption_error(keys: JWKManager) -> None:
    stranger = JWKManager()
    stranger.add_key("x")
    header = {"alg": "RSA-OAEP", "enc": "A256GCM"}
    body = _standard_jwe(stranger.get_public_jwk("x") or {}, header, b"1")
    with pytest.raises(DecryptionError) as caught:
        RequestDecryptor(_only(keys, "oaep-1")).decrypt(body)
    assert caught.value.__context__ is None


def test_an_elastic_wrapped_key_still_needs_its_kid(keys: JWKManager) -> None:
    """Both implementations write the kid there; the kid-less rule is the `jwe` format's."""
    single = _only(keys, "oaep-1")
    body = RequestEncryptor(single.get_public_jwks()).encrypt("oaep-1", {"a": 1})
    assert RequestDecryptor(single).decrypt(body) == {"a": 1}
    wrapped = json.loads(base64url_decode(body))["encryptedAESKey"]
    header = json.loads(base64url_decode(wrapped.split(".")[0]))
    del header["kid"]
    kidless = _standard_jwe(single.get_public_jwk("oaep-1") or {}, header, b"p" * 32)
    with pytest.raises(NoKeyFoundError) as caught:
        unwrap_passphrase(single, kidless, max_token_size=8192)
    assert type(caught.value) is NoKeyFoundError


def test_the_decrypt_result_offers_plaintext_as_the_javascript_result(keys: JWKManager) -> None:
    token = keys.encrypt_jwe("oaep-2", b"\x00bytes")
    result = keys.decrypt(token)
    assert result.plaintext == result.payload == b"\x00bytes"
    assert "bytes" not in repr(result)


@pytest.mark.parametrize("path", ["some/path.json", Path("some/path.json"), "keys.json"])
def test_a_path_given_to_the_encryptor_says_to_use_from_file(path: Any) -> None:
    with pytest.raises(InvalidArgumentError, match=r"RequestEncryptor\.from_file\(path\)"):
        RequestEncryptor(path)


def test_key_set_text_is_still_a_key_set(keys: JWKManager) -> None:
    text = json.dumps(_only(keys, "oaep-1").get_public_jwks())
    assert RequestEncryptor(text).kids() == ["oaep-1"]
    assert RequestEncryptor("  " + text).kids() == ["oaep-1"]


def test_every_format_is_registered_under_its_name_and_detects_its_own_bodies(
    keys: JWKManager,
) -> None:
    assert set(REGISTRY) == set(Format)
    for name, wire_format in REGISTRY.items():
        assert wire_format.name is name
        body = RequestEncryptor(keys, format=name).encrypt("oaep-1", [name.value])
        assert [f for f in REGISTRY.values() if f.detect(body)] == [wire_format]
        assert detect_format(body) is name
        assert detect_format(body.encode()) is name


def _jwcrypto_opens(private_jwk: dict[str, Any], token: str) -> bytes:
    """jwcrypto's whole JWE object (which takes no empty payload: it reports no match)."""
    message = JWE()
    message.deserialize(token, key=JWK(**private_jwk))
    return bytes(message.payload)


@pytest.mark.parametrize("enc", ["A128CBC-HS256", "A256CBC-HS512", "A128GCM", "A256GCM"])
@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 1000, 70_000])
def test_what_we_seal_jwcrypto_opens_and_so_do_we(keys: JWKManager, enc: str, size: int) -> None:
    plaintext = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    token = keys.encrypt_jwe("oaep256", plaintext, enc=enc)
    if plaintext:
        assert _jwcrypto_opens(keys.get_private_jwk("oaep256") or {}, token) == plaintext
    assert keys.decrypt(token).plaintext == plaintext


@pytest.mark.parametrize("size", [0, 32, 5000])
def test_an_elastic_wrapped_key_jwcrypto_inflates_and_opens(keys: JWKManager, size: int) -> None:
    data = b"p" * size
    token = keys.encrypt("oaep-1", data)  # DEF + A128CBC-HS256, as the original writes it
    if data:
        assert _jwcrypto_opens(keys.get_private_jwk("oaep-1") or {}, token) == data
    assert keys.decrypt(token).plaintext == data
