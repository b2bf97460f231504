"""5 MB payloads: both formats beside their bound and the JavaScript original; peak memory.

At 5 MB the crypto is a small part: JSON and base64 are most of the work, so this is where the
accelerators (orjson, msgspec, pybase64) show; compare with ``REQUEST_CRYPTO_ACCELERATORS=0``.

The bound of a 5 MB body is the fastest available primitives doing its work once, on this
payload and in the same run (`bound_calls`): decrypt is base64 (both `elastic` layers, or
the JWE ciphertext), one PBKDF2 (`elastic`), one RSA-2048 decrypt, AES-256-GCM over the
payload and msgspec's parse with the cyclic GC paused; encrypt is orjson's serialization,
PBKDF2, one RSA encrypt, AES-GCM and the base64 layers. No DEFLATE: it only ever wraps the
`elastic` passphrase (32 bytes), and the `jwe` format refuses compression. Each bound is one
case in the 5 MB group, so its ratio to this library is paired slice by slice. Not in the
bound: the JSON budget scan and the checks that the orjson text means what `json` writes
(see docs/performance.md), which the library must do and a bare pipeline need not.

Memory is tracemalloc's peak while one call runs, beyond its input and its result.
"""

from __future__ import annotations

import gc
import os
import tracemalloc
from collections.abc import Callable
from typing import Any

import msgspec
import orjson
import pybase64
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from request_crypto import RequestDecryptor, RequestEncryptor
from request_crypto.keys.jwks import parse_jwks

from .core import Context, RatioTarget, Row, Section, Target
from .elastic import declare_format, declare_js, format_rows

SIZES = ("5MB",)
FORMATS = ("elastic", "jwe")


def _parse(decoder: Any, data: bytes) -> Any:
    """msgspec's parse as fast as it goes here: with the cyclic GC paused, then promoted."""
    gc.disable()
    try:
        return decoder.decode(data)
    finally:
        gc.freeze()
        gc.unfreeze()
        gc.enable()


def bound_calls(ctx: Context) -> dict[str, Callable[[], object]]:
    """One call each: the primitive work of a 5 MB encrypt or decrypt, by format."""
    payload = ctx.payloads["5MB"]
    key = parse_jwks(ctx.private_jwks)[ctx.kid]
    private_key, public_key = key.private_key, key.public_key
    assert private_key is not None
    oaep = padding.OAEP(padding.MGF1(hashes.SHA1()), hashes.SHA1(), None)
    decoder = msgspec.json.Decoder()
    cek, iv, salt = os.urandom(32), os.urandom(12), os.urandom(64)
    wrapped = public_key.encrypt(cek, oaep)
    plaintext = orjson.dumps(payload)
    sealed = AESGCM(cek).encrypt(iv, plaintext, None)
    inner = pybase64.b64encode(sealed)
    envelope = pybase64.b64encode(b'{"k":"","p":"' + inner + b'"}', altchars=b"-_").decode()
    token = pybase64.b64encode(sealed, altchars=b"-_").rstrip(b"=").decode()

    def pbkdf2() -> bytes:
        return PBKDF2HMAC(hashes.SHA512(), 32, salt, 10000).derive(cek)

    def elastic_decrypt() -> object:
        decoded = pybase64.b64decode(envelope, altchars=b"-_", validate=True)
        raw = pybase64.b64decode(memoryview(decoded)[13:-2], validate=True)
        del decoded
        pbkdf2()
        private_key.decrypt(wrapped, oaep)
        return _parse(decoder, AESGCM(cek).decrypt(iv, raw, None))

    def elastic_encrypt() -> object:
        data = orjson.dumps(payload)
        pbkdf2()
        public_key.encrypt(cek, oaep)
        layer = pybase64.b64encode(AESGCM(cek).encrypt(iv, data, None))
        return pybase64.b64encode(b'{"k":"","p":"' + layer + b'"}', altchars=b"-_").decode()

    def jwe_decrypt() -> object:
        raw = pybase64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True)
        private_key.decrypt(wrapped, oaep)
        return _parse(decoder, AESGCM(cek).decrypt(iv, raw, None))

    def jwe_encrypt() -> object:
        data = orjson.dumps(payload)
        public_key.encrypt(cek, oaep)
        return pybase64.b64encode(AESGCM(cek).encrypt(iv, data, None), altchars=b"-_").decode()

    return {
        "bound.elastic.decrypt.5MB": elastic_decrypt,
        "bound.elastic.encrypt.5MB": elastic_encrypt,
        "bound.jwe.decrypt.5MB": jwe_decrypt,
        "bound.jwe.encrypt.5MB": jwe_encrypt,
    }


