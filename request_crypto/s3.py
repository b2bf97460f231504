"""S3 objects as sealed files' input and output, streamed both ways in constant memory.

- `S3ObjectReader(uri)`: a seekable, read-only file object over one object; each read that
  misses its small window is one ranged GET (the window grows on sequential reads, up to
  `MAX_READ_AHEAD`, and shrinks back after a seek), so a `SealedReader` over it fetches only
  the segments it decrypts. Reads that stay sequential past that size share one GET of the
  rest of the object, read a window at a time (a streaming `open` is then a few requests).
  Every GET names the ETag the object had when opened: an object replaced meanwhile fails
  instead of mixing two versions.
- `s3_upload(uri)`: a context manager yielding a writable object; a multipart upload in parts
  of `part_size` (S3 wants >= 5 MiB except the last). The object appears only when the block
  ends without an exception (`CompleteMultipartUpload`, or one `PutObject` for less than a
  part); on any failure the upload is aborted, so nothing is left behind. `open` to S3 thus
  completes only after the final segment authenticated, as a local file is renamed only then.

Credentials, region and endpoint come from boto3's standard chain (`AWS_PROFILE`,
`AWS_ACCESS_KEY_ID`..., `AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`).
boto3 (the `s3` or `kms` extra) is imported only when an S3 object is used. Every failure is
an `S3Error` naming the object and what to fix, never a botocore exception.
"""

# boto3 is imported inside functions: the CLI imports this module for any s3:// argument
# only, and the core must not need boto3.
# ruff: noqa: PLC0415

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Iterator
from typing import Any

from .errors import S3Error

__all__ = [
    "DEFAULT_PART_SIZE",
    "DEFAULT_READ_AHEAD",
    "MAX_READ_AHEAD",
    "S3Error",
    "S3ObjectReader",
    "is_s3_uri",
    "parse_s3_uri",
    "s3_client",
    "s3_upload",
]

#: Bytes per uploaded part: 8 MiB parts make objects up to 78 GiB (S3 allows 10,000 parts).
DEFAULT_PART_SIZE = 8 * 1024 * 1024
MAX_PARTS = 10_000
#: First ranged GET after a seek; doubled on each sequential one, up to MAX_READ_AHEAD.
DEFAULT_READ_AHEAD = 256 * 1024
MAX_READ_AHEAD = 8 * 1024 * 1024
_PIECE = 256 * 1024
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_MISSING = frozenset({"NoSuchKey", "404", "NotFound"})
_DENIED = frozenset(
    {"AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"}
)


def is_s3_uri(location: object) -> bool:
    """Whether an INPUT/OUTPUT names an S3 object (`s3://...`), not a local path."""
    return isinstance(location, str) and location.startswith("s3://")


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """`s3://BUCKET/KEY` -> (bucket, key); S3Error for anything else."""
    bucket, slash, key = uri[len("s3://") :].partition("/") if is_s3_uri(uri) else ("", "", "")
    if not _BUCKET.fullmatch(bucket) or not slash or not key:
        raise S3Error(f"{uri!r} is not an S3 object URI: use s3://BUCKET/KEY")
    return bucket, key


def s3_client(*, attempts: int = 4, timeout: float = 30.0) -> Any:
    """A boto3 S3 client: standard credential chain, endpoint settings and retries."""
    try:
        import boto3
        import botocore.config
    except ImportError as exc:
        raise S3Error(f"s3:// needs boto3: pip install 'request_crypto[s3]' ({exc})") from None
    config = botocore.config.Config(
        retries={"mode": "standard", "total_max_attempts": attempts},
        connect_timeout=timeout,
        read_timeout=timeout,
    )
    return _calling("s3://", "create the S3 client", lambda: boto3.client("s3", config=config))


def _calling(uri: str, action: str, call: Any) -> Any:
    """Run one S3 call; botocore's failures become one S3Error saying what to fix."""
    import botocore.exceptions

    try:
        return call()
    except botocore.exceptions.ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        bucket = uri[len("s3://") :].partition("/")[0]
        if code == "NoSuchBucket":
            reason = f"no such bucket {bucket!r}"
        elif code in _MISSING:
            reason = "no such object"
        elif code in _DENIED:
            reason = f"access denied ({code}): check the credentials and the IAM policy"
        elif code in ("PreconditionFailed", "412"):
            reason = "the object changed while it was read; read it again"
        else:
            reason = f"S3 answered {code or 'an error'}: {error.get('Message', '')}".rstrip(": ")
        raise S3Error(f"{uri}: cannot {action}: {reason}") from None
    except botocore.exceptions.NoCredentialsError:
        raise S3Error(
            f"{uri}: no AWS credentials: set AWS_PROFILE or AWS_ACCESS_KEY_ID/"
            "AWS_SECRET_ACCESS_KEY (boto3's usual chain)"
        ) from None
    except botocore.exceptions.NoRegionError:
        raise S3Error(f"{uri}: no AWS region: set AWS_DEFAULT_REGION") from None
    except (botocore.exceptions.BotoCoreError, OSError) as exc:
        # Unreachable endpoint, timeouts, a connection cut mid-body (BotoCoreError's
        # subclasses), or the socket's own OSError while a body streams.
        raise S3Error(
            f"{uri}: cannot {action}: the S3 endpoint failed ({type(exc).__name__}: {exc})"
        ) from None


