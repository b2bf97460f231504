"""`jwe` bodies opened through a SoftHSM2 token, beside SoftHSM's own RSA-OAEP decrypt rate.

The bound is measured in the same run and process: python-pkcs11 calling C_Decrypt
(CKM_RSA_PKCS_OAEP, SHA-1) on the token key in a loop, nothing else. A body through
`PKCS11KeySource` adds parsing and AES-GCM (outside the module lock) and the lock itself;
the target is >= 0.9 of the bound with the receiver's concurrency (several decrypt threads:
the token runs one call at a time, the rest overlaps). A deployment gets more by running
more processes (each has its own session and SoftHSM instance) or more tokens/HSM partitions,
merged by kid.

Skipped, with a note, when softhsm2 is not installed.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from interop import softhsm
from request_crypto import RequestDecryptor, RequestEncryptor

from .core import Context, RatioTarget, Row, Section

#: Bodies a decrypt_many call opens, and its threads (the receiver's default decrypt pool).
BATCH = 32
THREADS = 4


def softhsm_source() -> tuple[Any, Any] | None:
    """A token in a fresh directory with one generated key: (PKCS11KeySource, raw key handle)."""
    if not softhsm.available():
        return None
    pin_file = softhsm.make_tokens(Path(tempfile.mkdtemp(prefix="bench-softhsm-")), ["bench"])
    uri = softhsm.uri("bench", pin_file, "bench-1")

    from request_crypto.keys.pkcs11 import PKCS11KeySource, generate_key

    generate_key(uri)
    source = PKCS11KeySource(uri)
    import pkcs11  # the bound: python-pkcs11 straight onto the same token

    session = pkcs11.lib(softhsm.MODULE).get_token(token_label="bench").open()  # logged in
    key = session.get_key(pkcs11.ObjectClass.PRIVATE_KEY, label="bench-1")
    return source, key


class Hsm(Section):
    title = "jwe 1KB through SoftHSM2 (PKCS#11), bodies/s; bound: SoftHSM's own RSA-OAEP"
    ratio_targets = (
        RatioTarget(
            f"jwe via SoftHSM, {THREADS} threads >= 90% of SoftHSM RSA-OAEP",
            f"hsm.jwe.{THREADS}",
            "hsm.raw",
            0.9,
        ),
    )
    bound_ratios = (
        ("jwe via SoftHSM, 1 thread / SoftHSM RSA-OAEP", "hsm.jwe.1", "hsm.raw"),
        (f"jwe via SoftHSM, {THREADS} threads / SoftHSM RSA-OAEP", f"hsm.jwe.{THREADS}", "hsm.raw"),
    )

    def declare(self, ctx: Context) -> None:
        opened = softhsm_source()
        if opened is None:
            ctx.values["hsm.note"] = "skipped: softhsm2 is not installed"
            return
        source, key = opened
        import pkcs11
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding, rsa

        public = RequestDecryptor(source).get_well_knowns()
        jwk = source.key("bench-1")
        wrapped = (
            rsa.RSAPublicNumbers(jwk.e, jwk.n)
            .public_key()
            .encrypt(os.urandom(32), padding.OAEP(padding.MGF1(hashes.SHA1()), hashes.SHA1(), None))
        )
        oaep = (pkcs11.Mechanism.SHA_1, pkcs11.MGF.SHA1, None)

        def raw() -> bytes:
            data: bytes = key.decrypt(
                wrapped, mechanism=pkcs11.Mechanism.RSA_PKCS_OAEP, mechanism_param=oaep
            )
            return data

        encryptor = RequestEncryptor(public, format="jwe")
        bodies = [encryptor.encrypt("bench-1", ctx.payloads["1KB"]) for _ in range(BATCH)]
        decryptor = RequestDecryptor(source)
        ctx.py_loop("hsm", "hsm.raw", raw)
        ctx.py_loop("hsm", "hsm.jwe.1", lambda: decryptor.decrypt(bodies[0]))
        ctx.py_loop(
            "hsm",
            f"hsm.jwe.{THREADS}",
            lambda: decryptor.decrypt_many(bodies, workers=THREADS),
            per_call=BATCH,
        )

    def rows(self, ctx: Context) -> list[Row]:
        note = ctx.values.get("hsm.note", "")
        return [
            Row("SoftHSM RSA-OAEP decrypt (the bound)", ctx.best("hsm.raw"), note=note),
            Row("jwe decrypt via PKCS11KeySource, 1 thread", ctx.best("hsm.jwe.1")),
            Row(
                f"jwe decrypt_many via PKCS11KeySource, {THREADS} thr",
                ctx.best(f"hsm.jwe.{THREADS}"),
            ),
        ]
