"""errors.py and the public API contract of issue 2: names, hierarchy, parity messages."""

from __future__ import annotations

import importlib
import pkgutil

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


# ---------------------------------------------------------------------------------------------
# Every exception class the package defines, CLI and receiver included

#: Exceptions the package defines outside the hierarchy, by name: none.
NOT_YET_IN_THE_HIERARCHY: set[str] = set()


def _package_exception_classes() -> list[type[BaseException]]:
    """Import every module of the package (the server ones too) and collect its exceptions."""
    found = []
    for module_info in pkgutil.walk_packages(request_crypto.__path__, "request_crypto."):
        module = importlib.import_module(module_info.name)
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, BaseException)
                and value.__module__ == module.__name__
            ):
                found.append(value)
    return found


def test_every_exception_class_in_the_package_is_a_request_crypto_error() -> None:
    classes = _package_exception_classes()
    names = {f"{cls.__module__}.{cls.__qualname__}" for cls in classes}
    # The walk reaches the receiver and the CLI, not only errors.py.
    assert {
        "request_crypto.receiver.sinks.SinkURLError",
        "request_crypto.receiver._http.Refused",
        "request_crypto._b64.Decline",
        "request_crypto.errors.UsageError",
    } <= names
    outside = sorted(
        name
        for cls, name in ((cls, f"{cls.__module__}.{cls.__qualname__}") for cls in classes)
        if not issubclass(cls, RequestCryptoError) and name not in NOT_YET_IN_THE_HIERARCHY
    )
    assert outside == []


def test_the_receivers_and_the_clis_errors_are_the_ones_in_errors() -> None:
    from request_crypto.cli import _common
    from request_crypto.receiver import app

    assert _common.CLIError is errors.UsageError
    assert app.SinkUnavailableError is errors.SinkUnavailableError


def test_the_hierarchy_tree_in_errors_names_every_public_error() -> None:
    assert errors.__doc__ is not None
    missing = [name for name in errors.__all__ if name not in errors.__doc__]
    assert missing == []
