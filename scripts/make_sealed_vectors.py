"""Regenerate fixtures/sealed/: sealed-file test vectors, good and bad (docs/FILE-FORMAT.md).

    .venv/bin/python scripts/make_sealed_vectors.py [--only other-version]

Writes a fresh private key set (keys.json: test keys, never used elsewhere), then each
vector as NAME.sealed, with NAME.plain for the good ones, and vectors.json saying what each
one is and, for a bad one, which error opening it must raise. Sealing is randomized (file key,
salt, RSA-OAEP), so every run writes different bytes; tests/core/test_sealed_vectors.py checks
whatever is committed. `--only other-version` rewrites just that vector from the committed
`header-only` one (its header is the same file's), so the others stay byte-identical.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

from request_crypto import JWKManager, seal

OUT = Path(__file__).resolve().parent.parent / "fixtures" / "sealed"
SEGMENT = 1024
TAG = 16
#: A magic line of a version no reader knows (v2 is real: a KMS recipient). Same length as v1's.
OTHER_VERSION = b"request-crypto-sealed/v9\n"


def pattern(size: int) -> bytes:
    return bytes(i * 7 % 251 for i in range(size))


def sealed(data: bytes, recipients: list[dict[str, str]]) -> bytes:
    out = io.BytesIO()
    seal(io.BytesIO(data), out, recipients, segment_size=SEGMENT)
    return out.getvalue()


def header_end(blob: bytes) -> int:
    return blob.index(b"\nmac ") + len(b"\nmac ") + 43 + 1


def rewrite_other_version() -> None:
    """other-version.sealed again, from the committed vectors: the header of `header-only`
    (same base file) under OTHER_VERSION's magic, then the segments it had."""
    old = (OUT / "other-version.sealed").read_bytes()
    header = (OUT / "header-only.sealed").read_bytes()
    assert old[len(OTHER_VERSION) : len(header)] == header[len(OTHER_VERSION) :]
    (OUT / "other-version.sealed").write_bytes(OTHER_VERSION + old[len(OTHER_VERSION) :])
    print(f"rewrote {OUT / 'other-version.sealed'}")


def main() -> None:
    if sys.argv[1:] == ["--only", "other-version"]:
        rewrite_other_version()
        return
    OUT.mkdir(parents=True, exist_ok=True)
    keys = JWKManager()
    keys.add_key("vectors-oaep256", alg="RSA-OAEP-256")
    keys.add_key("vectors-oaep", alg="RSA-OAEP")
    outsider = JWKManager()
    outsider.add_key("someone-else", alg="RSA-OAEP-256")
    first = [keys.get_public_jwk("vectors-oaep256") or {}]
    both = [*first, keys.get_public_jwk("vectors-oaep") or {}]

    good = {
        "empty": (b"", first, "an empty plaintext: one empty final segment"),
        "short": (b"hello, sealed world\n", first, "one short final segment"),
        "two-full": (pattern(2 * SEGMENT), first, "two segments, the final one full"),
        "two-recipients": (
            pattern(3 * SEGMENT + 5),
            both,
            "four segments, sealed to an RSA-OAEP-256 and an RSA-OAEP key",
        ),
    }
    vectors: dict[str, dict[str, object]] = {}
    for name, (data, recipients, description) in good.items():
        (OUT / f"{name}.sealed").write_bytes(sealed(data, recipients))
        (OUT / f"{name}.plain").write_bytes(data)
        vectors[name] = {
            "segment_size": SEGMENT,
            "plaintext": f"{name}.plain",
            "error": None,
            "description": description,
        }

    base = sealed(pattern(3 * SEGMENT + 5), first)
    start = header_end(base)
    step = SEGMENT + TAG
    segments = [base[i : i + step] for i in range(start, len(base), step)]
    flipped = bytearray(base)
    flipped[start + step + 3] ^= 0x01
    bad_mac = bytearray(base)
    bad_mac[start - 10] = ord("A") if bad_mac[start - 10] != ord("A") else ord("B")
    recipient = next(line for line in base.split(b"\n") if line.startswith(b"recipient "))
    bad = {
        "truncated-at-boundary": (
            base[: start + 2 * step],
            "TruncatedError",
            "the last two segments cut off at a segment boundary",
        ),
        "truncated-inside-segment": (base[:-5], "SegmentError", "five bytes cut off the end"),
        "flipped-bit": (bytes(flipped), "SegmentError", "one bit flipped in segment 1"),
        "reordered": (
            base[:start] + segments[1] + segments[0] + b"".join(segments[2:]),
            "SegmentError",
            "segments 0 and 1 swapped",
        ),
        "appended": (base + segments[-1], "SegmentError", "the final segment repeated at the end"),
        "bad-mac": (bytes(bad_mac), "HeaderAuthenticationError", "the header MAC altered"),
        "other-version": (
            OTHER_VERSION + base[len(OTHER_VERSION) :],
            "SealedFormatError",
            "magic line of a version this reader does not know",
        ),
        "too-many-recipients": (
            base.replace(recipient, b"\n".join([recipient] * 65)),
            "SealedFormatError",
            "65 recipients, over the limit of 64",
        ),
        "header-only": (base[:start], "TruncatedError", "a header and no segment"),
        "not-for-these-keys": (
            sealed(b"not for you", [outsider.get_public_jwk("someone-else") or {}]),
            "NoRecipientKeyError",
            "sealed to a key keys.json does not hold",
        ),
    }
    for name, (blob, error, description) in bad.items():
        (OUT / f"{name}.sealed").write_bytes(blob)
        vectors[name] = {
            "segment_size": SEGMENT,
            "plaintext": None,
            "error": error,
            "description": description,
        }
    (OUT / "keys.json").write_text(json.dumps(keys.get_private_jwks(), indent=2) + "\n")
    (OUT / "vectors.json").write_text(json.dumps(vectors, indent=2) + "\n")
    print(f"wrote {len(vectors)} vectors to {OUT}")


if __name__ == "__main__":
    main()
