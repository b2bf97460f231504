"""5 MB payloads: throughput of both formats beside the JavaScript original, and peak memory.

At 5 MB the crypto is a small part: JSON and base64 are most of the work, so this is where the
accelerators (orjson, msgspec, pybase64) show; compare with ``REQUEST_CRYPTO_ACCELERATORS=0``.
Memory is tracemalloc's peak while one call runs, beyond its input and its result.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable
from typing import Any

from request_crypto import RequestDecryptor, RequestEncryptor

from .core import Context, RatioTarget, Row, Section, Target
from .elastic import declare_format, declare_js, format_rows

SIZES = ("5MB",)
FORMATS = ("elastic", "jwe")


class Large(Section):
    title = "5 MB payloads vs the JavaScript original (ops/s; MB/s = ops/s x payload size)"
    ratio_targets = (
        RatioTarget(
            "elastic encrypt 5MB >= 1.5x JS MB/s", "elastic.encrypt.5MB", "js.encrypt.5MB", 1.5
        ),
        RatioTarget(
            "elastic decrypt 5MB >= 1.5x JS MB/s", "elastic.decrypt.5MB", "js.decrypt.5MB", 1.5
        ),
    )

    def declare(self, ctx: Context) -> None:
        for fmt in FORMATS:
            declare_format(ctx, fmt, SIZES)
        declare_js(ctx, SIZES)

    def rows(self, ctx: Context) -> list[Row]:
        return [row for fmt in FORMATS for row in format_rows(ctx, fmt, SIZES)]


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