class S3ObjectReader(io.RawIOBase):
    """A seekable, read-only file object over one S3 object (see the module docstring).

    `requests` and `bytes_fetched` count the GETs and the bytes they returned.
    """

    def __init__(
        self, uri: str, *, client: Any = None, read_ahead: int = DEFAULT_READ_AHEAD
    ) -> None:
        super().__init__()
        self.uri = uri
        self._bucket, self._key = parse_s3_uri(uri)
        self._client = client or s3_client()
        try:
            head = _calling(
                uri,
                "read it",
                lambda: self._client.head_object(Bucket=self._bucket, Key=self._key),
            )
        except S3Error:
            # HEAD answers a bare 404 for a missing bucket too: a listing names which.
            _calling(
                uri, "read it", lambda: self._client.list_objects_v2(Bucket=self._bucket, MaxKeys=0)
            )
            raise
        self.size = int(head["ContentLength"])
        self._etag = str(head.get("ETag", ""))
        self._first_read = max(1, read_ahead)
        self._read_ahead = self._first_read
        self._buffer = bytearray()
        self._window = memoryview(self._buffer)
        self._window_start = 0
        self._position = 0
        self._stream: Any = None  # the body of an open GET, at offset _stream_at
        self._stream_at = self._stream_end = 0
        self.requests = 0
        self.bytes_fetched = 0

    def readable(self) -> bool:
        """Always."""
        return True

    def seekable(self) -> bool:
        """Always: a read at any offset is one ranged GET."""
        return True

    def tell(self) -> int:
        """The offset the next read starts at."""
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Move to an offset; nothing is fetched until the next read."""
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self.size}.get(whence)
        if base is None:
            raise ValueError(f"invalid whence ({whence})")
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._position = base + offset
        return self._position

    def readinto(self, buffer: Any) -> int:
        """Fill `buffer` from the current offset: from the window, else one ranged GET."""
        out = memoryview(buffer).cast("B")
        if not out or self._position >= self.size:
            return 0
        offset = self._position - self._window_start
        if not 0 <= offset < len(self._window):
            self._fetch(len(out))
            offset = 0
        count = min(len(out), len(self._window) - offset)
        out[:count] = self._window[offset : offset + count]
        self._position += count
        return count

    def _fetch(self, wanted: int) -> None:
        """Fill the window from the current offset: from the open stream if it is there,
        else one ranged GET of max(wanted, read-ahead) bytes; once sequential reads reach
        MAX_READ_AHEAD, one GET of the rest of the object, read a window at a time."""
        sequential = self._position == self._window_start + len(self._window) and self._window
        self._read_ahead = (
            min(self._read_ahead * 2, MAX_READ_AHEAD) if sequential else self._first_read
        )
        self._window = memoryview(b"")
        if self._stream is not None and self._stream_at != self._position:
            self._close_stream()
        size = min(self.size - self._position, max(wanted, self._read_ahead))
        if self._stream is None:
            streaming = self._read_ahead == MAX_READ_AHEAD and size < self.size - self._position
            last = self.size - 1 if streaming else self._position + size - 1
            arguments = {
                "Bucket": self._bucket,
                "Key": self._key,
                "Range": f"bytes={self._position}-{last}",
            }
            if self._etag:
                arguments["IfMatch"] = self._etag
            body = _calling(
                self.uri, "read it", lambda: self._client.get_object(**arguments)["Body"]
            )
            self.requests += 1
            self._stream, self._stream_at, self._stream_end = body, self._position, last + 1
        if len(self._buffer) < size:
            self._buffer = bytearray(size)  # grows to MAX_READ_AHEAD at most, then reused
        data = _calling(self.uri, "read it", lambda: self._read_stream(size))
        self.bytes_fetched += len(data)
        if len(data) != size:
            self._close_stream()
            raise S3Error(
                f"{self.uri}: cannot read it: S3 returned {len(data)} bytes for a range of "
                f"{size}; the object changed or the endpoint is faulty"
            )
        self._window, self._window_start = data, self._position
        self._stream_at += size
        if self._stream_at >= self._stream_end:
            self._close_stream()

    def _read_stream(self, size: int) -> memoryview:
        """`size` bytes of the open body, in pieces, into the one reused buffer (a whole-body
        read() would hold the body twice; a buffer per GET leaves the allocator several)."""
        assert self._stream is not None
        window = memoryview(self._buffer)
        filled = 0
        while filled < size and (piece := self._stream.read(min(size - filled, _PIECE))):
            window[filled : filled + len(piece)] = piece
            filled += len(piece)
        return window[:filled]

    def _close_stream(self) -> None:
        if self._stream is not None:
            with contextlib.suppress(Exception):
                self._stream.close()
            self._stream = None

    def close(self) -> None:
        """Close the open GET, if any."""
        self._close_stream()
        super().close()


class _Upload:
    """The writable side of `s3_upload`: buffers one part, sends each full part."""

    def __init__(self, client: Any, uri: str, part_size: int) -> None:
        self._client = client
        self.uri = uri
        self._bucket, self._key = parse_s3_uri(uri)
        self._part_size = part_size
        self._buffer = bytearray(part_size)  # one part, reused: sent as is, never copied
        self._filled = 0
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []

    def write(self, data: Any) -> int:
        """Buffer `data`; every full part goes to S3 at once."""
        view = memoryview(data).cast("B")
        while view:
            count = min(len(view), self._part_size - self._filled)
            self._buffer[self._filled : self._filled + count] = view[:count]
            self._filled += count
            view = view[count:]
            if self._filled == self._part_size:
                self._send(self._buffer)
                self._filled = 0
        return len(data)

    def _send(self, part: bytes | bytearray) -> None:
        if self._upload_id is None:
            answer = self._call(
                "start the upload",
                lambda: self._client.create_multipart_upload(Bucket=self._bucket, Key=self._key),
            )
            self._upload_id = str(answer["UploadId"])
        number = len(self._parts) + 1
        if number > MAX_PARTS:
            raise S3Error(
                f"{self.uri}: the object would need over {MAX_PARTS} parts of "
                f"{self._part_size} bytes; S3 allows no more"
            )
        answer = self._call(
            f"upload part {number}",
            lambda: self._client.upload_part(
                Bucket=self._bucket,
                Key=self._key,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=part,
            ),
        )
        self._parts.append({"PartNumber": number, "ETag": answer["ETag"]})

    def complete(self) -> None:
        """Make the object: the last part and CompleteMultipartUpload, or one PutObject."""
        rest = bytes(self._buffer[: self._filled])
        self._buffer, self._filled = bytearray(), 0
        if self._upload_id is None:
            self._call(
                "write it",
                lambda: self._client.put_object(Bucket=self._bucket, Key=self._key, Body=rest),
            )
            return
        if rest or not self._parts:
            self._send(rest)
        self._call(
            "complete the upload",
            lambda: self._client.complete_multipart_upload(
                Bucket=self._bucket,
                Key=self._key,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": self._parts},
            ),
        )
        self._upload_id = None

    def abort(self) -> None:
        """Abort the multipart upload, if one started: S3 then drops the parts sent."""
        self._buffer, self._filled = bytearray(), 0
        if self._upload_id is not None:
            upload_id, self._upload_id = self._upload_id, None
            with contextlib.suppress(S3Error):
                self._call(
                    "abort the upload",
                    lambda: self._client.abort_multipart_upload(
                        Bucket=self._bucket, Key=self._key, UploadId=upload_id
                    ),
                )

    def _call(self, action: str, call: Any) -> Any:
        return _calling(self.uri, action, call)


@contextlib.contextmanager
def s3_upload(uri: str, *, client: Any = None, part_size: int | None = None) -> Iterator[_Upload]:
    """Write the object `uri`: it appears only if the block ends without an exception.

    `part_size` defaults to DEFAULT_PART_SIZE (read at each call).
    """
    part_size = DEFAULT_PART_SIZE if part_size is None else part_size
    if part_size < 1:
        raise S3Error(f"part_size must be positive, not {part_size}")
    parse_s3_uri(uri)
    upload = _Upload(client or s3_client(), uri, part_size)
    try:
        yield upload
        upload.complete()
    except BaseException:
        upload.abort()
        raise
