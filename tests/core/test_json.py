"""_json.py: payloads are serialized as JSON.stringify writes them, in both wire formats.

The serialized bytes are read back through public APIs: the plaintext of a node-crypto
output (`decrypt_bytes`) and of a `jwe` body (`JWKManager.decrypt`). The live comparison with
node's JSON.stringify is in test_interop.py.
"""

from __future__ import annotations

import base64
import datetime
import enum
import gc
import json
import math
import random
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from request_crypto import (
    Format,
    JWKManager,
    PassphraseCipher,
    RequestEncryptor,
    _accel,
    _json,
    unpack_body,
)
from request_crypto.errors import InvalidArgumentError, RequestCryptoError
from tests.core.test_fast_paths import LOAD_CASES

# (value, the bytes JSON.stringify + UTF-8 gives for it)
STRINGIFY_CASES: list[tuple[Any, bytes]] = [
    ({"b": 1, "a": [1, 2, {"c": None}]}, b'{"b":1,"a":[1,2,{"c":null}]}'),
    ([True, False, 0, -5, 1.5, ""], b'[true,false,0,-5,1.5,""]'),
    ("héllo — 日本語 🚀", '"héllo — 日本語 🚀"'.encode()),
    ("\ud800", b'"\\ud800"'),
    ("a\udc00b\udbff", b'"a\\udc00b\\udbff"'),
    ("\ud83d\ude80", '"🚀"'.encode()),
    ({"\udfff": ["\ud800\ud800", "ok"]}, b'{"\\udfff":["\\ud800\\ud800","ok"]}'),
    ('\x00\x1f\x7f\u2028"\\/', b'"\\u0000\\u001f\x7f\xe2\x80\xa8\\"\\\\/"'),
    ("\\ud800 is text", b'"\\\\ud800 is text"'),
]
IDS = [
    "compact-in-order",
    "scalars",
    "raw-non-ascii",
    "lone-high-surrogate",
    "lone-surrogates-in-text",
    "surrogate-pair-joined",
    "surrogates-in-keys",
    "controls-and-escapes",
    "escaped-text-untouched",
]

PASSPHRASE = b"k" * 32


def node_crypto_plaintext(value: Any) -> bytes:
    cipher = PassphraseCipher(PASSPHRASE)
    return cipher.decrypt_bytes(base64.b64decode(cipher.encrypt(value)))


@pytest.fixture(scope="module")
def manager(private_jwks: dict[str, Any]) -> JWKManager:
    return JWKManager(private_jwks)


def body_plaintext(manager: JWKManager, body: str) -> bytes:
    """The exact plaintext bytes of a body of either format, opened step by step."""
    if "." in body:
        return manager.decrypt(body).payload
    parts = unpack_body(body)
    passphrase = manager.decrypt(parts.encrypted_aes_key).payload
    return PassphraseCipher(passphrase).decrypt_bytes(base64.b64decode(parts.encrypted_payload))


@pytest.mark.parametrize(("value", "expected"), STRINGIFY_CASES, ids=IDS)
def test_node_crypto_serializes_like_json_stringify(value: Any, expected: bytes) -> None:
    assert node_crypto_plaintext(value) == expected


@pytest.mark.parametrize("body_format", list(Format))
@pytest.mark.parametrize(("value", "expected"), STRINGIFY_CASES[:5], ids=IDS[:5])
def test_request_bodies_serialize_like_json_stringify(
    manager: JWKManager, body_format: Format, value: Any, expected: bytes
) -> None:
    encryptor = RequestEncryptor(manager, format=body_format)
    assert body_plaintext(manager, encryptor.encrypt("kibana_1", value)) == expected


@pytest.mark.parametrize(("value", "expected"), STRINGIFY_CASES, ids=IDS)
def test_decrypt_returns_what_the_text_means(value: Any, expected: bytes) -> None:
    # Lone surrogates survive; a surrogate pair comes back as the one character it encodes.
    cipher = PassphraseCipher(PASSPHRASE)
    assert cipher.decrypt(cipher.encrypt(value)) == json.loads(expected)


