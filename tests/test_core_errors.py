"""errors.py and the public API contract of issue 2: names, hierarchy, parity messages."""

from __future__ import annotations

import importlib

import pytest

import request_crypto
from request_crypto import errors
from request_crypto.errors import (
    BatchError,
    DecryptionError,
    MissingKidError,
    NoKeyFoundError,
    PayloadTooLargeError,
    RequestCryptoError,
)

CONTRACT = {
    "request_crypto": [
        "RequestEncryptor",
        "RequestDecryptor",
        "JWKManager",
        "JWKSManager",
        "JWKMetadata",
        "JWKDecryptResult",
        "Format",
        "PassphraseCipher",
        "generate_passphrase",
        "KEY_LENGTH_IN_BYTES",
        "pack_body",
        "unpack_body",
        "create_request_encryptor",
        "create_request_decryptor",
        "create_jwk_manager",
    ],
    "request_crypto.errors": [
        "RequestCryptoError",
        "MissingKidError",
        "NoKeyFoundError",
        "DecryptionError",
        "MalformedBodyError",
        "InvalidJWKSError",
    ],
}


@pytest.mark.parametrize(
    ("module", "name"), [(m, n) for m, names in CONTRACT.items() for n in names]
)
def test_contract_name_is_exported(module: str, name: str) -> None:
    imported = importlib.import_module(module)
    assert name in imported.__all__
    assert getattr(imported, name) is not None


@pytest.mark.parametrize("name", errors.__all__)
def test_every_library_error_derives_from_request_crypto_error(name: str) -> None:
    assert issubclass(getattr(errors, name), RequestCryptoError)


def test_package_all_names_resolve() -> None:
    missing = [name for name in request_crypto.__all__ if not hasattr(request_crypto, name)]
    assert missing == []


@pytest.mark.parametrize("kid", ["kibana_1", "with space", "ünïcode", ""])
def test_missing_kid_message_is_the_originals(kid: str) -> None:
    error = MissingKidError(kid)
    assert str(error) == f"Missing kid ({kid})."
    assert error.kid == kid
    assert isinstance(error, LookupError)


@pytest.mark.parametrize("kid", [None, "kibana_1", "attacker <script>"])
def test_no_key_found_message_is_the_originals_and_omits_the_untrusted_kid(
    kid: str | None,
) -> None:
    error = NoKeyFoundError(kid)
    assert str(error) == "no key found"
    assert error.kid == kid


def test_decryption_error_says_the_same_thing_every_time() -> None:
    assert str(DecryptionError()) == str(DecryptionError()) == DecryptionError.MESSAGE
    assert "decrypt" in DecryptionError.MESSAGE


def test_payload_too_large_names_sizes_and_what_to_do() -> None:
    error = PayloadTooLargeError("the body", 2000, 1000)
    assert (error.size, error.limit) == (2000, 1000)
    assert "the body is 2000 bytes" in str(error)
    assert "1000" in str(error)
    assert "raise the limit" in str(error)


def test_batch_error_carries_results_and_failures() -> None:
    failure = NoKeyFoundError("x")
    results: list[object] = ["a", failure, "c", DecryptionError()]
    failures = {3: results[3], 1: failure}
    error = BatchError(results, failures)  # type: ignore[arg-type]
    assert error.results is results
    assert error.failures is failures
    assert str(error).startswith("2 of 4 items failed (first at index 1: no key found)")
