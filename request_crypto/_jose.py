"""The allow-listed compact JWE (RFC 7516) that both wire formats are made of (private).

One table each of the key-management and content-encryption algorithms allowed (and one
compression, DEF); `parse_compact` refuses any header outside them, so every format and every
key source gets the same allow-list. Decryption never sees a private key: it asks a
`KeySource` to unwrap the content key, so the key may live in a file, an HSM or a KMS.

Why not jwcrypto's JWE object: it is correct but costs ~110 us per token on top of the RSA
operation (2,500 vs 3,500 unwraps/s measured here), which caps the `jwe` format near 70% of
the RSA bound; and the `elastic` format needs its header bytes in one exact member order. So
this module parses and checks the compact form itself and hands every cryptographic step to
a library: RSA-OAEP, AES-GCM, AES-CBC and the CBC algorithms' HMAC to `cryptography`. (Not
even jwcrypto's JWA registry is imported: it pulls in x509 and costs every command ~40 ms of
start-up.) Everything here is tested against jwcrypto, joserfc and the npm `jose` in both
directions.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ._b64 import ascii_bytes, b64url_decode, b64url_decode_jwe, b64url_encode
from ._cbc_hmac import CBC_HMAC, open_cbc_hmac, seal_cbc_hmac
from ._inflate import inflate
from ._json import dumps_utf8_standard, reject_constant
from .errors import (
    DecryptionError,
    InternalSignal,
    MalformedBodyError,
    NoKeyFoundError,
    PayloadTooLargeError,
    RequestCryptoError,
    UnsupportedAlgorithmError,
)

if TYPE_CHECKING:
    from .keys.source import KeySource

__all__ = [
    "CONTENT_ENCRYPTION_ALGORITHMS",
    "KEY_MANAGEMENT_ALGORITHMS",
    "CompactJWE",
    "check_wire_jwe",
    "decrypt_common_wrapped_key",
    "decrypt_compact",
    "encrypt_compact",
    "encrypt_direct",
    "parse_common_compact",
    "parse_compact",
    "parse_json_header",
    "shown",
]

#: Key management: RSA-OAEP only. Never RSA1_5, dir, none, ECDH, AES key wrap or PBES2.
KEY_MANAGEMENT_ALGORITHMS: Mapping[str, padding.OAEP] = {
    "RSA-OAEP": padding.OAEP(padding.MGF1(hashes.SHA1()), hashes.SHA1(), None),  # noqa: S303
    "RSA-OAEP-256": padding.OAEP(padding.MGF1(hashes.SHA256()), hashes.SHA256(), None),
}
#: Content encryption allowed, each with its content key's size in bytes (RFC 7518 §5).
CONTENT_ENCRYPTION_ALGORITHMS: Mapping[str, int] = {
    "A128CBC-HS256": 32,
    "A256CBC-HS512": 64,
    "A128GCM": 16,
    "A256GCM": 32,
}
#: RFC 7518 §5.2 and §5.3: the IV and tag lengths, in bytes, of each content algorithm.
IV_AND_TAG_LENGTHS: Mapping[str, tuple[int, int]] = {
    "A128CBC-HS256": (16, 16),
    "A256CBC-HS512": (16, 32),
    "A128GCM": (12, 16),
    "A256GCM": (12, 16),
}
#: The content key, IV and tag lengths of each content algorithm, in bytes: one lookup per token.
_LENGTHS: Mapping[str, tuple[int, int, int]] = {
    enc: (CONTENT_ENCRYPTION_ALGORITHMS[enc], *IV_AND_TAG_LENGTHS[enc])
    for enc in CONTENT_ENCRYPTION_ALGORITHMS
}
#: GCM tokens up to this size open in one AESGCM call, a few us cheaper per token than a
#: streaming context; larger ones stream, so the ciphertext is not copied to append the tag.
_GCM = frozenset({"A128GCM", "A256GCM"})
_ONE_SHOT_GCM = 64 * 1024
#: Direct encryption with a shared secret: parsed here, opened only by a `dir` key set.
DIRECT = "dir"
#: The only compression JWE defines: raw DEFLATE (RFC 1951).
DEFLATE = "DEF"
#: A protected header this long (base64url characters) is an attack, not a header.
MAX_PROTECTED_HEADER = 4096
#: Header values nested deeper than this are refused: the header is handed back to callers
#: in metadata, and a value nested hundreds deep would make their logging or JSON recurse.
MAX_HEADER_DEPTH = 8


class CompactJWE(NamedTuple):
    """A compact JWE whose structure and header have been checked, not yet decrypted."""

    protected: bytes  # the base64url text as sent: it is the AAD of content encryption
    header: dict[str, Any]
    encrypted_key: bytes
    iv: bytes
    ciphertext: bytes
    tag: bytes

    @property
    def kid(self) -> str | None:
        kid = self.header.get("kid")
        return kid if isinstance(kid, str) else None

    @property
    def alg(self) -> str:
        return str(self.header["alg"])


def encrypt_compact(
    public_key: rsa.RSAPublicKey, header: Mapping[str, str], plaintext: bytes
) -> str:
    """Encrypt to one RSA key; `header` is written in the given member order."""
    protected = _protected_text(header)
    enc = header["enc"]
    if header.get("zip") == DEFLATE:
        plaintext = _deflate(plaintext)
    cek_length, iv_length, _ = _LENGTHS[enc]
    # The CEK and the IV from one getrandom call: a system call less per body.
    fresh = os.urandom(cek_length + iv_length)
    cek, iv = fresh[:cek_length], fresh[cek_length:]
    encrypted_key = public_key.encrypt(cek, KEY_MANAGEMENT_ALGORITHMS[header["alg"]])
    ciphertext, tag = _seal_content(enc, cek, iv, protected.encode("ascii"), plaintext)
    return ".".join(
        (protected, *(b64url_encode(part) for part in (encrypted_key, iv, ciphertext, tag)))
    )


#: Plaintexts up to this size (the `elastic` passphrase: 32 bytes) are deflated with a 512-byte
#: window and the smallest hash table: the stream zlib's defaults write (tests compare), without
#: their ~270 KB of state, whose allocation measured 2.6 us per body, and 46 us in a process
#: whose allocator hands those pages back between bodies.
_SMALL_DEFLATE = 64


def _deflate(plaintext: bytes) -> bytes:
    """Raw DEFLATE (RFC 1951) at zlib's default level."""
    small = len(plaintext) <= _SMALL_DEFLATE
    compressor = zlib.compressobj(  # zlib.compress: wbits from 3.11
        6, zlib.DEFLATED, -9 if small else -zlib.MAX_WBITS, 1 if small else 8
    )
    return compressor.compress(plaintext) + compressor.flush()


