"""fixtures/sealed/: the committed test vectors open (or fail) exactly as vectors.json says.

Also an independent reader written from docs/FILE-FORMAT.md alone (joserfc or jwcrypto to
unwrap, `cryptography` for HKDF, HMAC and AES-GCM): it opens every good vector and what
request_crypto seals now, which shows the document is exact and any JOSE library can unwrap.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from request_crypto import JWKManager, SealedReader, inspect_sealed, open_sealed, seal
from request_crypto import sealed as sealed_module

VECTORS = Path(__file__).resolve().parents[2] / "fixtures" / "sealed"
MANIFEST: dict[str, dict[str, Any]] = json.loads((VECTORS / "vectors.json").read_text())
PRIVATE = json.loads((VECTORS / "keys.json").read_text())
GOOD = sorted(name for name, vector in MANIFEST.items() if vector["error"] is None)
BAD = sorted(name for name, vector in MANIFEST.items() if vector["error"] is not None)


def test_manifest_covers_every_file() -> None:
    files = {path.name for path in VECTORS.iterdir()}
    expected = {f"{name}.sealed" for name in MANIFEST} | {f"{name}.plain" for name in GOOD}
    assert files == expected | {"keys.json", "vectors.json"}
    assert len(GOOD) >= 4 and len(BAD) >= 8


@pytest.mark.parametrize("name", GOOD)
def test_good_vector_opens(name: str) -> None:
    blob = (VECTORS / f"{name}.sealed").read_bytes()
    expected = (VECTORS / f"{name}.plain").read_bytes()
    out = io.BytesIO()
    open_sealed(io.BytesIO(blob), out, JWKManager(PRIVATE))
    assert out.getvalue() == expected
    info = inspect_sealed(io.BytesIO(blob))
    assert info.plaintext_length == len(expected)
    assert info.segment_size == MANIFEST[name]["segment_size"]
    assert SealedReader(io.BytesIO(blob), JWKManager(PRIVATE)).read() == expected


#: Where the error class alone could pass for the wrong reason, the message it must carry.
MESSAGES = {"other-version": "sealed-file version 'v9' is not supported"}


@pytest.mark.parametrize("name", BAD)
def test_bad_vector_fails_as_documented(name: str) -> None:
    blob = (VECTORS / f"{name}.sealed").read_bytes()
    error = getattr(sealed_module, MANIFEST[name]["error"])
    out = io.BytesIO()
    with pytest.raises(error, match=MESSAGES.get(name)):
        open_sealed(io.BytesIO(blob), out, JWKManager(PRIVATE))
    assert out.getvalue() == b""


# ---------------------------------------------------------------------------------------------
# An independent reader, from docs/FILE-FORMAT.md


def unwrap_joserfc(token: str, jwk: dict[str, str]) -> bytes:
    from joserfc import jwe
    from joserfc.jwk import RSAKey

    algorithms = ["RSA-OAEP-256", "RSA-OAEP", "A256GCM"]
    return bytes(
        jwe.decrypt_compact(token, RSAKey.import_key(jwk), algorithms=algorithms).plaintext
    )


def unwrap_jwcrypto(token: str, jwk: dict[str, str]) -> bytes:
    from jwcrypto import jwe
    from jwcrypto import jwk as jwcrypto_jwk

    envelope = jwe.JWE()
    envelope.deserialize(token, key=jwcrypto_jwk.JWK(**jwk))
    return bytes(envelope.payload)


def b64(text: bytes) -> bytes:
    assert b"=" not in text
    return base64.urlsafe_b64decode(text + b"=" * (-len(text) % 4))


def hkdf(file_key: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt, info).derive(file_key)


def spec_open(
    blob: bytes, jwk: dict[str, str], unwrap: Callable[[str, dict[str, str]], bytes]
) -> bytes | None:
    """The plaintext, or None when no recipient line is for `jwk`'s kid."""
    end = blob.index(b"\nmac ") + 1
    header_lines = blob[:end].split(b"\n")[:-1]
    mac_line, payload = blob[end:].split(b"\n", 1)
    assert header_lines[0] == b"request-crypto-sealed/v1"
    assert header_lines[1].startswith(b"segment-size ")
    size = int(header_lines[1].split(b" ")[1])
    salt = b64(header_lines[2].removeprefix(b"salt "))
    tokens = [line.removeprefix(b"recipient ").decode() for line in header_lines[3:]]
    mine = [t for t in tokens if json.loads(b64(t.split(".")[0].encode()))["kid"] == jwk["kid"]]
    if not mine:
        return None
    protected = json.loads(b64(mine[0].split(".")[0].encode()))
    assert list(protected) == ["alg", "enc", "kid"] and protected["enc"] == "A256GCM"
    file_key = unwrap(mine[0], jwk)
    assert len(file_key) == 32
    expected_mac = hmac.new(
        hkdf(file_key, salt, b"request-crypto-sealed/v1 header"), blob[:end], hashlib.sha256
    ).digest()
    assert hmac.compare_digest(expected_mac, b64(mac_line.removeprefix(b"mac ")))
    aead = AESGCM(hkdf(file_key, salt, b"request-crypto-sealed/v1 payload"))
    step = size + 16
    pieces = [payload[i : i + step] for i in range(0, len(payload), step)] or [b""]
    plaintext = []
    for index, piece in enumerate(pieces):
        flag = b"\x01" if index == len(pieces) - 1 else b"\x00"
        plaintext.append(aead.decrypt(index.to_bytes(11, "big") + flag, piece, None))
    return b"".join(plaintext)


@pytest.mark.parametrize("unwrap", [unwrap_joserfc, unwrap_jwcrypto], ids=["joserfc", "jwcrypto"])
@pytest.mark.parametrize("name", GOOD)
def test_spec_reader_opens_good_vectors(
    name: str, unwrap: Callable[[str, dict[str, str]], bytes]
) -> None:
    blob = (VECTORS / f"{name}.sealed").read_bytes()
    expected = (VECTORS / f"{name}.plain").read_bytes()
    opened = [spec_open(blob, jwk, unwrap) for jwk in PRIVATE["keys"]]
    assert expected in opened
    assert all(result in (expected, None) for result in opened)


@pytest.mark.parametrize("unwrap", [unwrap_joserfc, unwrap_jwcrypto], ids=["joserfc", "jwcrypto"])
def test_spec_reader_opens_what_seal_writes_now(
    unwrap: Callable[[str, dict[str, str]], bytes],
) -> None:
    keys = JWKManager(PRIVATE)
    data = bytes(range(256)) * 700  # several default-size segments, the last short
    out = io.BytesIO()
    seal(io.BytesIO(data), out, [keys.get_public_jwk(kid) or {} for kid in keys.kids()])
    for jwk in PRIVATE["keys"]:
        assert spec_open(out.getvalue(), jwk, unwrap) == data
