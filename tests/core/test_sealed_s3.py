"""Sealed files in S3 (request_crypto.s3) against moto's standalone server (the `kms` fixture).

Multipart uploads use the server's small part minimum (`KMS.S3_PART_MIN`), so a few hundred
KiB cross several part boundaries; ranged reads are counted on the reader itself.
"""

from __future__ import annotations

import io
import os
from typing import Any

import pytest

from request_crypto import JWKManager, SealedReader, open_sealed, seal
from request_crypto import s3 as s3_module
from request_crypto.errors import S3Error, SegmentError
from request_crypto.s3 import S3ObjectReader, parse_s3_uri, s3_upload

SEG = 1024
TAG = 16


@pytest.fixture(scope="module")
def keys() -> JWKManager:
    manager = JWKManager()
    manager.add_key("k1", alg="RSA-OAEP-256")
    return manager


def _seal_to_s3(kms: Any, keys: JWKManager, plaintext: bytes, *, segment: int = SEG) -> str:
    uri = f"s3://{kms.bucket()}/in.sealed"
    with s3_upload(uri, part_size=kms.S3_PART_MIN) as upload:
        seal(io.BytesIO(plaintext), upload, [keys.get_public_jwk("k1")], segment_size=segment)
    return uri


def _parts(kms: Any, uri: str) -> int:
    """How many parts made the object (its multipart ETag ends in -N; 1 for a PutObject)."""
    bucket, key = parse_s3_uri(uri)
    etag = kms.s3().head_object(Bucket=bucket, Key=key)["ETag"].strip('"')
    return int(etag.partition("-")[2] or 1)


def _pending(kms: Any, bucket: str) -> list[Any]:
    return list(kms.s3().list_multipart_uploads(Bucket=bucket).get("Uploads", []))


