"""Sealed files (request_crypto.sealed): round trips, every tamper case, random access, limits."""

from __future__ import annotations

import io
import os
import random
import stat
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from request_crypto import JWKManager, SealedReader, inspect_sealed, open_sealed, seal
from request_crypto.errors import (
    DecryptionError,
    InvalidArgumentError,
    MalformedBodyError,
    RequestCryptoError,
)
from request_crypto.sealed import (
    MAGIC,
    MAX_HEADER_SIZE,
    MAX_RECIPIENTS,
    HeaderAuthenticationError,
    NoRecipientKeyError,
    SealedFormatError,
    SegmentError,
    TruncatedError,
)

SEG = 1024  # small segments: many segments from little data
TAG = 16


@pytest.fixture(scope="module")
def keys() -> JWKManager:
    """Three private keys: two recipients and an outsider, one of them legacy RSA-OAEP."""
    manager = JWKManager()
    manager.add_key("alice", alg="RSA-OAEP-256")
    manager.add_key("bob", alg="RSA-OAEP")
    manager.add_key("carol", alg="RSA-OAEP-256")
    return manager


def only(keys: JWKManager, *kids: str) -> JWKManager:
    return JWKManager({"keys": [keys.get_private_jwk(kid) for kid in kids]})


def public(keys: JWKManager, *kids: str) -> list[dict[str, str]]:
    return [keys.get_public_jwk(kid) or {} for kid in kids]


def sealed_bytes(keys: JWKManager, data: bytes, *kids: str, segment_size: int = SEG) -> bytes:
    out = io.BytesIO()
    assert seal(
        io.BytesIO(data), out, public(keys, *(kids or ("alice",))), segment_size=segment_size
    ) == len(data)
    return out.getvalue()


def opened(blob: bytes, keys: JWKManager) -> bytes:
    out = io.BytesIO()
    assert open_sealed(io.BytesIO(blob), out, keys) == len(out.getvalue())
    return out.getvalue()


def header_size(blob: bytes) -> int:
    return blob.index(b"\nmac ") + len(b"\nmac ") + 43 + 1


def refuses(
    blob: bytes, keys: JWKManager, error: type[Exception] = RequestCryptoError
) -> Exception:
    """Opening fails with `error` and writes nothing."""
    out = io.BytesIO()
    with pytest.raises(error) as caught:
        open_sealed(io.BytesIO(blob), out, keys)
    assert out.getvalue() == b""
    assert isinstance(caught.value, RequestCryptoError)
    return caught.value