#: Protected headers as written, by their members: a sender writes the same few over and over
#: (one per kid and content type), so each is serialized and encoded once. Bounded.
_PROTECTED_TEXT: dict[tuple[tuple[str, str], ...], str] = {}


def _protected_text(header: Mapping[str, str]) -> str:
    members = tuple(header.items())
    text = _PROTECTED_TEXT.get(members)
    if text is None:
        text = b64url_encode(dumps_utf8_standard(dict(header)))  # as JSON.stringify writes it
        if len(_PROTECTED_TEXT) >= _HEADER_CACHE_SIZE:
            _PROTECTED_TEXT.clear()
        _PROTECTED_TEXT[members] = text
    return text


def _seal_content(
    enc: str, cek: bytes, iv: bytes, aad: bytes, plaintext: bytes
) -> tuple[bytes, bytes]:
    """(ciphertext, tag) under a fresh `iv`: GCM in one call when small, else streamed (no copy
    to split off the tag); CBC + HMAC."""
    if enc in CBC_HMAC:
        return seal_cbc_hmac(enc, cek, iv, aad, plaintext)
    if len(plaintext) <= _ONE_SHOT_GCM:
        sealed = AESGCM(cek).encrypt(iv, plaintext, aad)
        return sealed[:-16], sealed[-16:]
    encryptor = Cipher(algorithms.AES(cek), modes.GCM(iv)).encryptor()
    encryptor.authenticate_additional_data(aad)
    ciphertext = encryptor.update(plaintext)
    encryptor.finalize()
    return ciphertext, encryptor.tag


