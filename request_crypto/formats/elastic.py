"""The `elastic` wire format, byte-compatible with `@elastic/request-crypto` 2.x.

``body = base64url_nopad(utf8(JSON{"encryptedAESKey": K, "encryptedPayload": P}))``, members in
that order, exactly as packBody writes it. A fresh 32-byte passphrase per request encrypts the
payload (`nodecrypto`, P) and is itself wrapped in an RSA-OAEP compact JWE for the receiver's
kid (K: DEFLATE, A128CBC-HS256, as the original writes it).
"""

from __future__ import annotations

import base64
import functools
import itertools
import json
import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

from .. import _accel
from .._b64 import (
    CHUNK,
    Decline,
    b64encode_standard,
    b64url_decode,
    b64url_decode_canonical,
    b64url_encode,
    b64url_encode_padded,
    decode_standard_quads,
    decode_standard_text,
    decode_url_groups,
    decode_url_tail,
    iter_b64url_decode,
    url_padding,
)
from .._jose import CompactJWE, decrypt_common_wrapped_key, parse_common_wrapped_key, parse_compact
from .._json import dumps_utf8, measure_json
from ..errors import DecryptionError, MalformedBodyError, PayloadTooLargeError
from ..keys.signing import DirectKeySet
from ..keys.source import JWKDecryptResult, KeySource, check_token, open_parsed
from ._protocol import Format, Opened
from .nodecrypto import (
    HEADER_LENGTH,
    KEY_LENGTH_IN_BYTES,
    PassphraseCipher,
    check_layout,
    decode_standard_base64,
    decrypt_layout,
    generate_passphrase,
)

if TYPE_CHECKING:
    from ..keys.jwks import JWKManager
    from ..limits import Limits

__all__ = [
    "ELASTIC",
    "ElasticBody",
    "ElasticFormat",
    "open_passphrase",
    "pack_body",
    "pack_encrypted_payload",
    "pack_sealed",
    "unpack_body",
    "unpack_encrypted_payload",
    "unwrap_passphrase",
]


class CommonlyOpened(NamedTuple):
    """What `ElasticFormat.decrypt_common` opened: the plaintext, and how (for metadata)."""

    plaintext: bytes
    passphrase: bytes
    wrapped_key: CompactJWE
    key_metadata: dict[str, Any]


class ElasticBody(NamedTuple):
    """The two parts of an `elastic` body, both still encrypted."""

    encrypted_aes_key: str
    encrypted_payload: str


# What packBody writes; anything else still parses, through the general JSON path.
_CANONICAL = re.compile(
    rb'\{"encryptedAESKey":"([A-Za-z0-9_.-]*)","encryptedPayload":"([A-Za-z0-9+/=]*)"\}'
)


def pack_body(encrypted_aes_key: str, encrypted_payload: str) -> str:
    """Join the wrapped key and the encrypted payload into one base64url body."""
    # JSON.stringify's text, as packBody writes it (lone surrogates escaped, not a crash).
    return b64url_encode(
        dumps_utf8({"encryptedAESKey": encrypted_aes_key, "encryptedPayload": encrypted_payload})
    )


def unpack_body(body: str | bytes) -> ElasticBody:
    """Split an `elastic` body into its two parts (both still encrypted)."""
    decoded = b64url_decode(body, "the body")
    match = _CANONICAL.fullmatch(decoded)
    if match:
        return ElasticBody(match.group(1).decode("ascii"), match.group(2).decode("ascii"))
    return _unpack_json(decoded)


# The canonical form above, in pieces, for the streaming paths (large bodies in bounded memory).
_PREFIX = b'{"encryptedAESKey":"'
_SEPARATOR = b'","encryptedPayload":"'
_SUFFIX = b'"}'
_KEY_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-"
#: A canonical body whose wrapped key has not ended this far in is left to the general path.
_MAX_HEAD = 64 * 1024


#: Bodies (and sealed layouts) up to this length are unpacked (packed) whole, larger ones a
#: piece at a time: on a 1 KB body the pieces' generators and joins cost ~10 us (decrypt) and
#: ~5 us (encrypt) of the ~45 us that the library adds to PBKDF2 and RSA.
_WHOLE_UP_TO = 64 * 1024


#: Layout pieces for `_pack`: given (head, step), ``layout[head:head+step]``, the next `step`
#: bytes, ..., then ``layout[:head]`` last.
LayoutPieces = Callable[[int, int], Iterator["bytes | memoryview"]]