@pytest.mark.parametrize("parts", [0, 1, 2, 5])
@pytest.mark.parametrize("delta", [-1, 0, 1])
def test_round_trip_local_s3_local(kms: Any, keys: JWKManager, parts: int, delta: int) -> None:
    """Sealed sizes right around 0..5 part boundaries; the object has the expected parts."""
    part = kms.S3_PART_MIN
    # A sealed size of parts*part + delta, near enough: the header is ~600 bytes.
    sealed_target = max(parts * part + delta, 2000)
    plaintext = os.urandom(max(0, sealed_target - 700) * SEG // (SEG + TAG))
    uri = _seal_to_s3(kms, keys, plaintext)
    with S3ObjectReader(uri) as source:
        size = source.size
        out = io.BytesIO()
        assert open_sealed(source, out, keys) == len(plaintext)
    assert out.getvalue() == plaintext
    assert _parts(kms, uri) == max(1, -(-size // part))


def test_seek_fetches_only_the_segments_it_reads(kms: Any, keys: JWKManager) -> None:
    plaintext = os.urandom(2 * 1024 * 1024)
    uri = _seal_to_s3(kms, keys, plaintext)
    source = S3ObjectReader(uri, read_ahead=4096)
    with SealedReader(source, keys, close_source=True) as reader:
        opened = (source.requests, source.bytes_fetched)
        assert opened[0] == 2  # the header's window, then the final segment
        reader.seek(1_500_000)
        assert reader.read(100) == plaintext[1_500_000:1_500_100]
        assert source.requests == opened[0] + 1
        reader.seek(-10, io.SEEK_END)
        assert reader.read() == plaintext[-10:]
    # Four ranged GETs of a few KiB each, out of a 2 MiB object.
    assert source.bytes_fetched < 32 * 1024
    assert source.size > 2 * 1024 * 1024


def test_sequential_reads_grow_the_window(kms: Any, keys: JWKManager) -> None:
    """A streaming open does few GETs: each sequential one doubles (bounded) the range."""
    uri = _seal_to_s3(kms, keys, os.urandom(3 * 1024 * 1024), segment=64 * 1024)
    with S3ObjectReader(uri) as source:
        open_sealed(source, io.BytesIO(), keys)
        assert source.requests <= 6
        assert source.bytes_fetched == source.size


def test_a_long_sequential_read_is_one_streaming_get(
    kms: Any, keys: JWKManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past MAX_READ_AHEAD, sequential reads share one GET of the rest; a seek ends it."""
    monkeypatch.setattr(s3_module, "MAX_READ_AHEAD", 64 * 1024)
    plaintext = os.urandom(3 * 1024 * 1024)
    uri = _seal_to_s3(kms, keys, plaintext, segment=64 * 1024)
    with S3ObjectReader(uri, read_ahead=64 * 1024) as source:
        out = io.BytesIO()
        open_sealed(source, out, keys)
        assert out.getvalue() == plaintext
        assert (source.requests, source.bytes_fetched) == (1, source.size)
        source.seek(100)
        assert len(source.read(10)) == 10
        assert source.requests == 2


def test_failed_open_leaves_no_object_and_no_upload(kms: Any, keys: JWKManager) -> None:
    plaintext = os.urandom(3 * 1024 * 1024)
    uri = _seal_to_s3(kms, keys, plaintext)
    bucket, key = parse_s3_uri(uri)
    sealed = bytearray(kms.s3().get_object(Bucket=bucket, Key=key)["Body"].read())
    sealed[-100] ^= 1  # the final segment: every earlier one is already uploaded
    kms.s3().put_object(Bucket=bucket, Key=key, Body=bytes(sealed))
    target = f"s3://{bucket}/out.plain"
    uploaded = []
    with (
        pytest.raises(SegmentError),
        S3ObjectReader(uri) as source,
        s3_upload(target, part_size=kms.S3_PART_MIN) as upload,
    ):
        real_write = upload.write
        upload.write = lambda data: uploaded.append(len(data)) or real_write(data)  # type: ignore[method-assign]
        open_sealed(source, upload, keys)
    assert sum(uploaded) > 2 * kms.S3_PART_MIN  # parts went up before the failure
    assert "Contents" not in kms.s3().list_objects_v2(Bucket=bucket, Prefix="out")
    assert _pending(kms, bucket) == []


def test_failed_seal_aborts_the_upload(kms: Any, keys: JWKManager) -> None:
    class Failing(io.RawIOBase):
        sent = 0

        def readinto(self, buffer: Any) -> int:
            if self.sent > 1024 * 1024:
                raise OSError("disk gone")
            self.sent += len(buffer)
            memoryview(buffer)[:] = b"x" * len(buffer)
            return len(buffer)

    bucket = kms.bucket()
    with pytest.raises(OSError, match="disk gone"):  # noqa: SIM117
        with s3_upload(f"s3://{bucket}/x", part_size=kms.S3_PART_MIN) as upload:
            seal(Failing(), upload, [keys.get_public_jwk("k1")])
    assert "Contents" not in kms.s3().list_objects_v2(Bucket=bucket)
    assert _pending(kms, bucket) == []


def test_object_replaced_while_read_is_refused(kms: Any, keys: JWKManager) -> None:
    uri = _seal_to_s3(kms, keys, os.urandom(200_000))
    bucket, key = parse_s3_uri(uri)
    with S3ObjectReader(uri, read_ahead=4096) as source:
        kms.s3().put_object(Bucket=bucket, Key=key, Body=b"other")
        with pytest.raises(S3Error, match="changed while it was read"):
            source.read(10)


@pytest.mark.parametrize(
    "uri", ["s3://", "s3://bucket", "s3://bucket/", "s3://Bad_Bucket/k", "s3://ab/k", "s3:/b/k"]
)
def test_bad_uris(uri: str) -> None:
    with pytest.raises(S3Error, match="use s3://BUCKET/KEY"):
        parse_s3_uri(uri)


def test_missing_object_and_bucket(kms: Any) -> None:
    bucket = kms.bucket()
    with pytest.raises(S3Error, match="no such object"):
        S3ObjectReader(f"s3://{bucket}/nothing-here")
    with pytest.raises(S3Error, match="no such bucket"):
        S3ObjectReader("s3://rc-no-such-bucket-at-all/k")
    with pytest.raises(S3Error, match="no such bucket 'rc-no-such-bucket-at-all'"):  # noqa: SIM117
        with s3_upload("s3://rc-no-such-bucket-at-all/k") as upload:
            upload.write(b"x")


def test_unreachable_endpoint(kms: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")
    with pytest.raises(S3Error, match="the S3 endpoint failed"):
        S3ObjectReader("s3://rc-some-bucket/k")


def test_reader_seek_refuses_bad_arguments(kms: Any, keys: JWKManager) -> None:
    with S3ObjectReader(_seal_to_s3(kms, keys, b"abc")) as source:
        with pytest.raises(ValueError, match="whence"):
            source.seek(0, 7)
        with pytest.raises(ValueError, match="negative"):
            source.seek(-1)
        assert source.seek(-2, io.SEEK_END) == source.size - 2
        assert len(source.read()) == 2