def encrypt_direct(secret: bytes, header: Mapping[str, str], plaintext: bytes) -> str:
    """Encrypt with a shared A256GCM key (`alg: "dir"`): the encrypted key part is empty."""
    protected = _protected_text(header)
    iv = os.urandom(12)
    sealed = AESGCM(secret).encrypt(iv, plaintext, protected.encode("ascii"))
    parts = (iv, sealed[:-16], sealed[-16:])
    return ".".join((protected, "", *(b64url_encode(part) for part in parts)))


def parse_compact(token: str | bytes, *, direct: bool = False) -> CompactJWE:
    """Split and check a compact JWE; raises MalformedBodyError or UnsupportedAlgorithmError.

    `direct` says the caller holds `dir` secrets: then only `alg: "dir"` is accepted, and
    otherwise `dir` is refused (an RSA receiver never takes a shared-secret body).
    """
    raw = ascii_bytes(token, "the JWE")
    parts = raw.split(b".")
    if len(parts) != 5:
        raise MalformedBodyError(
            f"a compact JWE has 5 dot-separated parts; this one has {len(parts)}"
        )
    protected = parts[0]
    header = _protected_header(protected)
    if (header["alg"] == DIRECT) != direct:
        raise UnsupportedAlgorithmError(
            "this receiver holds dir shared secrets and opens only alg 'dir' bodies"
            if direct
            else "JWE key management 'dir' (a shared secret) is refused: this receiver holds "
            "RSA keys; a dir body opens only with the dir secret set it was made with"
        )
    # The four parts in one go when all are canonical (what senders write); else one by one,
    # which accepts padding and raises the first bad part's error.
    decoded = b64url_decode_jwe(raw, parts) or [
        b64url_decode(part, what) for part, what in zip(parts[1:], _PART_NAMES, strict=True)
    ]
    return CompactJWE(protected, header, *decoded)


_PART_NAMES = ("the JWE encrypted key", "the JWE IV", "the JWE ciphertext", "the JWE tag")


class CommonShape(NamedTuple):
    """What a common parse vouches for besides five canonical parts: a header that `fits`
    (remembered by its text in `cache`), an IV of `iv_length` bytes and a 16-byte tag."""

    cache: dict[bytes, dict[str, Any]]
    fits: Callable[[dict[str, Any]], bool]
    iv_length: int


