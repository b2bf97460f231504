"""`jwe` bodies opened through a SoftHSM2 token, beside SoftHSM's own RSA-OAEP decrypt rate.

The bound is measured in the same run and process: python-pkcs11 calling C_Decrypt
(CKM_RSA_PKCS_OAEP, SHA-1) on the token key in a loop, nothing else ("hsm.raw", the issue's
yardstick: SoftHSM's single-thread rate). The target is >= 0.9 of it with the receiver's
concurrency (its decrypt threads). The module is initialised with OS locking, so those threads
decrypt in the token at once, each on its own session: "hsm.raw.2" is the machine's new limit,
the same bare calls on 2 sessions from 2 threads at once, and the 2-thread figure is shown
against it too. A deployment gets more with more cores, processes or tokens/HSM partitions,
merged by kid.

ES256 signatures made in the token (`PKCS11SigningKey`: SHA-256 here, CKM_ECDSA there) are
measured beside the same alg with a local key and beside python-pkcs11's own CKM_ECDSA
call, in the same rounds (paired); verifying a token key's signature is local, with the public
key read from the token, so it is measured beside a local key's verify.

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

#: Bodies a decrypt_many call opens, and its threads: the receiver's default decrypt pool
#: (`serve --decrypt-threads`: one per core, at least 2; receiver/app.py).
BATCH = 32
THREADS = max(2, os.cpu_count() or 1)


def softhsm_source() -> tuple[Any, Any, list[Any]] | None:
    """A token in a fresh directory with one decryption and one ES256 signing key:
    (PKCS11KeySource, PKCS11SigningKey, two logged-in raw sessions for the bounds)."""
    if not softhsm.available():
        return None
    pin_file = softhsm.make_tokens(Path(tempfile.mkdtemp(prefix="bench-softhsm-")), ["bench"])
    uri = softhsm.uri("bench", pin_file, "bench-1")

    from request_crypto.keys.pkcs11 import PKCS11KeySource, generate_key
    from request_crypto.keys.pkcs11_signing import PKCS11SigningKey, generate_signing_key

    generate_key(uri)
    source = PKCS11KeySource(uri)
    generate_signing_key(softhsm.uri("bench", pin_file, "bench-sign"), "ES256")
    signer = PKCS11SigningKey(softhsm.uri("bench", pin_file, "bench-sign"))
    import pkcs11  # the bound: python-pkcs11 straight onto the same token

    token = pkcs11.lib(softhsm.MODULE).get_token(token_label="bench")
    return source, signer, [token.open(), token.open()]  # logged in: the source's login


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
        ("SoftHSM RSA-OAEP, 2 sessions at once / 1", "hsm.raw.2", "hsm.raw"),
        (
            f"jwe via SoftHSM, {THREADS} threads / SoftHSM RSA-OAEP 2 sessions",
            f"hsm.jwe.{THREADS}",
            "hsm.raw.2",
        ),
        ("ES256 sign via SoftHSM / SoftHSM raw CKM_ECDSA", "hsm.sign.token", "hsm.sign.raw"),
        ("ES256 sign via SoftHSM / local key", "hsm.sign.token", "hsm.sign.local"),
    )

    def declare(self, ctx: Context) -> None:
        opened = softhsm_source()
        if opened is None:
            ctx.values["hsm.note"] = "skipped: softhsm2 is not installed"
            return
        source, signer, sessions = opened
        import threading

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
        keys = [s.get_key(pkcs11.ObjectClass.PRIVATE_KEY, label="bench-1") for s in sessions]
        self._signing(ctx, signer, sessions[0])

        def raw(key: Any = keys[0], count: int = 1) -> None:
            for _ in range(count):
                key.decrypt(wrapped, mechanism=pkcs11.Mechanism.RSA_PKCS_OAEP, mechanism_param=oaep)

        def raw_two() -> None:
            """BATCH bare decrypts, half on a second thread with its own session."""
            other = threading.Thread(target=raw, args=(keys[1], BATCH // 2))
            other.start()
            raw(keys[0], BATCH // 2)
            other.join()

        encryptor = RequestEncryptor(public, format="jwe")
        bodies = [encryptor.encrypt("bench-1", ctx.payloads["1KB"]) for _ in range(BATCH)]
        decryptor = RequestDecryptor(source)
        ctx.py_loop("hsm", "hsm.raw", raw)
        ctx.py_loop("hsm", "hsm.raw.2", raw_two, per_call=BATCH)
        ctx.py_loop("hsm", "hsm.jwe.1", lambda: decryptor.decrypt(bodies[0]))
        ctx.py_loop(
            "hsm",
            f"hsm.jwe.{THREADS}",
            lambda: decryptor.decrypt_many(bodies, workers=THREADS),
            per_call=BATCH,
        )

    @staticmethod
    def _signing(ctx: Context, signer: Any, session: Any) -> None:
        """ES256: the token (through PKCS11SigningKey, and raw CKM_ECDSA) and a local key."""
        import hashlib

        import pkcs11

        from request_crypto.keys.signing import SigningKey, generate_signing_jwk

        local = SigningKey(generate_signing_jwk("local", "ES256"))
        data = b"eyJhbGciOiJFUzI1NiJ9." + b"x" * 200  # a JWS signing input
        raw_key = session.get_key(pkcs11.ObjectClass.PRIVATE_KEY, label="bench-sign")
        digest = hashlib.sha256(data).digest()
        token_signature, local_signature = signer.sign(data), local.sign(data)
        ctx.py_loop(
            "hsm", "hsm.sign.raw", lambda: raw_key.sign(digest, mechanism=pkcs11.Mechanism.ECDSA)
        )
        ctx.py_loop("hsm", "hsm.sign.token", lambda: signer.sign(data))
        ctx.py_loop("hsm", "hsm.sign.local", lambda: local.sign(data))
        ctx.py_loop("hsm", "hsm.verify.token", lambda: signer.verify(data, token_signature))
        ctx.py_loop("hsm", "hsm.verify.local", lambda: local.verify(data, local_signature))

    def rows(self, ctx: Context) -> list[Row]:
        note = ctx.values.get("hsm.note", "")
        return [
            Row("SoftHSM RSA-OAEP decrypt (the bound)", ctx.best("hsm.raw"), note=note),
            Row("SoftHSM RSA-OAEP decrypt, 2 sessions at once", ctx.best("hsm.raw.2")),
            Row("jwe decrypt via PKCS11KeySource, 1 thread", ctx.best("hsm.jwe.1")),
            Row(
                f"jwe decrypt_many via PKCS11KeySource, {THREADS} thr",
                ctx.best(f"hsm.jwe.{THREADS}"),
            ),
            Row("ES256 sign, SoftHSM raw CKM_ECDSA (the bound)", ctx.best("hsm.sign.raw")),
            Row("ES256 sign via PKCS11SigningKey", ctx.best("hsm.sign.token")),
            Row("ES256 sign, local key", ctx.best("hsm.sign.local")),
            Row("ES256 verify, token key (public half, local)", ctx.best("hsm.verify.token")),
            Row("ES256 verify, local key", ctx.best("hsm.verify.local")),
        ]
