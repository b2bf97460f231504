"""formats/elastic.py and formats/__init__.py: the `elastic` body, Format, format detection."""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest

from request_crypto import ElasticBody, Format, detect_format, pack_body, unpack_body
from request_crypto.errors import MalformedBodyError

BASE64URL = re.compile(r"[A-Za-z0-9_-]*")


def b64url(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def padded(body: str) -> str:
    return body + "=" * (-len(body) % 4)


# Parts whose packed JSON lengths cover the three base64 remainders (no padding, "=", "==").
PARTS = [("a.b.c.d.e", "QUJD"), ("a.b.c.d.ef", "QUJD"), ("a.b.c.d.efg", "QUJD+/=")]


@pytest.mark.parametrize(("key", "payload"), PARTS)
def test_pack_body_writes_members_in_order_without_padding(key: str, payload: str) -> None:
    body = pack_body(key, payload)
    assert BASE64URL.fullmatch(body)
    decoded = base64.urlsafe_b64decode(padded(body))
    assert decoded == f'{{"encryptedAESKey":"{key}","encryptedPayload":"{payload}"}}'.encode()


@pytest.mark.parametrize(
    ("key", "payload", "expected_json"),
    [
        ("é日🚀", '"\\', '{"encryptedAESKey":"é日🚀","encryptedPayload":"\\"\\\\"}'),
        ("\ud800", "\x1f", '{"encryptedAESKey":"\\ud800","encryptedPayload":"\\u001f"}'),
    ],
    ids=["raw-non-ascii-and-escapes", "lone-surrogate-and-control"],
)
def test_pack_body_writes_json_stringify_text(key: str, payload: str, expected_json: str) -> None:
    body = pack_body(key, payload)
    assert base64.urlsafe_b64decode(padded(body)) == expected_json.encode()
    assert unpack_body(body) == (key, payload)


def test_pack_body_lengths_cover_every_padding_case() -> None:
    assert {len(pack_body(*parts)) % 4 for parts in PARTS} == {0, 2, 3}


@pytest.mark.parametrize(("key", "payload"), PARTS)
@pytest.mark.parametrize("given", ["str", "padded", "bytes", "padded-bytes"])
def test_unpack_body_reverses_pack_body(key: str, payload: str, given: str) -> None:
    body = pack_body(key, payload)
    body = padded(body) if given.startswith("padded") else body
    parts = unpack_body(body.encode() if given.endswith("bytes") else body)
    assert isinstance(parts, ElasticBody)
    assert parts == (key, payload)
    assert (parts.encrypted_aes_key, parts.encrypted_payload) == (key, payload)


def test_unpack_body_accepts_any_json_layout() -> None:
    # Not what packBody writes, but JSON.parse on the JavaScript side reads it the same way.
    body = b64url(' { "encryptedPayload" : "P/+=", "extra": 1, "encryptedAESKey": "K" } ')
    assert unpack_body(body) == ("K", "P/+=")


@pytest.mark.parametrize(
    "body",
    [
        "not*base64url",
        "A",
        "é",
        b64url("not json"),
        b64url("[1, 2]"),
        b64url('{"encryptedAESKey": "K"}'),
        b64url('{"encryptedAESKey": 1, "encryptedPayload": "P"}'),
        b64url(b"\xff\xfe"),
    ],
    ids=[
        "off-alphabet",
        "impossible-length",
        "non-ascii",
        "not-json",
        "not-an-object",
        "missing-member",
        "member-not-a-string",
        "not-utf8",
    ],
)
def test_unpack_body_refuses_malformed_bodies(body: str) -> None:
    with pytest.raises(MalformedBodyError):
        unpack_body(body)


def test_format_is_a_str_enum_of_the_two_formats() -> None:
    assert [f.value for f in Format] == ["elastic", "jwe"]
    assert Format("jwe") is Format.JWE
    assert Format.ELASTIC == "elastic"
    assert isinstance(Format.JWE, str)
    assert (str(Format.JWE), f"{Format.ELASTIC}") == ("jwe", "elastic")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("abc", Format.ELASTIC),
        (b"abc", Format.ELASTIC),
        ("a.b.c.d.e", Format.JWE),
        (b"....", Format.JWE),
    ],
)
def test_detect_format_by_shape(body: str | bytes, expected: Format) -> None:
    assert detect_format(body) is expected


@pytest.mark.parametrize("body", ["a.b", "a.b.c", "a.b.c.d.e.f", None, 12])
def test_detect_format_refuses_other_shapes(body: Any) -> None:
    with pytest.raises(MalformedBodyError):
        detect_format(body)