def parse_common_compact(
    token: str | bytes | bytearray,
    *,
    max_token_size: int,
    max_plaintext: int,
    shape: CommonShape | None = None,
) -> CompactJWE | None:
    """The common `jwe` body, parsed in one straight line; None for anything else.

    Why: at 1 KB a `jwe` decrypt's own work is mostly the general path's layers (the wire
    check, the size check, the parse, each looking at the header again), and with caches cold
    after the RSA each function and object on the way costs several times its warm price.
    This path vouches only for what senders write: text or bytes of at most 64 KiB (and
    `max_token_size`), five canonical unpadded base64url parts, a header of exactly `alg`
    (RSA-OAEP or RSA-OAEP-256), `enc` (A128GCM or A256GCM), a string `kid` and maybe a
    string `cty` (a signed body's `JWT`, checked after opening as for any body), a 12-byte IV,
    a 16-byte tag and a ciphertext within `max_plaintext` (GCM: as long as the plaintext).
    For anything else, hostile bodies included, it returns None before any key is used, and
    `check_wire_jwe` + `parse_compact` give the error the body deserves. What it returns is
    what `parse_compact` returns for the same token (tests compare the two). Another `shape`
    vouches for another common token (`parse_common_wrapped_key`).
    """
    if type(token) not in (str, bytes) or len(token) > min(max_token_size, _ONE_SHOT_GCM):
        return None  # checked before the ASCII copy: a 5 MB body is not copied to be refused
    # An `elastic` body (no dot): neither copied to ASCII nor split (~1 us less at 1 KB).
    if ("." if type(token) is str else b".") not in token:  # type: ignore[operator]
        return None
    raw = token.encode("ascii") if type(token) is str and token.isascii() else token
    if type(raw) is not bytes:  # not ASCII text
        return None
    cache, fits, iv_length = shape or _COMMON_BODY
    parts = raw.split(b".")
    header = None
    if len(parts) == 5:
        header = cache.get(parts[0]) or _common_header(parts[0], cache, fits)
    # One function, not a layer per step: with caches cold after the RSA, each call on the
    # way costs several times its warm price.
    decoded = None if header is None else b64url_decode_jwe(raw, parts)
    if decoded is None or len(decoded[1]) != iv_length or len(decoded[3]) != 16:
        return None
    if len(decoded[2]) > max_plaintext:
        return None
    # tuple.__new__: the NamedTuple's own __new__ is a Python function (~0.15 us more).
    return tuple.__new__(CompactJWE, (parts[0], dict(header), *decoded))  # type: ignore[arg-type]


def parse_common_wrapped_key(token: bytes, *, max_token_size: int) -> CompactJWE | None:
    """The `elastic` wrapped key as senders write it, parsed in one straight line; else None.

    Why, as for `parse_common_compact`: with caches cold after the PBKDF2, each layer of the
    general path costs several times its warm price. It vouches only for the key packBody
    writes: at most `max_token_size` bytes (and 64 KiB), five canonical unpadded base64url
    parts, a header of exactly `alg` (RSA-OAEP or RSA-OAEP-256), `enc` A128CBC-HS256, `zip`
    DEF and a string `kid`, a 16-byte IV and tag and at most 64 bytes of ciphertext (a 32-byte
    passphrase, deflated and padded, is 48). Anything else: None before any key is used; what
    it returns, `parse_compact` returns for the same token (tests compare them).
    """
    return parse_common_compact(
        token, max_token_size=max_token_size, max_plaintext=64, shape=_WRAPPED_KEY
    )


#: Headers the common parses vouch for, by their base64url text (bounded, as below): `jwe`
#: bodies' and `elastic` wrapped keys'.
_COMMON_HEADERS: dict[bytes, dict[str, Any]] = {}
_WRAPPED_KEY_HEADERS: dict[bytes, dict[str, Any]] = {}
_COMMON_MEMBERS = (frozenset({"alg", "enc", "kid"}), frozenset({"alg", "enc", "kid", "cty"}))
_WRAPPED_KEY_MEMBERS = frozenset({"alg", "enc", "zip", "kid"})


def _is_common_header(header: dict[str, Any]) -> bool:
    return (
        header.keys() in _COMMON_MEMBERS
        and header["alg"] in KEY_MANAGEMENT_ALGORITHMS
        and header["enc"] in _GCM
        and isinstance(header["kid"], str)
        and isinstance(header.get("cty", ""), str)
    )


#: The content encryption of every wrapped key packBody writes (the common one's only `enc`).
_WRAPPED_KEY_ENC = "A128CBC-HS256"


def _is_wrapped_key_header(header: dict[str, Any]) -> bool:
    return (
        header.keys() == _WRAPPED_KEY_MEMBERS
        and header["alg"] in KEY_MANAGEMENT_ALGORITHMS
        and header["enc"] == _WRAPPED_KEY_ENC
        and header["zip"] == DEFLATE
        and isinstance(header["kid"], str)
    )