# ---------------------------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize(
    ("size", "segment_size"),
    [
        (0, SEG),
        (1, SEG),
        (SEG - 1, SEG),
        (SEG, SEG),
        (SEG + 1, SEG),
        (3 * SEG, SEG),
        (3 * SEG + 5, SEG),
        (65535, 65536),
        (65536, 65536),
        (65537, 65536),
        # several read batches (1 MiB each): the final-segment look-ahead across batches
        ((1 << 20) - 1, SEG),
        (1 << 20, SEG),
        ((1 << 20) + 1, SEG),
        ((2 << 20) + 3, 65536),
        (2 << 20, 65536),
    ],
)
def test_round_trip_sizes(keys: JWKManager, size: int, segment_size: int) -> None:
    data = os.urandom(size)
    blob = sealed_bytes(keys, data, segment_size=segment_size)
    segments = max(-(-size // segment_size), 1)
    assert len(blob) == header_size(blob) + size + segments * TAG
    assert opened(blob, keys) == data
    info = inspect_sealed(io.BytesIO(blob))
    assert (info.plaintext_length, info.segments, info.segment_size) == (
        size,
        segments,
        segment_size,
    )


def test_each_recipient_opens_alone(keys: JWKManager) -> None:
    data = os.urandom(5000)
    blob = sealed_bytes(keys, data, "alice", "bob")
    assert opened(blob, only(keys, "alice")) == data
    assert opened(blob, only(keys, "bob")) == data
    refuses(blob, only(keys, "carol"), NoRecipientKeyError)
    assert inspect_sealed(io.BytesIO(blob)).kids == ("alice", "bob")
    assert inspect_sealed(io.BytesIO(blob)).algs == ("RSA-OAEP-256", "RSA-OAEP")


def test_header_is_as_documented(keys: JWKManager) -> None:
    blob = sealed_bytes(keys, b"hello", "alice", "bob")
    lines = blob[: header_size(blob)].split(b"\n")
    assert lines[0] + b"\n" == MAGIC
    assert lines[1] == b"segment-size 1024"
    assert lines[2].startswith(b"salt ") and len(lines[2]) == 5 + 43
    assert [line.split(b" ")[0] for line in lines[3:5]] == [b"recipient", b"recipient"]
    assert lines[5].startswith(b"mac ") and len(lines[5]) == 4 + 43
    assert lines[6] == b""


def test_two_seals_differ(keys: JWKManager) -> None:
    """A fresh file key and salt per file: the same plaintext never seals the same twice."""
    first, second = sealed_bytes(keys, b"same"), sealed_bytes(keys, b"same")
    assert first[header_size(first) :] != second[header_size(second) :]


def test_source_with_read_only(keys: JWKManager) -> None:
    """A source without readinto (only read) still works."""

    class ReadOnly:
        def __init__(self, data: bytes) -> None:
            self._inner = io.BytesIO(data)

        def read(self, size: int) -> bytes:
            return self._inner.read(min(size, 999))  # short reads too

    data = os.urandom(10 * SEG + 3)
    out = io.BytesIO()
    seal(ReadOnly(data), out, public(keys, "alice"), segment_size=SEG)
    back = io.BytesIO()
    open_sealed(ReadOnly(out.getvalue()), back, keys)
    assert back.getvalue() == data


# ---------------------------------------------------------------------------------------------
# Tampering: truncation, bit flips, reordering, duplication, appending, splicing


@pytest.fixture(scope="module")
def three(keys: JWKManager) -> tuple[bytes, bytes]:
    """(plaintext, sealed) of three segments, the last one short."""
    data = os.urandom(2 * SEG + 100)
    return data, sealed_bytes(keys, data)


def segments_of(blob: bytes) -> tuple[bytes, list[bytes]]:
    start = header_size(blob)
    body = blob[start:]
    return blob[:start], [body[i : i + SEG + TAG] for i in range(0, len(body), SEG + TAG)]


def test_truncation_at_every_boundary(keys: JWKManager, three: tuple[bytes, bytes]) -> None:
    _, blob = three
    start = header_size(blob)
    header_cuts = [
        0,
        1,
        len(MAGIC) - 1,
        len(MAGIC),
        *[i + 1 for i, b in enumerate(blob[:start]) if b == 10],
    ]
    for cut in header_cuts[:-1]:
        refuses(blob[:cut], keys, SealedFormatError)
    refuses(blob[:start], keys, TruncatedError)  # the header alone
    for boundary in (start + SEG + TAG, start + 2 * (SEG + TAG)):
        error = refuses(blob[:boundary], keys, TruncatedError)
        assert "ends early" in str(error)
        for near in (boundary - 1, boundary + 1, boundary - TAG, boundary + TAG - 1):
            refuses(blob[:near], keys, SegmentError)
    for cut in range(len(blob) - TAG - 2, len(blob)):
        refuses(blob[:cut], keys, SegmentError)


def test_empty_input_is_not_a_sealed_file(keys: JWKManager) -> None:
    error = refuses(b"", keys, SealedFormatError)
    assert "empty" in str(error)
    with pytest.raises(SealedFormatError):
        inspect_sealed(io.BytesIO(b""))


def test_flipped_bit_anywhere(keys: JWKManager, three: tuple[bytes, bytes]) -> None:
    _, blob = three
    start = header_size(blob)
    positions = set(range(0, start, 3)) | set(range(start, len(blob), 11))
    positions |= {
        start + i * (SEG + TAG) + j for i in range(3) for j in (0, SEG - 1, SEG + TAG - 1)
    }
    positions = {p for p in positions if p < len(blob)}
    for position in sorted(positions):
        for bit in (0, 7):
            tampered = bytearray(blob)
            tampered[position] ^= 1 << bit
            refuses(bytes(tampered), keys)
    assert len(positions) > 300


def test_reordered_duplicated_dropped_appended(
    keys: JWKManager, three: tuple[bytes, bytes]
) -> None:
    _, blob = three
    header, (first, second, last) = segments_of(blob)
    refuses(header + second + first + last, keys, SegmentError)
    refuses(header + first + first + second + last, keys, SegmentError)
    refuses(header + first + last, keys, SegmentError)
    refuses(header + first + second + last + last, keys, SegmentError)
    refuses(blob + b"\x00", keys, SegmentError)
    refuses(blob + blob[header_size(blob) :], keys, SegmentError)


def test_spliced_segment_from_another_file(keys: JWKManager) -> None:
    """Same key, same position: the per-file payload key still tells the files apart."""
    one, other = sealed_bytes(keys, os.urandom(3 * SEG)), sealed_bytes(keys, os.urandom(3 * SEG))
    header, parts = segments_of(one)
    _, foreign = segments_of(other)
    for index in range(3):
        spliced = parts.copy()
        spliced[index] = foreign[index]
        refuses(header + b"".join(spliced), keys, SegmentError)
    # another file's header over this file's data
    other_header, _ = segments_of(other)
    refuses(other_header + b"".join(parts), keys, SegmentError)


def test_header_retargeted_to_another_recipient(keys: JWKManager) -> None:
    """Swapping in another file's recipient (a valid JWE for bob) fails the header MAC."""
    mine = sealed_bytes(keys, b"for alice and bob", "alice", "bob")
    theirs = sealed_bytes(keys, b"someone else's", "bob")
    bob_line = next(line for line in theirs.split(b"\n") if b'"bob"' in _header_json(line))
    lines = mine.split(b"\n")
    index = next(i for i, line in enumerate(lines) if b'"bob"' in _header_json(line))
    lines[index] = bob_line
    retargeted = b"\n".join(lines)
    # the MAC covers every recipient: neither can open the altered header
    refuses(retargeted, only(keys, "bob"), HeaderAuthenticationError)
    refuses(retargeted, only(keys, "alice"), HeaderAuthenticationError)
    assert opened(mine, only(keys, "bob")) == b"for alice and bob"


def _header_json(line: bytes) -> bytes:
    import base64

    if not line.startswith(b"recipient "):
        return b""
    protected = line[len(b"recipient ") :].split(b".")[0]
    return base64.urlsafe_b64decode(protected + b"=" * (-len(protected) % 4))


def test_wrong_key_same_kid(keys: JWKManager) -> None:
    blob = sealed_bytes(keys, b"secret")
    impostor = JWKManager()
    impostor.add_key("alice", alg="RSA-OAEP-256")
    refuses(blob, impostor, HeaderAuthenticationError)
    refuses(blob, only(keys, "bob", "carol"), NoRecipientKeyError)
    refuses(blob, JWKManager({"keys": public(keys, "alice")}), NoRecipientKeyError)


# ---------------------------------------------------------------------------------------------
# Absurd headers: refused before any RSA work


@pytest.fixture
def no_rsa(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*_: Any) -> bytes:
        raise AssertionError("RSA work on a header that should have been refused unread")

    monkeypatch.setattr("request_crypto.sealed.unwrap_file_key", fail)


def _replace_line(blob: bytes, prefix: bytes, new: bytes) -> bytes:
    lines = blob.split(b"\n")
    index = next(i for i, line in enumerate(lines) if line.startswith(prefix))
    lines[index] = new
    return b"\n".join(lines)


@pytest.mark.usefixtures("no_rsa")
def test_absurd_headers_refused_unread(keys: JWKManager, three: tuple[bytes, bytes]) -> None:
    _, blob = three
    recipient = next(line for line in blob.split(b"\n") if line.startswith(b"recipient "))
    many = blob.replace(recipient, b"\n".join([recipient] * (MAX_RECIPIENTS + 1)))
    assert "limit" in str(refuses(many, keys, SealedFormatError))
    endless = MAGIC + b"segment-size 1024\n" + b"x" * (MAX_HEADER_SIZE + 10)
    assert "longer than" in str(refuses(endless, keys, SealedFormatError))
    for bad in (
        b"segment-size 1000",
        b"segment-size 01024",
        b"segment-size 1073741824",
        b"segment-size -1024",
        b"segment-size",
    ):
        refuses(_replace_line(blob, b"segment-size", bad), keys, SealedFormatError)
    for prefix in (b"salt", b"mac"):
        refuses(_replace_line(blob, prefix, prefix + b" too-short"), keys, SealedFormatError)
        refuses(
            _replace_line(blob, prefix, prefix + b" " + b"A" * 42 + b"B"), keys, SealedFormatError
        )
    duplicated = blob.replace(recipient, recipient + b"\n" + recipient)
    assert "twice" in str(refuses(duplicated, keys, SealedFormatError))
    refuses(blob.replace(recipient, b"recipient not.a.jwe"), keys, MalformedBodyError)
    refuses(blob.replace(recipient + b"\n", b""), keys, SealedFormatError)
    refuses(b"request-crypto-sealed/v2\n" + blob[len(MAGIC) :], keys, SealedFormatError)
    refuses(b"age-encryption.org/v1\n" + blob[len(MAGIC) :], keys, SealedFormatError)


@pytest.mark.usefixtures("no_rsa")
def test_recipient_must_be_a256gcm_with_kid(keys: JWKManager) -> None:
    import base64
    import json

    blob = sealed_bytes(keys, b"x")
    recipient = next(line for line in blob.split(b"\n") if line.startswith(b"recipient "))
    token = recipient[len(b"recipient ") :].split(b".")
    for header in (
        {"alg": "RSA-OAEP-256", "enc": "A128GCM", "kid": "alice"},
        {"alg": "RSA-OAEP-256", "enc": "A256GCM"},
        {"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": "alice", "zip": "DEF"},
        {"alg": "RSA1_5", "enc": "A256GCM", "kid": "alice"},
    ):
        protected = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=")
        forged = b"recipient " + b".".join([protected, *token[1:]])
        refuses(blob.replace(recipient, forged), keys, MalformedBodyError)


def test_absurd_segment_count(keys: JWKManager) -> None:
    """A size implying more than 2**32 segments is refused from the arithmetic alone."""
    blob = sealed_bytes(keys, b"tiny")
    start = header_size(blob)

    class Huge(io.BytesIO):
        def seek(self, offset: int, whence: int = 0) -> int:
            if whence == io.SEEK_END:
                return start + (2**32 + 1) * (SEG + TAG)
            return super().seek(offset, whence)

    with pytest.raises(SealedFormatError, match="limit"):
        inspect_sealed(Huge(blob))
    with pytest.raises(SealedFormatError, match="limit"):
        SealedReader(Huge(blob), keys)


def test_sizes_no_writer_makes(keys: JWKManager) -> None:
    blob = sealed_bytes(keys, os.urandom(SEG))  # one full final segment
    for extra in (b"x", b"x" * TAG):  # a final segment shorter than a tag, or an empty one
        with pytest.raises(SealedFormatError):
            inspect_sealed(io.BytesIO(blob + extra))
        refuses(blob + extra, keys, SegmentError)


# ---------------------------------------------------------------------------------------------
# Random access


class CountingReader(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.bytes_read = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.bytes_read += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        count = super().readinto(buffer)
        self.bytes_read += count
        return count


def test_random_access_matches_plaintext(keys: JWKManager) -> None:
    data = os.urandom(200 * SEG + 77)
    blob = sealed_bytes(keys, data)
    reader = SealedReader(io.BytesIO(blob), keys)
    assert reader.length == len(data) and reader.kids == ("alice",) and reader.segment_size == SEG
    rng = random.Random(1616)
    for _ in range(300):
        offset = rng.randrange(len(data) + 10)
        size = rng.choice([0, 1, 15, SEG - 1, SEG, SEG + 1, 5 * SEG, rng.randrange(20 * SEG)])
        assert reader.seek(offset) == offset
        assert reader.read(size) == data[offset : offset + size]
        assert reader.tell() == min(offset + size, max(offset, len(data))) or offset > len(data)
    reader.seek(-10, io.SEEK_END)
    assert reader.read() == data[-10:]
    reader.seek(5)
    reader.seek(7, io.SEEK_CUR)
    assert reader.read(3) == data[12:15]
    with pytest.raises(ValueError, match="negative"):
        reader.seek(-1)
    reader.seek(0)
    assert io.BufferedReader(reader).read() == data


def test_random_access_reads_only_what_it_needs(keys: JWKManager) -> None:
    data = os.urandom(500 * SEG)
    blob = sealed_bytes(keys, data)
    source = CountingReader(blob)
    reader = SealedReader(source, keys)
    opening = source.bytes_read
    assert opening <= header_size(blob) + 16 * 1024 + SEG + TAG  # header chunk + final segment
    reader.seek(250 * SEG + 10)
    assert reader.read(100) == data[250 * SEG + 10 : 250 * SEG + 110]
    assert source.bytes_read - opening == SEG + TAG  # exactly one segment


def test_reader_authenticates_length_up_front(keys: JWKManager, three: tuple[bytes, bytes]) -> None:
    _, blob = three
    cut = header_size(blob) + 2 * (SEG + TAG)
    with pytest.raises(TruncatedError):
        SealedReader(io.BytesIO(blob[:cut]), keys)
    tampered = bytearray(blob)
    tampered[header_size(blob) + 5] ^= 1  # the first segment: found when read, not before
    reader = SealedReader(io.BytesIO(bytes(tampered)), keys)
    reader.seek(SEG)
    assert reader.read(10) == three[0][SEG : SEG + 10]
    reader.seek(0)
    with pytest.raises(SegmentError):
        reader.read(1)


def test_reader_open_path_closes_file(keys: JWKManager, tmp_path: Path) -> None:
    data = os.urandom(3000)
    path = tmp_path / "f.sealed"
    path.write_bytes(sealed_bytes(keys, data))
    with SealedReader.open(path, keys) as reader:
        assert reader.read() == data
        handle = reader._src  # the file it owns
    assert handle.closed
    with pytest.raises(InvalidArgumentError):
        SealedReader(iter([b"x"]), keys)


# ---------------------------------------------------------------------------------------------
# Outputs to a path: whole or nothing


def test_open_to_path_leaves_nothing_on_failure(
    keys: JWKManager, tmp_path: Path, three: tuple[bytes, bytes]
) -> None:
    data, blob = three
    target = tmp_path / "out.bin"
    tampered = bytearray(blob)
    tampered[-1] ^= 1
    with pytest.raises(SegmentError):
        open_sealed(io.BytesIO(bytes(tampered)), target, keys)
    assert list(tmp_path.iterdir()) == []
    target.write_bytes(b"old")
    with pytest.raises(SegmentError):
        open_sealed(io.BytesIO(bytes(tampered)), target, keys)
    assert list(tmp_path.iterdir()) == [target] and target.read_bytes() == b"old"
    target.unlink()
    assert open_sealed(io.BytesIO(blob), target, keys) == len(data)
    assert target.read_bytes() == data
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    sealed_path = tmp_path / "again.sealed"
    seal(io.BytesIO(data), sealed_path, public(keys, "alice"))
    assert stat.S_IMODE(sealed_path.stat().st_mode) == 0o644


def test_output_to_fifo_and_symlink_stay_what_they_are(keys: JWKManager, tmp_path: Path) -> None:
    """A device or FIFO is written in place, never replaced by a renamed file."""
    data = os.urandom(5000)
    blob = sealed_bytes(keys, data)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    open_sealed(io.BytesIO(blob), fifo, keys)
    reader.join(timeout=30)
    assert received == [data]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    real = tmp_path / "real.bin"
    real.write_bytes(b"old")
    link = tmp_path / "link.bin"
    link.symlink_to(real)
    open_sealed(io.BytesIO(blob), link, keys)
    assert link.is_symlink() and real.read_bytes() == data


# ---------------------------------------------------------------------------------------------
# Arguments


def test_bad_arguments(keys: JWKManager) -> None:
    with pytest.raises(InvalidArgumentError, match="list of public JWKs"):
        seal(io.BytesIO(b""), io.BytesIO(), keys.get_public_jwks())  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="1 to"):
        seal(io.BytesIO(b""), io.BytesIO(), [])
    with pytest.raises(InvalidArgumentError, match="power of two"):
        seal(io.BytesIO(b""), io.BytesIO(), public(keys, "alice"), segment_size=1000)
    with pytest.raises(InvalidArgumentError, match="destination"):
        seal(io.BytesIO(b""), 42, public(keys, "alice"))  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="source"):
        seal(42, io.BytesIO(), public(keys, "alice"))


def test_errors_are_the_documented_classes() -> None:
    assert issubclass(SegmentError, DecryptionError) and issubclass(TruncatedError, SegmentError)
    assert issubclass(HeaderAuthenticationError, DecryptionError)
    assert issubclass(SealedFormatError, MalformedBodyError)


# ---------------------------------------------------------------------------------------------
# Properties


@given(
    data=st.binary(max_size=5 * SEG),
    cut=st.integers(min_value=0),
    position=st.integers(min_value=0),
    bit=st.integers(min_value=0, max_value=7),
)
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_any_change_is_refused(
    keys: JWKManager, data: bytes, cut: int, position: int, bit: int
) -> None:
    """Whatever the plaintext: it round-trips, and any truncation or flipped bit is refused."""
    blob = sealed_bytes(keys, data)
    assert opened(blob, keys) == data
    refuses(blob[: cut % len(blob)], keys)
    tampered = bytearray(blob)
    tampered[position % len(blob)] ^= 1 << bit
    refuses(bytes(tampered), keys)


def test_file_sealer_checks_what_it_wrote_without_a_private_key(keys: JWKManager) -> None:
    """The archive sink's read-back: any change, cut, addition or other file is refused."""
    from request_crypto import FileSealer

    data = os.urandom(3 * SEG + 100)
    sealer = FileSealer(JWKManager({"keys": public(keys, "alice", "bob")}), segment_size=SEG)
    out = io.BytesIO()
    assert sealer.write(io.BytesIO(data), out.write) == len(data)
    written = out.getvalue()
    assert sealer.check(io.BytesIO(written)) == len(data)
    assert open_sealed(io.BytesIO(written), io.BytesIO(), only(keys, "bob")) == len(data)
    with pytest.raises(InvalidArgumentError, match="one file"):
        sealer.write(io.BytesIO(data), io.BytesIO().write)  # never the same key and nonces twice
    other = sealed_bytes(keys, data, "alice")
    cut = written[: len(written) - SEG // 2]
    for changed in (
        other,
        written + b"x",
        written + written[-(SEG + TAG) :],
        written[:-1],
        cut,
        written[: -(100 + TAG)],  # a whole final segment gone
        written[:200] + bytes([written[200] ^ 1]) + written[201:],
        written[:-5] + bytes([written[-5] ^ 1]) + written[-4:],
    ):
        with pytest.raises(RequestCryptoError):
            sealer.check(io.BytesIO(changed))
