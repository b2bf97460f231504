"""`decrypt_many` and `decrypt_async`: `elastic` 1 KB bodies, 32 at a time.

`decrypt_many` runs with one worker and with one worker per core. `decrypt_async` is what an
asyncio service does with a burst: one long-lived event loop gathers 32 `decrypt_async` calls,
which run on the loop's default executor. The primitives release the GIL, so both spread over
the cores; how far is judged against the cores x one-core bound, against one worker (paired
slice by slice) and against the JavaScript original's Promise.all, which also uses every core
(libuv's pool runs PBKDF2).
"""

from __future__ import annotations

import asyncio
import atexit
from collections.abc import Callable

from request_crypto import RequestDecryptor, RequestEncryptor

from .core import CORES, JS_CONCURRENCY, Context, JsCase, RatioTarget, Row, Section, Target, judge
from .elastic import per_core_decrypt_bound

BATCH = 32  # bodies per decrypt_many call


def gathered(decryptor: RequestDecryptor, bodies: list[str]) -> Callable[[], object]:
    """One call: `bodies` through `decrypt_async`, gathered on one long-lived event loop."""
    loop = asyncio.new_event_loop()
    atexit.register(loop.close)

    async def burst() -> list[object]:
        return list(await asyncio.gather(*(decryptor.decrypt_async(body) for body in bodies)))

    return lambda: loop.run_until_complete(burst())


class Batch(Section):
    title = f"decrypt_many and decrypt_async, elastic 1KB, {BATCH} bodies a call (bodies/s)"
    ratio_targets = (
        RatioTarget(
            f"decrypt_many one per core >= 90% of {CORES} x the one-core bound",
            f"decrypt_many.{CORES}",
            per_core_decrypt_bound,
            0.9,
        ),
        RatioTarget(
            f"decrypt_async x{BATCH} gathered >= 90% of {CORES} x the one-core bound",
            "decrypt_async",
            per_core_decrypt_bound,
            0.9,
        ),
    )
    bound_ratios = (
        (
            f"decrypt_many {CORES} workers / {CORES} x elastic decrypt bound",
            f"decrypt_many.{CORES}",
            per_core_decrypt_bound,
        ),
        (
            f"decrypt_async x{BATCH} gathered / {CORES} x elastic decrypt bound",
            "decrypt_async",
            per_core_decrypt_bound,
        ),
    )

    def declare(self, ctx: Context) -> None:
        encryptor = RequestEncryptor(ctx.public_jwks)
        decryptor = RequestDecryptor(ctx.private_jwks)
        bodies = [encryptor.encrypt(ctx.kid, ctx.payloads["1KB"]) for _ in range(BATCH)]
        for workers in sorted({1, CORES}):
            ctx.py_loop(
                "batch",
                f"decrypt_many.{workers}",
                lambda w=workers: decryptor.decrypt_many(bodies, workers=w),  # type: ignore[misc]
                per_call=BATCH,
            )
        ctx.py_loop("batch", "decrypt_async", gathered(decryptor, bodies), per_call=BATCH)
        ctx.js("batch", JsCase("js.decrypt.all.batch", "decrypt", "1KB", JS_CONCURRENCY["1KB"]))

    def rows(self, ctx: Context) -> list[Row]:
        js_all = ctx.best("js.decrypt.all.batch")
        rows = [Row("decrypt_many, 1 worker", ctx.best("decrypt_many.1"), js_all=js_all)]
        if CORES > 1:
            rows.append(
                Row(
                    f"decrypt_many, {CORES} workers (one per core)",
                    ctx.best(f"decrypt_many.{CORES}"),
                    js_all=js_all,
                )
            )
        rows.append(
            Row(
                f"decrypt_async, {BATCH} gathered on one loop",
                ctx.best("decrypt_async"),
                js_all=js_all,
            )
        )
        return rows

    def targets(self, ctx: Context) -> list[Target]:
        targets = super().targets(ctx)
        if CORES >= 2:
            wanted = 0.9 * CORES
            scaling = RatioTarget(
                f"decrypt_many {CORES} workers >= {wanted:.1f}x one worker",
                f"decrypt_many.{CORES}",
                "decrypt_many.1",
                wanted,
            )
            targets.append(judge(ctx, scaling))
        return targets