#: The two common tokens: a `jwe` body, an `elastic` wrapped key.
_COMMON_BODY = CommonShape(_COMMON_HEADERS, _is_common_header, 12)
_WRAPPED_KEY = CommonShape(_WRAPPED_KEY_HEADERS, _is_wrapped_key_header, 16)


def _common_header(
    protected: bytes,
    cache: dict[bytes, dict[str, Any]],
    fits: Callable[[dict[str, Any]], bool],
) -> dict[str, Any] | None:
    """The checked header if it `fits` (see the common parses), else None."""
    try:
        header = _protected_header(protected)
    except RequestCryptoError:
        return None  # the general path raises it again, in its own order of checks
    if not fits(header):
        return None
    if len(cache) >= _HEADER_CACHE_SIZE:
        cache.clear()
    cache[protected] = header
    return header


def check_wire_jwe(token: str | bytes | bytearray, *, max_plaintext: int) -> None:
    """The `jwe` wire format's own rules, checked before any key is used.

    It carries no compression. JWE allows `zip: DEF`, but then an 87 KB body inflates to
    64 MiB: anyone holding the public key can send one. So any `zip` header is refused here
    (the `elastic` format's wrapped key, which needs it, is bounded apart). And the
    ciphertext cannot be longer than the plaintext limit allows, so an oversized body is
    refused before its RSA, AES and base64 work. Raises what `parse_compact` would for a
    malformed header.
    """
    dot, equals = (".", "=") if isinstance(token, str) else (b".", b"=")
    find: Callable[..., int] = token.find
    dots = [find(dot)]
    while dots[-1] >= 0 and len(dots) < 4:
        dots.append(find(dot, dots[-1] + 1))
    if dots[-1] < 0:
        return  # not five parts: parse_compact says so
    header = _protected_header(ascii_bytes(token[: dots[0]], "the JWE"))
    if "zip" in header:
        raise UnsupportedAlgorithmError(
            "the jwe format carries no compression, so a JWE header with 'zip' is refused "
            "(a compressed body can inflate to thousands of times its size): encrypt without "
            "'zip', as RequestEncryptor does"
        )
    tail = token[max(dots[3] - 2, dots[2] + 1) : dots[3]]  # padding, if any: not the whole part
    characters = dots[3] - dots[2] - 1 - len(tail) + len(tail.rstrip(equals))  # type: ignore[arg-type]
    least = characters * 3 // 4 - (0 if header["enc"] in _GCM else 16)  # CBC pads 1 to 16
    if least > max_plaintext:
        raise PayloadTooLargeError("the JWE plaintext", least, max_plaintext)


def _protected_header(protected: bytes) -> dict[str, Any]:
    if len(protected) > MAX_PROTECTED_HEADER:
        raise MalformedBodyError(
            f"the JWE protected header is {len(protected)} characters; a header longer than "
            f"{MAX_PROTECTED_HEADER} is refused unread"
        )
    return _checked_header(protected)


#: Checked headers by their base64url text. Every body sent to one key carries the same
#: header, so its decode, JSON parse and checks run once per text, not once per body (about
#: a tenth of a `jwe` decrypt's own work). Only flat headers are kept, and each caller gets
#: its own copy; the cache is bounded (emptied when full), so unique headers from an
#: attacker cost what they cost without it.
_HEADER_CACHE: dict[bytes, dict[str, Any]] = {}
_HEADER_CACHE_SIZE = 256


def _checked_header(protected: bytes) -> dict[str, Any]:
    cached = _HEADER_CACHE.get(protected)
    if cached is not None:
        return dict(cached)
    header = _parse_header(b64url_decode(protected, "the JWE protected header"))
    if not any(isinstance(value, (dict, list)) for value in header.values()):
        if len(_HEADER_CACHE) >= _HEADER_CACHE_SIZE:
            _HEADER_CACHE.clear()
        _HEADER_CACHE[protected] = dict(header)
    return header


class _DuplicateMember(InternalSignal):
    """A JSON object repeats a member name (caught where the header is parsed)."""


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    header = dict(pairs)
    if len(header) != len(pairs):
        raise _DuplicateMember
    return header