def pack_encrypted_payload(encrypted_aes_key: str, payload: bytes | bytearray | memoryview) -> str:
    """`pack_body(key, standard_base64(payload))`, the same text, in bounded extra memory.

    Neither base64 text is ever held whole: the standard base64 of `payload` is produced a
    chunk at a time and fed straight into the outer base64url, written into one buffer the
    size of the body.
    """
    view = memoryview(payload)

    def pieces(head: int, step: int) -> Iterator[memoryview]:
        for start in range(head, len(view), step):
            yield view[start : start + step]
        yield view[:head]

    return _pack(encrypted_aes_key, len(view), pieces, lambda: payload)


def pack_sealed(encrypted_aes_key: str, cipher: PassphraseCipher, plaintext: bytes) -> str:
    """`pack_encrypted_payload(key, cipher.seal(plaintext))` without the sealed layout whole.

    The ciphertext is encrypted, base64-encoded twice and written into the body a piece at a
    time, so a 5 MB encrypt holds the plaintext and the body, not also the layout (peak
    beyond input and result: 3.8x -> 2.8x the payload, tracemalloc). Up to `_WHOLE_UP_TO`
    the layout is made whole: at that size the pieces cost more than the copies.
    """
    return _pack(
        encrypted_aes_key,
        HEADER_LENGTH + len(plaintext),
        functools.partial(cipher.seal_pieces, plaintext),
        lambda: cipher.seal(plaintext),
    )


