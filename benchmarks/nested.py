"""Signed `jwe` bodies (issue 14): decrypt + verify at 1 KB, beside unsigned `jwe` and the bound.

A signed body costs one RSA-2048 OAEP decrypt and one signature verify at the least (ES256,
the design documents' algorithm; EdDSA beside it), so the bound is both primitives in a row.
Every case runs in the 1 KB group with the primitives, so each ratio is paired slice by slice.
The JavaScript original has no signed bodies: there is nothing to run beside it.
"""

from __future__ import annotations

from collections.abc import Callable

from request_crypto import RequestDecryptor, RequestEncryptor
from request_crypto.keys.signing import SigningKeySet, generate_signing_jwk, public_key_set

from .core import Context, Rate, RatioTarget, Row, Section, serial_bound

ALGS = ("ES256", "EdDSA")


def signed_bound(alg: str) -> Callable[[Rate], float | None]:
    """RSA decrypt then one `alg` verify: what any code on these primitives could reach."""

    def bound(rate: Rate) -> float | None:
        return serial_bound(rate("bound.rsa.decrypt"), rate(f"bound.{alg}.verify"))

    return bound


class Nested(Section):
    title = "signed jwe bodies, 1 KB (decrypt + verify, ops/s)"
    ratio_targets = tuple(
        RatioTarget(
            f"signed jwe ({alg}) decrypt+verify 1KB >= 90% of RSA decrypt + {alg} verify",
            f"nested.decrypt.{alg}.1KB",
            signed_bound(alg),
            0.9,
        )
        for alg in ALGS
    )
    bound_ratios = tuple(
        (
            f"signed ({alg}) / unsigned jwe decrypt 1KB",
            f"nested.decrypt.{alg}.1KB",
            "nested.unsigned.1KB",
        )
        for alg in ALGS
    )

    def declare(self, ctx: Context) -> None:
        g = "1KB"
        payload = ctx.payloads[g]
        unsigned = RequestEncryptor(ctx.public_jwks, format="jwe").encrypt(ctx.kid, payload)
        plain = RequestDecryptor(ctx.private_jwks)
        ctx.py_loop(g, "nested.unsigned.1KB", lambda: plain.decrypt(unsigned))
        for alg in ALGS:
            sender = {"keys": [generate_signing_jwk(f"bench-{alg}", alg)]}
            key = SigningKeySet(sender).signing_key()
            public = SigningKeySet(public_key_set(sender)).verification_key(key.kid)
            assert public is not None
            signature = key.sign(b"x" * 1400)
            ctx.py_loop(
                g, f"bound.{alg}.verify", lambda p=public, s=signature: p.verify(b"x" * 1400, s)
            )  # type: ignore[misc]
            body = RequestEncryptor(ctx.public_jwks, sign_with=sender).encrypt(ctx.kid, payload)
            ctx.values[f"nested.body_bytes.{alg}"] = len(body)
            decryptor = RequestDecryptor(ctx.private_jwks, verify_with=public_key_set(sender))
            ctx.py_loop(g, f"nested.decrypt.{alg}.1KB", lambda b=body, d=decryptor: d.decrypt(b))  # type: ignore[misc]

    def rows(self, ctx: Context) -> list[Row]:
        b = ctx.best
        rows = [Row("unsigned jwe decrypt 1KB", b("nested.unsigned.1KB"))]
        for alg in ALGS:
            rows += [
                Row(f"{alg} verify (primitive)", b(f"bound.{alg}.verify")),
                Row(f"bound RSA decrypt + {alg} verify", signed_bound(alg)(b)),
                Row(f"signed jwe ({alg}) decrypt+verify 1KB", b(f"nested.decrypt.{alg}.1KB")),
            ]
        return rows