# Built once: json.loads with hooks would build a decoder (and its scanner) per token.
_HEADER_DECODER = json.JSONDecoder(
    object_pairs_hook=_reject_duplicates, parse_constant=reject_constant
)


def parse_json_header(raw: bytes, what: str) -> dict[str, Any]:
    """A JOSE header's JSON: strict UTF-8, one object, no repeated member, bounded depth."""
    problem = None
    try:
        # Strict UTF-8 (RFC 7516 §5.2): no UTF-16/32 detection, no BOM, no NaN or Infinity.
        header = _HEADER_DECODER.decode(raw.decode("utf-8"))
    except _DuplicateMember:
        problem = f"{what} repeats a member name"
    except (ValueError, RecursionError):
        problem = f"{what} is not UTF-8 JSON"
    # Raised outside the handlers, so no exception of the parser rides along as __context__.
    if problem is not None:
        raise MalformedBodyError(problem)
    if not isinstance(header, dict):
        raise MalformedBodyError(f"{what} is not a JSON object")
    if _depth_exceeds(header, MAX_HEADER_DEPTH):
        raise MalformedBodyError(f"{what} nests values more than {MAX_HEADER_DEPTH} levels deep")
    return header


def _parse_header(raw: bytes) -> dict[str, Any]:
    header = parse_json_header(raw, "the JWE protected header")
    _check_header(header)
    return header


def _depth_exceeds(value: Any, limit: int) -> bool:
    """Whether JSON `value` nests containers more than `limit` deep (iterative: no recursion)."""
    if isinstance(value, dict) and not any(isinstance(v, (dict, list)) for v in value.values()):
        return False  # the usual flat header, without the walk below
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if not isinstance(item, (dict, list)):
            continue
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children)
    return False


def _check_header(header: dict[str, Any]) -> None:
    if "crit" in header:
        raise UnsupportedAlgorithmError(
            "the JWE header has a 'crit' member; no extension is supported"
        )
    alg = _string_member(header, "alg")
    if alg not in KEY_MANAGEMENT_ALGORITHMS and alg != DIRECT:
        raise UnsupportedAlgorithmError(
            f"JWE key management {shown(alg)} is not allowed; use RSA-OAEP or RSA-OAEP-256"
        )
    enc = _string_member(header, "enc")
    if enc not in CONTENT_ENCRYPTION_ALGORITHMS:
        raise UnsupportedAlgorithmError(
            f"JWE content encryption {shown(enc)} is not allowed; use one of "
            + ", ".join(CONTENT_ENCRYPTION_ALGORITHMS)
        )
    if "zip" in header and _string_member(header, "zip") != DEFLATE:
        raise UnsupportedAlgorithmError(
            f"JWE compression {shown(header['zip'])} is not supported; only DEF is"
        )
    if "kid" in header and not isinstance(header["kid"], str):
        raise MalformedBodyError("the JWE header's 'kid' is not a string")


def _string_member(header: dict[str, Any], name: str) -> str:
    value = header.get(name)
    if value is None and name not in header:
        raise MalformedBodyError(f"the JWE protected header has no {name!r} member")
    if not isinstance(value, str):
        raise MalformedBodyError(
            f"the JWE header's {name!r} is {type(value).__name__}, not a string"
        )
    return value


