"""AES-CBC + HMAC-SHA2 (RFC 7518 §5.2): the JWE content encryption of the `elastic` wrapped key.

Kept apart from `_jose` (which calls it) so each stays a readable size. The MAC is
cryptography's HMAC, not the stdlib's: no Python layer, and the OpenSSL that RSA and PBKDF2
keep in cache instead of the system libcrypto (a wrapped key's MAC right after the RSA: 15-21
-> 10-11 us in situ, docs/performance.md "Round 11").
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = ["CBC_HMAC", "open_cbc_hmac", "seal_cbc_hmac"]

#: RFC 7518 §5.2: the HMAC hash of each AES-CBC + HMAC-SHA2 algorithm.
CBC_HMAC: Mapping[str, hashes.HashAlgorithm] = {
    "A128CBC-HS256": hashes.SHA256(),
    "A256CBC-HS512": hashes.SHA512(),
}


def _cbc_mac(
    algorithm: hashes.HashAlgorithm, key: bytes, aad: bytes, iv: bytes, ciphertext: bytes
) -> bytes:
    """RFC 7518 §5.2.2.1's tag: HMAC(aad || iv || ciphertext || AL), its first half kept."""
    mac = crypto_hmac.HMAC(key, algorithm)
    mac.update(b"".join((aad, iv, ciphertext, (8 * len(aad)).to_bytes(8, "big"))))
    return mac.finalize()[: len(key)]


def seal_cbc_hmac(
    enc: str, cek: bytes, iv: bytes, aad: bytes, plaintext: bytes
) -> tuple[bytes, bytes]:
    """(ciphertext, tag), PKCS#7 padded (RFC 7518 §5.2.2.1): what jwcrypto's JWA writes."""
    half = len(cek) // 2
    pad = 16 - len(plaintext) % 16
    encryptor = Cipher(algorithms.AES(cek[half:]), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(plaintext + bytes((pad,)) * pad) + encryptor.finalize()
    return ciphertext, _cbc_mac(CBC_HMAC[enc], cek[:half], aad, iv, ciphertext)


def open_cbc_hmac(
    enc: str, cek: bytes, aad: bytes, iv: bytes, ciphertext: bytes, *, tag: bytes
) -> bytes:
    """RFC 7518 §5.2.2.2: the MAC first, in constant time, then decrypt; raises on any failure.

    What jwcrypto's JWA object does, with a one-call HMAC and the padding checked by hand
    (after the MAC, so no padding oracle): ~10 us less per `elastic` wrapped key, whose
    content encryption this is. Tests compare the two on valid and tampered tokens.
    """
    half = len(cek) // 2
    if not hmac.compare_digest(_cbc_mac(CBC_HMAC[enc], cek[:half], aad, iv, ciphertext), tag):
        raise ValueError("the MAC does not verify")
    decryptor = Cipher(algorithms.AES(cek[half:]), modes.CBC(iv)).decryptor()
    padded = decryptor.update(ciphertext) + decryptor.finalize()
    pad = padded[-1] if padded else 0
    if not 1 <= pad <= 16 or padded[-pad:] != bytes((pad,)) * pad:
        raise ValueError("bad padding")
    return padded[:-pad]
