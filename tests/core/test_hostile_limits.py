"""Issue 5: bounded work and memory: zip bombs, huge keys and bodies refused before any
expensive work, deep nesting.
"""

from __future__ import annotations

import base64
import os
import threading
import time
import tracemalloc
import zlib
from collections.abc import Callable
from typing import Any

import pytest

from request_crypto import (
    RequestDecryptor,
)
from request_crypto._b64 import b64url_encode
from request_crypto.errors import (
    DecryptionError,
    MalformedBodyError,
    PayloadTooLargeError,
    UnsupportedAlgorithmError,
)
from request_crypto.request import DEFAULT_MAX_BODY_SIZE, DEFAULT_MAX_INFLATED_SIZE
from tests.core.hostile import (
    Kit,
    MiB,
    elastic,
    header,
    token,
    wrapped_key,
)

# -- bounded work and memory ----------------------------------------------------------------


def zip_bomb(mib: int = 1024) -> bytes:
    """Raw DEFLATE of `mib` MiB of zeros (1 GiB: ~1 MB), built in milliseconds.

    A full flush ends a segment byte-aligned with no reference to earlier data, so one
    compressed MiB can be repeated; an empty final block closes the stream.
    """
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    segment = compressor.compress(b"\0" * MiB) + compressor.flush(zlib.Z_FULL_FLUSH)
    final = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS).flush()
    return segment * mib + final


def test_zip_bomb_is_what_it_claims() -> None:
    # Inflating the whole GiB here would take seconds: check the construction on 16 MiB, and
    # that the GiB bomb is the same construction, 1,024 segments long.
    small, bomb = zip_bomb(16), zip_bomb()
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    assert inflater.decompress(small) == b"\0" * (16 * MiB)
    assert inflater.eof and not inflater.unused_data
    segment = (len(small) - 2) // 16
    assert bomb == small[:segment] * 1024 + small[-2:]
    assert len(bomb) < 2 * MiB


def _measure(function: Callable[[], Any]) -> tuple[BaseException | None, float, int]:
    tracemalloc.start()
    started = time.perf_counter()
    try:
        function()
    except BaseException as exc:
        error: BaseException | None = exc
    else:
        error = None
    elapsed = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return error, elapsed, peak


def test_zip_bomb_jwe_refused_fast_within_the_limit(kit: Kit) -> None:
    """JWKManager.decrypt (a general JWE API) inflates, stopping at its limit."""
    body = token(kit, header(zip="DEF"), zip_bomb())
    error, elapsed, peak = _measure(
        lambda: kit.keys.decrypt(body, max_plaintext=DEFAULT_MAX_INFLATED_SIZE)
    )
    assert isinstance(error, PayloadTooLargeError)
    assert error.limit == DEFAULT_MAX_INFLATED_SIZE
    assert elapsed < 1.0, f"{elapsed:.2f}s"
    # The limit, plus the ~1.4 MB body decoded and decrypted; never twice the limit.
    assert peak < DEFAULT_MAX_INFLATED_SIZE + 8 * MiB, f"peak {peak / MiB:.1f} MiB"


def test_zip_bomb_memory_follows_the_limit_not_the_bomb(kit: Kit) -> None:
    body = token(kit, header(zip="DEF"), zip_bomb())
    error, elapsed, peak = _measure(lambda: kit.keys.decrypt(body, max_plaintext=MiB))
    assert isinstance(error, PayloadTooLargeError)
    assert elapsed < 0.5
    assert peak < 12 * MiB, f"peak {peak / MiB:.1f} MiB"


