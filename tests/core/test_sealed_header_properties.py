"""Properties of sealed-file header parsing (request_crypto._sealed_header), with hypothesis.

Any bytes: a parsed header or a SealedFormatError (a RequestCryptoError), nothing else. Any
header the writer makes (v1 or v2, 1 to a few recipients, any segment size) parses back to
what was written; every strict prefix of it is refused as truncated, never half-parsed.
"""

from __future__ import annotations

import io
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from request_crypto import JWKManager
from request_crypto._sealed_header import (
    MAGIC,
    MAGIC_KMS,
    build_header,
    parse_header,
    read_header,
)
from request_crypto.errors import RequestCryptoError, SealedFormatError

KIDS = ("a", "b", "c")
FILE_KEY = bytes(range(32))


@pytest.fixture(scope="module")
def tokens() -> dict[str, str]:
    """One compact JWE of FILE_KEY per kid (RSA work done once, not per example)."""
    keys = JWKManager()
    for kid in KIDS:
        keys.add_key(kid, alg="RSA-OAEP-256", size=2048)
    return {kid: keys.encrypt_jwe(kid, FILE_KEY, enc="A256GCM") for kid in KIDS}


arns = st.from_regex(r"arn:aws:kms:[a-z0-9-]{1,20}:[0-9]{12}:key/[a-f0-9-]{1,36}", fullmatch=True)
headers = st.fixed_dictionaries(
    {
        "segment_size": st.sampled_from([2**n for n in range(10, 23)]),
        "salt": st.binary(min_size=32, max_size=32),
        "kids": st.lists(st.sampled_from(KIDS), unique=True, max_size=3),
        "kms": st.none() | st.tuples(arns, st.binary(min_size=1, max_size=300)),
    }
).filter(lambda h: h["kids"] or h["kms"])


@given(data=st.binary(max_size=2000) | st.builds(lambda rest: MAGIC + rest, st.binary()))
@settings(max_examples=300, deadline=None)
def test_any_bytes_parse_or_are_refused(data: bytes) -> None:
    try:
        header, _rest = read_header(io.BytesIO(data))
    except RequestCryptoError:
        return
    assert header.version in (1, 2)


@given(spec=headers, cut=st.integers(min_value=1))
@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_written_headers_parse_back_and_prefixes_are_refused(
    tokens: dict[str, str], spec: dict[str, object], cut: int
) -> None:
    kids = list(spec["kids"])  # type: ignore[call-overload]
    kms = spec["kms"]
    header = build_header(
        FILE_KEY,
        spec["salt"],  # type: ignore[arg-type]
        spec["segment_size"],  # type: ignore[arg-type]
        [tokens[kid] for kid in kids],
        kms,  # type: ignore[arg-type]
    )
    assert header.startswith(MAGIC_KMS if kms else MAGIC)
    tail = os.urandom(40)
    parsed, rest = read_header(io.BytesIO(header + tail))
    assert rest == tail
    assert parsed == parse_header(header)
    assert (parsed.segment_size, parsed.salt, list(parsed.kids)) == (
        spec["segment_size"],
        spec["salt"],
        kids,
    )
    assert parsed.kms == ((kms,) if kms else ())
    assert parsed.size == len(header)
    assert parsed.authenticated == header[: header.rindex(b"mac ")]
    with pytest.raises(SealedFormatError):
        read_header(io.BytesIO(header[: cut % len(header)]))