def shown(value: str) -> str:
    """Quote a header value from an untrusted body, bounded so logs stay readable."""
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def decrypt_compact(jwe: CompactJWE, keys: KeySource, kid: str, *, max_plaintext: int) -> bytes:
    """Have `keys` unwrap the CEK for `kid`, authenticate and decrypt, inflate <= `max_plaintext`.

    Every failure here is the one DecryptionError, except an authentic plaintext that inflates
    past the limit (PayloadTooLargeError: the body is genuine, just too big) and what the key
    source raises other than DecryptionError (an unknown kid, a source that is down). The error
    is raised outside any exception handler, so it carries no `__context__` naming the step.
    """
    header = jwe.header
    enc = header["enc"]
    cek_length, iv_length, tag_length = _LENGTHS[enc]
    try:
        cek = keys.unwrap(kid, header["alg"], jwe.encrypted_key)
    except DecryptionError:  # the source's one "this key cannot open it": see below
        cek = b""
    authentic = len(cek) == cek_length
    if not authentic:
        # RFC 7516 §11.5: carry on with a random CEK, so a bad key takes the same path (and
        # about the same time) as a bad tag, and the two cannot be told apart.
        cek = os.urandom(cek_length)
    authentic = authentic and len(jwe.iv) == iv_length and len(jwe.tag) == tag_length
    plaintext: bytes | None = None
    try:
        # Small GCM here, not in `_open_content`: a call costs more on caches the RSA cooled.
        if enc in _GCM and len(jwe.ciphertext) <= _ONE_SHOT_GCM:
            plaintext = AESGCM(cek).decrypt(jwe.iv, jwe.ciphertext + jwe.tag, jwe.protected)
        else:
            plaintext = _open_content(enc, cek, jwe)
    except Exception:  # a bad tag, IV or padding: the one error below
        authentic = False
    del cek
    if not authentic or plaintext is None:
        raise DecryptionError()
    if header.get("zip") == DEFLATE:
        return inflate(plaintext, max_plaintext)
    if len(plaintext) > max_plaintext:
        raise PayloadTooLargeError("the JWE plaintext", len(plaintext), max_plaintext)
    return plaintext


def decrypt_common_wrapped_key(
    keys: KeySource, jwe: CompactJWE, length: int
) -> tuple[bytes, dict[str, Any]]:
    """The passphrase in a wrapped key `parse_common_wrapped_key` vouched for, and its key's
    metadata: `open_parsed(keys, jwe, max_plaintext=length)` in one straight line (the same
    lookups, order and errors; a plaintext not `length` bytes is the DecryptionError). Why:
    each function of the general path costs several times its warm price on the caches a 4 ms
    PBKDF2 leaves cold."""
    kid = jwe.header["kid"]  # a str: the common header has one
    metadata = keys.key_metadata(kid) if keys.can_decrypt(kid) else None
    if metadata is None:
        raise NoKeyFoundError(kid)
    try:
        cek = keys.unwrap(kid, jwe.header["alg"], jwe.encrypted_key)
    except DecryptionError:  # as in decrypt_compact: the same path as a bad tag
        cek = b""
    cek_length = CONTENT_ENCRYPTION_ALGORITHMS[_WRAPPED_KEY_ENC]
    authentic = len(cek) == cek_length
    if not authentic:
        cek = os.urandom(cek_length)
    plaintext: bytes | None = None
    try:
        opened = open_cbc_hmac(
            _WRAPPED_KEY_ENC, cek, jwe.protected, jwe.iv, jwe.ciphertext, tag=jwe.tag
        )
        plaintext = inflate(opened, length)
    except Exception:  # a bad tag or padding, a bad stream, more than `length` bytes
        authentic = False
    del cek
    if not authentic or plaintext is None or len(plaintext) != length:
        raise DecryptionError()  # raised here: no __context__ to tell why
    return plaintext, metadata


def _open_content(enc: str, cek: bytes, jwe: CompactJWE) -> bytes:
    """Authenticate and decrypt all but small GCM content (any failure raises; caller maps it)."""
    if enc in CBC_HMAC:
        return open_cbc_hmac(enc, cek, jwe.protected, jwe.iv, jwe.ciphertext, tag=jwe.tag)
    decryptor = Cipher(algorithms.AES(cek), modes.GCM(jwe.iv, jwe.tag)).decryptor()
    decryptor.authenticate_additional_data(jwe.protected)
    plaintext = decryptor.update(jwe.ciphertext)
    decryptor.finalize()  # raises InvalidTag before anything is returned
    return plaintext
