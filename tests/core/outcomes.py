"""How a body ends through `decrypt_request` and through `decrypt`, for the tests that compare
a fast path with the general one (`test_elastic_common_path`, `test_jwe_common_path`,
`test_hostile_table`)."""

from __future__ import annotations

from typing import Any

import pytest

from request_crypto import RequestDecryptor
from request_crypto.errors import RequestCryptoError
from request_crypto.formats import jwe as jwe_format
from request_crypto.formats.elastic import ElasticFormat
from request_crypto.keys.jwks import JWKManager

#: Each format's fast path, as the object and name that `both` makes decline.
FAST_PATHS: dict[str, tuple[Any, str]] = {
    "elastic": (ElasticFormat, "decrypt_common"),
    "jwe": (jwe_format, "parse_common_compact"),
}


def outcome(decryptor: RequestDecryptor, body: Any) -> tuple[str, Any]:
    """`decrypt_request`'s value (payload, format, metadata, signer) or error."""
    try:
        request = decryptor.decrypt_request(body)
    except RequestCryptoError as exc:
        return "error", (type(exc), str(exc))
    return "value", (request.payload, request.format, request.metadata, request.signer)


def plain_outcome(decryptor: RequestDecryptor, body: Any) -> tuple[str, Any]:
    """`decrypt`'s value or error: it opens the common body without the result objects."""
    try:
        return "value", decryptor.decrypt(body)
    except RequestCryptoError as exc:
        return "error", (type(exc), str(exc))


def checked_outcome(decryptor: RequestDecryptor, body: Any) -> tuple[str, Any]:
    """`outcome`, once `decrypt` is seen to end the same (its value: the payload)."""
    full = outcome(decryptor, body)
    plain = plain_outcome(decryptor, body)
    assert plain == (full if full[0] == "error" else ("value", full[1][0]))
    return full


def compare_paths(
    decryptor: RequestDecryptor, body: Any, monkeypatch: pytest.MonkeyPatch, path: str
) -> tuple[tuple[str, Any], tuple[str, Any]]:
    """The checked outcome with `path`'s fast path (a `FAST_PATHS` key), then with it made to
    decline, so that the general path answers."""
    fast = checked_outcome(decryptor, body)
    with monkeypatch.context() as patch:
        patch.setattr(*FAST_PATHS[path], lambda *args, **kwargs: None)
        general = checked_outcome(decryptor, body)
    return fast, general


def count_unwraps(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The kids of the RSA unwraps done from now on (a list that grows as they happen)."""
    calls: list[str] = []
    unwrap = JWKManager.unwrap

    def counting(self: JWKManager, kid: str, alg: str, encrypted_key: bytes) -> bytes:
        calls.append(kid)
        return unwrap(self, kid, alg, encrypted_key)

    monkeypatch.setattr(JWKManager, "unwrap", counting)
    return calls
