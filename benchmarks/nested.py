"""Signed `jwe` bodies (issue 14): decrypt + verify at 1 KB, beside unsigned `jwe` and the bound.

A signed body costs one RSA-2048 OAEP decrypt and one signature verify at the least (ES256,
the design documents' algorithm; EdDSA beside it), so the bound is both primitives in a row:
`bound.rsa+ALG.verify` calls them one after the other, as a body needs them. (Timing each in
its own loop and adding, 1/(1/rsa + 1/verify), is shown too; it is ~10% higher than any code
can reach, because each primitive then runs with caches warmed by itself: measured here, the
pair in a row costs ~30 us more than the two loops' sum.) Every case runs in the 1 KB group
with the primitives, so each ratio is paired slice by slice.
The JavaScript original has no signed bodies: there is nothing to run beside it.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from request_crypto import RequestDecryptor, RequestEncryptor
from request_crypto.keys.signing import SigningKeySet, generate_signing_jwk, public_key_set

from .core import Context, Rate, RatioTarget, Row, Section, serial_bound
from .elastic import primitive_calls

ALGS = ("ES256", "EdDSA")


def signed_bound(alg: str) -> Callable[[Rate], float | None]:
    """RSA decrypt and one `alg` verify, each timed in its own loop (optimistic; see above)."""

    def bound(rate: Rate) -> float | None:
        return serial_bound(rate("bound.rsa.decrypt"), rate(f"bound.{alg}.verify"))

    return bound


def _in_a_row(*calls: Callable[[], object]) -> None:
    for call in calls:
        call()


class Nested(Section):
    title = "signed jwe bodies, 1 KB (decrypt + verify, ops/s)"
    ratio_targets = tuple(
        RatioTarget(
            f"signed jwe ({alg}) decrypt+verify 1KB >= 90% of RSA decrypt + {alg} verify",
            f"nested.decrypt.{alg}.1KB",
            f"bound.rsa+{alg}.verify",
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
        rsa = primitive_calls(ctx.private_jwks, ctx.kid)["bound.rsa.decrypt"]
        ctx.py_loop(g, "nested.unsigned.1KB", lambda: plain.decrypt(unsigned))
        for alg in ALGS:
            sender = {"keys": [generate_signing_jwk(f"bench-{alg}", alg)]}
            encryptor = RequestEncryptor(ctx.public_jwks, sign_with=sender)
            signer = encryptor.signer
            assert signer is not None
            # The primitive over the very bytes a body's signature covers (header.payload).
            head, claims, _ = signer.sign(payload).split(".")
            signed = f"{head}.{claims}".encode()
            signature = signer.key.sign(signed)
            public = SigningKeySet(public_key_set(sender)).verification_key(signer.kid)
            assert public is not None
            verify = partial(public.verify, signed, signature)
            ctx.py_loop(g, f"bound.{alg}.verify", verify)
            ctx.py_loop(g, f"bound.rsa+{alg}.verify", partial(_in_a_row, rsa, verify))
            body = encryptor.encrypt(ctx.kid, payload)
            ctx.values[f"nested.body_bytes.{alg}"] = len(body)
            decryptor = RequestDecryptor(ctx.private_jwks, verify_with=public_key_set(sender))
            ctx.py_loop(g, f"nested.decrypt.{alg}.1KB", lambda b=body, d=decryptor: d.decrypt(b))  # type: ignore[misc]

    def rows(self, ctx: Context) -> list[Row]:
        b = ctx.best
        rows = [Row("unsigned jwe decrypt 1KB", b("nested.unsigned.1KB"))]
        for alg in ALGS:
            rows += [
                Row(f"{alg} verify (primitive)", b(f"bound.{alg}.verify")),
                Row(f"bound RSA decrypt + {alg} verify, in a row", b(f"bound.rsa+{alg}.verify")),
                Row("  1/(1/rsa + 1/verify), separate loops", signed_bound(alg)(b)),
                Row(f"signed jwe ({alg}) decrypt+verify 1KB", b(f"nested.decrypt.{alg}.1KB")),
            ]
        return rows
