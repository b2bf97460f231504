"""The `jwe` format at 1 KB and 100 KB: one RSA-2048 OAEP decrypt and AES-GCM per body.

The 1 KB cases run in the group of the primitives and the `elastic` 1 KB cases, so both their
ratio to RSA decrypt and their ratio to `elastic` decrypt are paired slice by slice. The
JavaScript original has no `jwe` format: there is nothing to run beside it.
"""

from __future__ import annotations

from .core import Context, RatioTarget, Row, Section
from .elastic import SIZES, declare_format, format_rows


class Jwe(Section):
    title = "jwe format (ops/s; MB/s = ops/s x payload size)"
    ratio_targets = (
        RatioTarget(
            "jwe decrypt 1KB >= 95% of RSA decrypt", "jwe.decrypt.1KB", "bound.rsa.decrypt", 0.95
        ),
    )
    bound_ratios = (
        ("jwe decrypt 1KB / rsa_decrypt", "jwe.decrypt.1KB", "bound.rsa.decrypt"),
        ("jwe encrypt 1KB / rsa_encrypt", "jwe.encrypt.1KB", "bound.rsa.encrypt"),
    )

    def declare(self, ctx: Context) -> None:
        declare_format(ctx, "jwe", SIZES)

    def rows(self, ctx: Context) -> list[Row]:
        return format_rows(ctx, "jwe", SIZES)