def test_zip_bomb_as_jwe_body_is_refused_unread(
    kit: Kit, no_expensive_work: Callable[[], list[str]]
) -> None:
    """Issue 11: the `jwe` wire format has no compression, so an 87 KB body that inflates to
    64 MiB of `[{},{},...]` is refused before any RSA or AES work, whatever the limits."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    bomb = compressor.compress(b"[" + b"{}," * (22 * MiB) + b"{}]") + compressor.flush()
    assert len(bomb) < 100_000
    body = token(kit, header(zip="DEF"), bomb)
    roomy = RequestDecryptor(kit.keys, max_inflated_size=256 * MiB, max_json_values=10**9)
    attempted = no_expensive_work()
    for decryptor in (kit.decryptor, roomy):
        error, _, peak = _measure(lambda d=decryptor: d.decrypt(body))
        assert type(error) is UnsupportedAlgorithmError, error
        assert "'zip'" in str(error)
        assert peak < 2 * MiB, f"peak {peak / MiB:.1f} MiB"
        with pytest.raises(UnsupportedAlgorithmError):
            decryptor.get_jwk_metadata(body)
    assert attempted == []


def test_zip_bomb_as_elastic_passphrase(kit: Kit) -> None:
    key = wrapped_key(kit, b"", raw=zip_bomb())
    body = elastic(kit, key=key)
    decryptor = RequestDecryptor(kit.keys, max_wrapped_key_size=4 * MiB)
    error, elapsed, peak = _measure(lambda: decryptor.decrypt(body))
    assert isinstance(error, DecryptionError)
    assert elapsed < 0.5
    assert peak < 16 * MiB, f"peak {peak / MiB:.1f} MiB"
    # At the default wrapped-key limit it never gets that far.
    with pytest.raises(PayloadTooLargeError):
        kit.decryptor.decrypt(body)


class _Expensive(Exception):
    pass


@pytest.fixture
def no_expensive_work(monkeypatch: pytest.MonkeyPatch) -> Callable[[], list[str]]:
    """Call it to make any PBKDF2, RSA or JWE parsing raise (not a library error) from then
    on; it returns the list of what was attempted."""
    calls: list[str] = []

    def spy(name: str) -> Callable[..., Any]:
        def refuse(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            raise _Expensive(name)

        return refuse

    def arm() -> list[str]:
        monkeypatch.setattr("request_crypto.formats.nodecrypto._derive_key", spy("pbkdf2"))
        monkeypatch.setattr("request_crypto.keys.source.decrypt_compact", spy("rsa"))
        monkeypatch.setattr("request_crypto.keys.source.parse_compact", spy("parse"))
        return calls

    return arm


@pytest.mark.parametrize(
    ("build", "limits", "error"),
    [
        pytest.param(
            lambda k: token(k, header()),
            {"max_body_size": 300},
            PayloadTooLargeError,
            id="jwe-over-body-limit",
        ),
        pytest.param(
            elastic,
            {"max_body_size": 900},
            PayloadTooLargeError,
            id="elastic-over-body-limit",
        ),
        pytest.param(
            lambda k: elastic(k, key=wrapped_key(k, b"", raw=os.urandom(7000))),
            {},
            PayloadTooLargeError,
            id="elastic-key-over-limit",
        ),
        pytest.param(
            lambda k: b64url_encode(b"[" * 10_000),
            {},
            MalformedBodyError,
            id="elastic-not-json",
        ),
        pytest.param(lambda k: "a.b.c", {}, MalformedBodyError, id="wrong-part-count"),
        # The payload's layout is checked before its wrapped key is opened.
        pytest.param(
            lambda k: elastic(k, payload=base64.b64encode(b"x" * 91).decode()),
            {},
            MalformedBodyError,
            id="elastic-payload-too-short",
        ),
        pytest.param(
            lambda k: elastic(k, payload="not base64!"),
            {},
            MalformedBodyError,
            id="elastic-payload-not-base64",
        ),
    ],
)
def test_refused_before_any_expensive_work(
    kit: Kit,
    no_expensive_work: Callable[[], list[str]],
    build: Callable[[Kit], Any],
    limits: dict[str, int],
    error: type[Exception],
) -> None:
    body = build(kit)
    decryptor = RequestDecryptor(kit.keys, **limits)
    attempted = no_expensive_work()
    with pytest.raises(error):
        decryptor.decrypt(body)
    with pytest.raises(error):
        decryptor.get_jwk_metadata(body)
    assert attempted == []


def test_default_body_limit_refuses_a_huge_body_at_once(
    kit: Kit, no_expensive_work: Callable[[], list[str]]
) -> None:
    attempted = no_expensive_work()
    huge_elastic = "A" * (DEFAULT_MAX_BODY_SIZE + 1)
    huge_jwe = b"A.A.A.A." + b"A" * DEFAULT_MAX_BODY_SIZE
    for body in (huge_elastic, huge_jwe):
        started = time.perf_counter()
        with pytest.raises(PayloadTooLargeError) as caught:
            kit.decryptor.decrypt(body)
        assert time.perf_counter() - started < 0.5
        assert caught.value.limit == DEFAULT_MAX_BODY_SIZE
    assert attempted == []


@pytest.mark.parametrize("fmt", ["elastic", "jwe"])
def test_deep_nesting_is_malformed_not_a_crash(kit: Kit, fmt: str) -> None:
    deep = b"[" * 100_000
    body = elastic(kit, deep) if fmt == "elastic" else token(kit, header(), deep)
    with pytest.raises(MalformedBodyError, match="nested too deeply") as caught:
        kit.decryptor.decrypt(body)
    assert caught.value.__context__ is None

    outcome: list[BaseException | None] = []

    def in_thread() -> None:
        try:
            kit.decryptor.decrypt(body)
        except BaseException as exc:
            outcome.append(exc)
        else:
            outcome.append(None)

    worker = threading.Thread(target=in_thread)
    worker.start()
    worker.join(30)
    assert len(outcome) == 1
    assert type(outcome[0]) is MalformedBodyError