def _pack(
    encrypted_aes_key: str,
    size: int,
    pieces: LayoutPieces,
    whole: Callable[[], bytes | bytearray | memoryview],
) -> str:
    """The body for a layout of `size` bytes given as `pieces`; `whole()` for escaped keys."""
    key = encrypted_aes_key.encode("ascii", "replace")
    if key.translate(None, _KEY_ALPHABET):  # would need JSON escaping: the general path
        return pack_body(encrypted_aes_key, b64encode_standard(whole()).decode("ascii"))
    prefix = _PREFIX + key + _SEPARATOR
    if size <= _WHOLE_UP_TO:  # small: each layer in one call (~5 us less than in pieces)
        return b64url_encode(b"".join((prefix, b64encode_standard(whole()), _SUFFIX)))
    total = len(prefix) + 4 * ((size + 2) // 3) + len(_SUFFIX)
    out = bytearray(4 * ((total + 2) // 3))  # exactly the padded body: no growth, no slack

    def put(position: int, text: bytes) -> int:
        encoded = b64url_encode_padded(text)
        out[position : position + len(encoded)] = encoded
        return position + len(encoded)

    # The outer base64 must be fed whole 3-byte groups until the end. A piece of 9n bytes
    # encodes to 12n characters, a multiple of 3; the head piece is 3k bytes longer than a
    # multiple of the step (k = -len(prefix) mod 3: 4k characters more), which completes the
    # prefix's last group. So every piece goes through both layers on its own, written at
    # its place (the head, which holds the tag, last), never copied to join a carry.
    step = 9 * max(CHUNK // 12, 1)  # ~CHUNK characters of base64 a piece
    head = min(step * -(-HEADER_LENGTH // step) + 3 * (-len(prefix) % 3), size)
    given = pieces(head, step)
    position = 4 * (len(prefix) + 4 * head // 3) // 3
    for start in range(head, size, step):
        text = b64encode_standard(next(given))
        position = put(position, text + _SUFFIX if start + step >= size else text)
    text = prefix + b64encode_standard(next(given))
    put(0, text + _SUFFIX if head == size else text)
    return str(memoryview(out)[: (total * 4 + 2) // 3], "ascii")


def unpack_encrypted_payload(body: str | bytes) -> tuple[str, bytes | bytearray] | None:
    """`unpack_body` then the standard-base64 decode of the payload, within 2.3x the payload
    in extra memory (a str that cannot be viewed: in pieces, ~1x).

    For a body in packBody's canonical form (what both implementations write) this returns the
    wrapped key and the decoded payload (salt, IV, tag, ciphertext), exactly what
    `unpack_body` + `decode_standard_base64` give. For anything else it returns None, and the
    caller takes that general path, which raises the error the body deserves.
    """
    try:
        if type(body) in (str, bytes) and len(body) <= _WHOLE_UP_TO:
            key, raw = _unpack_whole(body)
            return key.decode("ascii"), raw
        if _accel.pybase64 is not None and isinstance(body, (str, bytes, bytearray)):
            return _unpack_large(body)
        return _unpack_streaming(body)
    except Decline:
        return None


def _unpack_large(body: str | bytes | bytearray) -> tuple[str, bytes | bytearray]:
    """`_unpack_streaming` of a large body, each layer decoded whole by pybase64 (the same
    Declines, and a few more: a payload text that is not whole groups, such as `QUJD=`).

    Why: on a 5 MB payload sent as bytes, ~1.8 ms against ~2.2 ms in pieces. The payload's
    text is decoded through a view of the decoded body, never copied; the peak is that
    body (1.33x the payload) and the layout (1x). A str body ending in a partial group (3
    in 4) cannot be viewed and is still unpacked in pieces (see decode_url_groups).
    """
    end = len(body) - url_padding(body)
    stop = end - end % 4
    if isinstance(body, str) and stop < len(body):  # see decode_url_groups
        return _unpack_streaming(body)
    tail = decode_url_tail(body[stop:end])  # the bytes of a partial last group: 0 to 2
    decoded = decode_url_groups(body, stop)
    separator = decoded.find(_SEPARATOR, len(_PREFIX), _MAX_HEAD + len(_SEPARATOR))
    start, end = separator + len(_SEPARATOR), len(decoded) + len(tail) - len(_SUFFIX)
    key = decoded[len(_PREFIX) : separator]
    if (
        separator < 0
        or start > end
        or not decoded.startswith(_PREFIX)
        or not (decoded[-len(_SUFFIX) :] + tail).endswith(_SUFFIX)
        or key.translate(None, _KEY_ALPHABET)
    ):
        raise Decline
    # The suffix is 2 bytes and `tail` at most 2: the payload's text ends within `decoded`.
    return key.decode("ascii"), decode_standard_text(decoded, start, end)


def _unpack_whole(body: str | bytes) -> tuple[bytes, bytes]:
    """`_unpack_streaming` of a small body, each layer decoded in one call (same Declines);
    the wrapped key as ASCII bytes.

    Only the unpadded canonical base64url of packBody's exact text is taken. Its members
    are found by hand, not by `_CANONICAL` (~3 us on 1 KB): the key is checked against its
    alphabet, and the payload's alphabet by its decoders, as in `_unpack_streaming`.
    """
    raw = body.encode("ascii") if type(body) is str and body.isascii() else body
    decoded = b64url_decode_canonical(raw) if type(raw) is bytes else None
    if decoded is None or not decoded.startswith(_PREFIX) or not decoded.endswith(_SUFFIX):
        raise Decline
    separator = decoded.find(_SEPARATOR, len(_PREFIX))
    start, end = separator + len(_SEPARATOR), len(decoded) - len(_SUFFIX)
    key = decoded[len(_PREFIX) : separator]
    if separator < 0 or start > end or key.translate(None, _KEY_ALPHABET):
        raise Decline
    payload = decoded[start:end]
    cut = max(len(payload) - 8, 0) & ~3  # whole groups of the alphabet, then the padded end
    head = decode_standard_quads(payload, 0, cut)
    try:
        # As in `_unpack_streaming`: the head was whole groups of the alphabet only, so this
        # decoder's verdict on the end is decode_standard_base64's on the whole text.
        tail = base64.b64decode(payload[cut:], validate=True)
    except ValueError:  # binascii.Error
        raise Decline from None
    return key, head + tail


def _unpack_streaming(body: str | bytes) -> tuple[str, bytearray]:
    pieces = iter_b64url_decode(body)
    head = b""
    for decoded in pieces:
        head += decoded
        separator = head.find(_SEPARATOR, len(_PREFIX))
        if separator >= 0:
            break
        if len(head) > _MAX_HEAD:
            raise Decline
    else:
        raise Decline
    key = head[len(_PREFIX) : separator]
    if not head.startswith(_PREFIX) or key.translate(None, _KEY_ALPHABET):
        raise Decline
    # The decoded body is at most 3/4 of the body's length; the payload at most 3/4 of that.
    out = bytearray((max(len(body) * 3 // 4 - separator, 0) * 3) // 4 + 3)
    view = memoryview(out)
    # Each piece is decoded where it lies, through a view, but for its last 8 to 11 characters
    # (the padding and the suffix may be there), carried over to the next: a few bytes joined
    # per piece instead of a copy of every piece.
    pending, text, start = b"", head, separator + len(_SEPARATOR)
    position = 0
    for decoded in itertools.chain(pieces, [b""]):
        cut = (len(pending) + len(text) - start - 8) & ~3
        if len(text) - start <= 64:  # short: join it to what is carried
            data = pending + text[start:]
            if cut > 0:
                position = _put(view, position, decode_standard_quads(data, 0, cut))
            pending = data[max(cut, 0) :]
        elif cut > 0:  # pending holds < 12 characters, so cut reaches well into `text`
            joined = -len(pending) % 4
            if pending:  # the group cut by the last piece's end, and any whole ones before
                first = pending + text[start : start + joined]
                position = _put(view, position, decode_standard_quads(first))
            stop = start + cut - len(pending)
            position = _put(view, position, decode_standard_quads(text, start + joined, stop))
            pending = text[stop:]
        text, start = decoded, 0
    tail = pending
    if not tail.endswith(_SUFFIX):
        raise Decline
    try:
        # The very decoder of decode_standard_base64: the chunks before were whole groups of
        # the alphabet only, so its verdict on this tail is its verdict on the whole text.
        chunk = base64.b64decode(tail[: -len(_SUFFIX)], validate=True)
    except ValueError:  # binascii.Error
        raise Decline from None
    position = _put(view, position, chunk)
    view.release()
    del out[position:]
    return key.decode("ascii"), out


def _put(view: memoryview, position: int, chunk: bytes) -> int:
    """Write `chunk` at `position` of the output; where the next one goes."""
    if position + len(chunk) > len(view):  # pragma: no cover - sized in _unpack_streaming
        raise Decline
    view[position : position + len(chunk)] = chunk
    return position + len(chunk)


#: The envelope's own JSON budget. It holds two strings; the JavaScript side ignores any other
#: member, so a few are tolerated, but never the millions of values that would cost a GB to
#: parse before anything is authenticated.
ENVELOPE_MAX_VALUES = 64
ENVELOPE_MAX_DEPTH = 8


def _unpack_json(decoded: bytes) -> ElasticBody:
    shape = measure_json(decoded, ENVELOPE_MAX_VALUES, ENVELOPE_MAX_DEPTH)
    if shape.values > ENVELOPE_MAX_VALUES or shape.too_deep:
        raise MalformedBodyError(
            f"the decoded body is not an elastic envelope: it holds more than "
            f"{ENVELOPE_MAX_VALUES} JSON values or nests more than {ENVELOPE_MAX_DEPTH} levels"
        )
    try:
        # Strict UTF-8 as the JavaScript side reads it (json.loads(bytes) would also take
        # UTF-16/32 and a BOM): the same body must not mean something here and fail there.
        document: Any = json.loads(decoded.decode("utf-8"))
    except (ValueError, RecursionError):
        raise MalformedBodyError("the decoded body is not UTF-8 JSON") from None
    if not isinstance(document, dict):
        raise MalformedBodyError("the decoded body is not a JSON object")
    parts = []
    for member in ("encryptedAESKey", "encryptedPayload"):
        value = document.get(member)
        if not isinstance(value, str):
            raise MalformedBodyError(f"the body has no {member!r} string member")
        parts.append(value)
    return ElasticBody(*parts)


def unwrap_passphrase(
    keys: KeySource, token: str | bytes, *, max_token_size: int
) -> JWKDecryptResult:
    """Open the wrapped key: it must inflate to exactly one 32-byte passphrase."""
    check_token(token, "the wrapped key", max_token_size)  # its own error, not the one below
    return open_passphrase(keys, parse_compact(token))


def open_passphrase(keys: KeySource, wrapped_key: CompactJWE) -> JWKDecryptResult:
    """`unwrap_passphrase` of a parsed wrapped key (same errors)."""
    try:
        opened: JWKDecryptResult | None = open_parsed(
            keys, wrapped_key, max_plaintext=KEY_LENGTH_IN_BYTES
        )
    except PayloadTooLargeError:  # it inflates past 32 bytes: not a passphrase
        opened = None
    if opened is None or len(opened.payload) != KEY_LENGTH_IN_BYTES:
        raise DecryptionError()  # raised here: no __context__ to tell why
    return opened


class ElasticFormat:
    """The `elastic` format (see the module docstring); `ELASTIC` is its one instance."""

    @property
    def name(self) -> Format:
        """`Format.ELASTIC`."""
        return Format.ELASTIC

    def detect(self, body: str | bytes) -> bool:
        """An `elastic` body is one base64url text: it has no dot."""
        return (body.find(".") if isinstance(body, str) else body.find(b".")) < 0

    def seal(self, keys: JWKManager, kid: str, plaintext: bytes) -> str:
        """Encrypt under a fresh passphrase, wrapped to `kid` as the original does."""
        passphrase = generate_passphrase()
        # pack_body(key, encrypt_bytes(plaintext)) without a whole base64 text or the sealed
        # layout in between: the ciphertext goes through both base64 layers a piece at a time.
        return pack_sealed(keys.encrypt(kid, passphrase), PassphraseCipher(passphrase), plaintext)

    def decrypt_common(
        self, keys: KeySource, body: str | bytes, limits: Limits
    ) -> CommonlyOpened | None:
        """Open the body both implementations write in one straight line, or None.

        Why: a 1 KB body's own work runs on caches the 4 ms PBKDF2 leaves cold, where each
        layer of the general path costs several times its warm price (docs/performance.md,
        "Where the elastic 1 KB time goes"). It vouches only for a canonical body within
        64 KiB and `max_body_size`, a layout within `max_inflated_size`, and the wrapped key
        `parse_common_wrapped_key` vouches for; anything else gets None before any key is
        used, and `open` raises what it deserves. Once a key is used, the answer is `open`'s:
        the same plaintext or the same error. The caller refuses first what `open` would
        refuse before this point for its own reasons (a required signature). `decrypt()`
        keeps only the plaintext; `open_common` builds the result objects from the rest.
        """
        if (
            type(body) not in (str, bytes)
            or len(body) > min(limits.max_body_size, _WHOLE_UP_TO)
            or isinstance(keys, DirectKeySet)
        ):
            return None
        try:
            token, raw = _unpack_whole(body)
        except Decline:
            return None
        if not HEADER_LENGTH <= len(raw) <= HEADER_LENGTH + limits.max_inflated_size:
            return None
        wrapped_key = parse_common_wrapped_key(token, max_token_size=limits.max_wrapped_key_size)
        if wrapped_key is None:
            return None
        passphrase, metadata = decrypt_common_wrapped_key(keys, wrapped_key, KEY_LENGTH_IN_BYTES)
        return CommonlyOpened(decrypt_layout(passphrase, raw), passphrase, wrapped_key, metadata)

    def open_common(self, keys: KeySource, body: str | bytes, limits: Limits) -> Opened | None:
        """`decrypt_common` with the result objects `decrypt_request` reports."""
        common = self.decrypt_common(keys, body, limits)
        if common is None:
            return None
        plaintext, passphrase, wrapped_key, metadata = common
        header = wrapped_key.header
        return Opened(plaintext, JWKDecryptResult(passphrase, metadata, header, list(header)))

    def open(self, keys: KeySource, body: str | bytes, limits: Limits) -> Opened:
        """Check the payload's structure and size, unwrap the passphrase, then decrypt.

        Canonical bodies (what both implementations write) are decoded in bounded memory;
        anything else takes the general path, which raises the error it deserves. No RSA or
        PBKDF2 work is spent on a payload that is malformed or over `max_inflated_size`.
        """
        unpacked: tuple[str, bytes | bytearray] | None = unpack_encrypted_payload(body)
        if unpacked is None:
            parts = unpack_body(body)
            encrypted_payload: bytes | bytearray = decode_standard_base64(
                parts.encrypted_payload, "the encrypted payload"
            )
            unpacked = parts.encrypted_aes_key, encrypted_payload
            del parts, encrypted_payload
        encrypted_aes_key, raw = unpacked
        del unpacked
        check_layout(raw)
        if len(raw) - HEADER_LENGTH > limits.max_inflated_size:  # GCM: as long as the plaintext
            raise PayloadTooLargeError(
                "the decrypted payload", len(raw) - HEADER_LENGTH, limits.max_inflated_size
            )
        wrapped = unwrap_passphrase(
            keys, encrypted_aes_key, max_token_size=limits.max_wrapped_key_size
        )
        plaintext = PassphraseCipher(wrapped.payload).decrypt_bytes(raw)
        return Opened(plaintext, wrapped)


#: The `elastic` format.
ELASTIC = ElasticFormat()
