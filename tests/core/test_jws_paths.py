"""The signed body's verify shortcuts give what the general code gives.

- `keys.signing._der_signature` against cryptography's `encode_dss_signature` (the ECDSA
  r || s of a JOSE signature, as DER for OpenSSL), on random and edge halves.
- `_jws.verify_compact` with the payload and signature decoded in one call against one at a
  time: the same verified token, or the same error, on valid and mutated tokens.
"""

from __future__ import annotations

import os
import random
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import utils

from request_crypto import _jws
from request_crypto._b64 import b64url_decode_parts
from request_crypto.errors import RequestCryptoError
from request_crypto.keys import signing
from request_crypto.keys.signing import SigningKeySet, generate_signing_jwk, public_key_set


def test_der_signatures_are_what_cryptography_encodes() -> None:
    rng = random.Random(1)
    halves = [b"\0" * 32, b"\0" * 31 + b"\1", b"\x80" + b"\0" * 31, b"\xff" * 32, b"\x7f" * 32]
    halves += [b"\0" * 5 + b"\x80" + os.urandom(26), b"\0" * 48, b"\xff" * 48]
    halves += [os.urandom(size) for size in [32] * 200 + [48] * 200]
    for r in halves:
        for s in rng.sample(halves, 8):
            if len(r) != len(s):
                continue
            expected = utils.encode_dss_signature(
                int.from_bytes(r, "big"), int.from_bytes(s, "big")
            )
            assert signing._der_signature(r, s) == expected


def outcome(token: bytes | str, keys: Any) -> tuple[str, Any]:
    try:
        verified = _jws.verify_compact(token, keys)
    except RequestCryptoError as exc:
        return "error", (type(exc), str(exc))
    return "value", (verified.header, verified.payload, verified.key.kid)


@pytest.mark.parametrize("alg", ["ES256", "ES384", "EdDSA", "HS256"])
def test_parts_decoded_at_once_verify_as_one_at_a_time(
    alg: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    private = {"keys": [generate_signing_jwk(f"k-{alg}", alg)]}
    signer = SigningKeySet(private).signing_key()
    keys = SigningKeySet(private if alg == "HS256" else public_key_set(private))
    token = _jws.sign_compact(signer, b'{"a":' + b"1" * 700 + b"}")
    head, payload, signature = token.split(".")
    parts = [payload.encode(), signature.encode()]
    assert b64url_decode_parts(token.encode(), parts) is not None  # the at-once path is taken
    rng = random.Random(alg)
    candidates: list[str | bytes] = [token, token.encode(), f"{head}.{payload}=.{signature}"]
    candidates += [f"{head}.{payload}.{signature}=", f"{head}.{payload[:-1]}.{signature}"]
    for _ in range(150):
        chars = list(token)
        position = rng.randrange(len(chars))
        chars[position] = rng.choice("A/+-_=!.Q")
        candidates.append("".join(chars))
    seen = set()
    for candidate in candidates:
        at_once = outcome(candidate, keys)
        with monkeypatch.context() as patch:
            patch.setattr(_jws, "b64url_decode_parts", lambda text, parts: None)
            assert outcome(candidate, keys) == at_once, candidate
        seen.add(at_once[0] if at_once[0] == "value" else at_once[1][0].__name__)
    assert {"value", "SignatureError", "MalformedBodyError"} <= seen