class Large(Section):
    title = "5 MB payloads vs their bound and the JavaScript original (ops/s; MB/s = ops/s x size)"
    ratio_targets = tuple(
        target
        for op in ("encrypt", "decrypt")
        for target in (
            RatioTarget(
                f"elastic {op} 5MB >= 1.5x JS MB/s", f"elastic.{op}.5MB", f"js.{op}.5MB", 1.5
            ),
            RatioTarget(
                f"elastic {op} 5MB >= 80% of its bound",
                f"elastic.{op}.5MB",
                f"bound.elastic.{op}.5MB",
                0.8,
            ),
        )
    )
    bound_ratios = tuple(
        (f"{fmt} {op} 5MB / its primitives", f"{fmt}.{op}.5MB", f"bound.{fmt}.{op}.5MB")
        for fmt in FORMATS
        for op in ("decrypt", "encrypt")
    )

    def declare(self, ctx: Context) -> None:
        for fmt in FORMATS:
            declare_format(ctx, fmt, SIZES)
        for key, call in bound_calls(ctx).items():
            ctx.py_loop("5MB", key, call)
        declare_js(ctx, SIZES)

    def rows(self, ctx: Context) -> list[Row]:
        rows = []
        for fmt in FORMATS:
            rows += format_rows(ctx, fmt, SIZES)
            for op in ("encrypt", "decrypt"):
                bound = ctx.best(f"bound.{fmt}.{op}.5MB")
                rows.append(Row(f"  bound {fmt} {op} 5MB (primitives)", bound))
        return rows


def peak_beyond(fn: Callable[[], Any]) -> tuple[int, Any]:
    """tracemalloc's peak while `fn` runs, less what was there before and what it returns."""
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        result = fn()
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - after, result  # `after - before` is the result, still held


def measure_memory(ctx: Context, fmt: str) -> dict[str, float]:
    """Peak beyond input and result of a 5 MB encrypt and decrypt, per payload byte."""
    payload = ctx.payloads["5MB"]
    encryptor = RequestEncryptor(ctx.public_jwks, format=fmt)
    decryptor = RequestDecryptor(ctx.private_jwks)
    encryptor.encrypt(ctx.kid, ctx.payloads["1KB"])  # warm imports and caches
    size = ctx.sizes["5MB"]
    enc_extra, body = peak_beyond(lambda: encryptor.encrypt(ctx.kid, payload))
    dec_extra, _ = peak_beyond(lambda: decryptor.decrypt(body))
    return {"encrypt": enc_extra / size, "decrypt": dec_extra / size}


class Memory(Section):
    title = "Peak memory of a 5 MB round trip, beyond input and result (tracemalloc)"

    def declare(self, ctx: Context) -> None:
        for fmt in FORMATS:
            ctx.add_once(f"memory.{fmt}", lambda f=fmt: measure_memory(ctx, f))  # type: ignore[misc]

    def rows(self, ctx: Context) -> list[Row]:
        rows = []
        for fmt in FORMATS:
            m = ctx.values.get(f"memory.{fmt}")
            if m:
                for op in ("encrypt", "decrypt"):
                    rows.append(Row(f"{fmt} {op} 5MB, peak beyond in+out", m[op], unit="x payload"))
        return rows

    def targets(self, ctx: Context) -> list[Target]:
        m = ctx.values.get("memory.elastic")
        worst = max(m.values()) if m else None
        # Reported as headroom (3 / multiple) so that, like every other target, more is better.
        return [
            Target(
                "5MB peak beyond input+result <= 3x payload",
                3 / worst if worst else None,
                1.0,
                notes=[f"worst {worst:.2f}x"] if worst else [],
            )
        ]
