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
from request_crypto._sealed_header import MAGIC, MAGIC_KMS, read_header
from request_crypto.errors import RequestCryptoError, SealedFormatError
from request_crypto.sealed import FileSealer

KIDS = ("a", "b", "c")


class FixedDataKey:
    """A DataKeySource answering a given ARN and blob (no KMS: the header is what is tested)."""

    def __init__(self, arn: str, blob: bytes) -> None:
        self.arn, self.blob = arn, blob

    def generate(self, context: dict[str, str]) -> tuple[bytes, str, bytes]:
        return os.urandom(32), self.arn, self.blob

    def unwrap(self, key_id: str, blob: bytes, context: dict[str, str]) -> bytes | None:
        return None


@pytest.fixture(scope="module")
def keys() -> JWKManager:
    manager = JWKManager()
    for kid in KIDS:
        manager.add_key(kid, alg="RSA-OAEP-256", size=2048)
    return manager


arns = st.from_regex(r"arn:aws:kms:[a-z0-9-]{1,20}:[0-9]{12}:key/[a-f0-9-]{1,36}", fullmatch=True)
headers = st.fixed_dictionaries(
    {
        "segment_size": st.sampled_from([2**n for n in range(10, 23)]),
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
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_written_headers_parse_back_and_prefixes_are_refused(
    keys: JWKManager, spec: dict[str, object], cut: int
) -> None:
    kids = list(spec["kids"])  # type: ignore[call-overload]
    kms = spec["kms"]
    header = FileSealer(
        [keys.get_public_jwk(kid) for kid in kids],  # type: ignore[misc]
        segment_size=spec["segment_size"],  # type: ignore[arg-type]
        kms=FixedDataKey(*kms) if kms else None,  # type: ignore[misc]
    ).header
    assert header.startswith(MAGIC_KMS if kms else MAGIC)
    tail = os.urandom(40)
    parsed, rest = read_header(io.BytesIO(header + tail))
    assert rest == tail
    assert (parsed.segment_size, list(parsed.kids), len(parsed.salt)) == (
        spec["segment_size"],
        kids,
        32,
    )
    assert parsed.kms == ((kms,) if kms else ())
    assert parsed.size == len(header)
    assert parsed.authenticated == header[: header.rindex(b"mac ")]
    with pytest.raises(SealedFormatError):
        read_header(io.BytesIO(header[: cut % len(header)]))
