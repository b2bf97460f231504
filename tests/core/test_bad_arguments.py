"""Bad arguments and bad key sets: a RequestCryptoError subclass, never a bare TypeError, and
no chained exception that could carry key material."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from request_crypto import (
    DEFAULT_LIMITS,
    JWKManager,
    Limits,
    PassphraseCipher,
    RequestDecryptor,
    RequestEncryptor,
)
from request_crypto.errors import (
    BatchError,
    InvalidArgumentError,
    InvalidJWKSError,
    MalformedBodyError,
    MissingKidError,
    PayloadTooLargeError,
)
from request_crypto.keyfile import read_jwks


def chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def test_a_key_with_an_unhashable_alg_is_an_invalid_set(private_jwks: dict[str, Any]) -> None:
    bad = {"keys": [dict(private_jwks["keys"][0], alg=["RSA-OAEP"])]}
    with pytest.raises(InvalidJWKSError, match="alg"):
        RequestDecryptor(bad)


def test_broken_key_set_json_chains_nothing(private_jwks: dict[str, Any], tmp_path: Path) -> None:
    text = json.dumps(private_jwks)[:-3]  # cut: no longer JSON, still full of private members
    secret = private_jwks["keys"][0]["d"]
    path = tmp_path / "broken.json"
    path.write_text(text)
    for load in (lambda: RequestDecryptor(text), lambda: read_jwks(path)):
        with pytest.raises(InvalidJWKSError) as caught:
            load()
        assert len(chain(caught.value)) == 1
        assert secret not in repr(vars(caught.value)) + str(caught.value)


def test_a_key_whose_numbers_do_not_match_chains_nothing(private_jwks: dict[str, Any]) -> None:
    first, second = private_jwks["keys"]
    mixed = {"keys": [dict(first, d=second["d"])]}
    with pytest.raises(InvalidJWKSError, match="not a valid RSA key") as caught:
        RequestDecryptor(mixed)
    assert len(chain(caught.value)) == 1


def test_encrypt_jwe_refuses_an_enc_outside_the_allow_list(private_jwks: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgumentError, match="A192GCM"):
        JWKManager(private_jwks).encrypt_jwe("kibana_1", b"x", enc="A192GCM")


@pytest.mark.parametrize("kid", [["kibana_1"], {"k": 1}, None, 7])
def test_a_kid_that_is_not_a_string_is_a_missing_kid(public_jwks: dict[str, Any], kid: Any) -> None:
    encryptor = RequestEncryptor(public_jwks, format="jwe")
    with pytest.raises(MissingKidError):
        encryptor.encrypt(kid, {"a": 1})
    assert kid not in encryptor.kids()


def test_one_unhashable_kid_does_not_lose_the_rest_of_a_batch(
    public_jwks: dict[str, Any],
) -> None:
    encryptor = RequestEncryptor(public_jwks, format="jwe")
    with pytest.raises(BatchError) as caught:
        encryptor.encrypt_many([("kibana_1", 1), (["x"], 2), ("kibana_2", 3)], workers=1)
    assert sorted(caught.value.failures) == [1]
    assert isinstance(caught.value.results[0], str) and isinstance(caught.value.results[2], str)


def test_passphrase_cipher_refuses_bad_text_with_library_errors() -> None:
    cipher = PassphraseCipher(b"k" * 32)
    with pytest.raises(MalformedBodyError):
        cipher.decrypt(123)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="surrogate"):
        cipher.encrypt(1, aad="a\ud800")
    with pytest.raises(InvalidArgumentError, match="surrogate"):
        PassphraseCipher("pass\udc00word")


@pytest.mark.parametrize("value", ["64MiB", None, 0, -1, 1.5, True])
def test_decryptor_limits_must_be_positive_whole_numbers(
    private_jwks: dict[str, Any], value: Any
) -> None:
    with pytest.raises(InvalidArgumentError, match="max_body_size"):
        Limits(max_body_size=value)
    if value is not None:  # the keyword's None means "as in `limits`", tested below
        with pytest.raises(InvalidArgumentError, match="max_body_size"):
            RequestDecryptor(private_jwks, max_body_size=value)
    with pytest.raises(InvalidArgumentError, match="max_body_size"):
        dataclasses.replace(DEFAULT_LIMITS, max_body_size=value)


def test_decryptor_limits_keywords_replace_fields_of_limits(private_jwks: dict[str, Any]) -> None:
    base = Limits(max_body_size=5000, max_json_depth=7)
    decryptor = RequestDecryptor(private_jwks, limits=base, max_body_size=None, max_json_values=9)
    assert decryptor.limits == Limits(max_body_size=5000, max_json_depth=7, max_json_values=9)
    assert RequestDecryptor(private_jwks).limits == DEFAULT_LIMITS == Limits()
    with pytest.raises(InvalidArgumentError, match="Limits object"):
        RequestDecryptor(private_jwks, limits={"max_body_size": 5})  # type: ignore[arg-type]
    with pytest.raises(dataclasses.FrozenInstanceError):
        base.max_body_size = 1  # type: ignore[misc]
    with pytest.raises(TypeError, match="max_bdy_size"):
        Limits(max_bdy_size=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Limits(1)  # type: ignore[misc]  # keyword-only: no positional limits


def test_an_oversize_body_is_too_large_whatever_its_shape(private_jwks: dict[str, Any]) -> None:
    decryptor = RequestDecryptor(private_jwks, max_body_size=1000)
    with pytest.raises(PayloadTooLargeError):
        decryptor.decrypt("a.b" * 1000)  # 1,001 parts: malformed too, but the size comes first