def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    "value",
    [{1, 2}, object(), b"bytes", nested(10**5), datetime.date(2026, 1, 1), [1, {"x": {1, 2}}]],
    ids=["set", "object", "bytes", "too-deep", "date", "nested-set"],
)
def test_values_json_cannot_hold_are_refused(value: Any) -> None:
    with pytest.raises(InvalidArgumentError, match="must be a JSON value"):
        PassphraseCipher(PASSPHRASE).encrypt(value)


class Shade(enum.Enum):
    DARK = (1, math.nan)
    LIGHT = uuid.UUID(int=2)


NOT_JSON_NUMBERS_AND_TYPES = (
    [math.nan, math.inf, -math.inf, {"x": [math.nan]}, Shade.DARK, Shade.LIGHT, uuid.UUID(int=1)],
    b'[null,null,null,{"x":[null]},[1,null],"00000000-0000-0000-0000-000000000002",'
    b'"00000000-0000-0000-0000-000000000001"]',
)


@pytest.mark.parametrize("dumps", [_json.dumps_utf8, _json.dumps_utf8_standard])
def test_nan_infinity_enum_and_uuid_are_written_as_json_stringify_and_orjson_write(
    dumps: Any,
) -> None:
    value, expected = NOT_JSON_NUMBERS_AND_TYPES
    assert dumps(value) == expected
    cipher = PassphraseCipher(PASSPHRASE)
    assert cipher.decrypt(cipher.encrypt(value)) == json.loads(expected)


def _large_document() -> bytes:
    return json.dumps([{"i": i, "name": f"row-{i}"} for i in range(70_000)]).encode()


@pytest.mark.parametrize("enabled", [True, False])
def test_parsing_a_large_payload_restores_the_gc_state(enabled: bool) -> None:
    data = _large_document()
    assert len(data) >= _json.DEFER_GC_FROM
    seen: list[bool] = []
    (gc.enable if enabled else gc.disable)()
    try:
        with _json._gc_deferred():
            seen.append(gc.isenabled())
        assert _json.loads_payload(data)[-1]["i"] == 69_999
        assert gc.isenabled() is enabled
    finally:
        gc.enable()
    assert seen == [False]


def test_overlapping_large_parses_on_threads_leave_the_gc_enabled() -> None:
    data = _large_document()
    assert gc.isenabled()
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(_json.loads_payload, [data] * 8))
    assert all(len(r) == 70_000 for r in results)
    assert gc.isenabled()


def payload_outcome(data: bytes | bytearray, max_values: int, max_depth: int) -> tuple[str, Any]:
    try:
        value = _json.loads_payload(data, max_values=max_values, max_depth=max_depth)
    except RequestCryptoError as exc:
        return "error", (type(exc), str(exc))
    return "value", (repr(value), type(value))


@pytest.mark.skipif(_accel.msgspec is None, reason="msgspec is not installed")
def test_a_small_payload_in_one_line_ends_as_on_the_general_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`loads_payload`'s one line for small bytes (budget by the bytes alone, then msgspec,
    else json) against the general path, which bytearray takes: the same value, or the same
    error class and message, on every load case and on payloads at the budget's edges."""
    rng = random.Random(5)
    cases = [(data, 1_000_000, 256) for data in LOAD_CASES]
    for _ in range(600):
        depth, width = rng.randrange(1, 12), rng.randrange(0, 12)
        inner = b"[" + b",".join([b"1"] * width) + b"]"
        data = b"[" * depth + inner + b"]" * depth
        if rng.random() < 0.3:  # a bracket inside a string, a bad byte, a cut
            position = rng.randrange(len(data) + 1)
            data = data[:position] + rng.choice([b'"[["', b"x", b"", b'"\\"']) + data[position:]
        cases.append((data, rng.randrange(1, 40), rng.randrange(1, 14)))
    declined: list[bytes | bytearray] = []
    within = _json.within_by_bytes

    def watching(raw: bytes | bytearray, max_values: int, max_depth: int) -> bool:
        declined.append(raw)
        return within(raw, max_values, max_depth)

    monkeypatch.setattr(_json, "within_by_bytes", watching)
    one_line = 0
    for data, max_values, max_depth in cases:
        declined.clear()
        fast = payload_outcome(bytes(data), max_values, max_depth)
        one_line += not declined
        assert fast == payload_outcome(bytearray(data), max_values, max_depth), data[:60]
    assert one_line > 100
