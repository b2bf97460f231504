"""Issue 5: hostile input, the attacker's toolbox and the table of hostile bodies.

The tests are in test_hostile_table.py (each body gets exactly its error),
test_hostile_limits.py (bounded work and memory) and test_hostile_secrets.py (no leaks).

The bodies are crafted the way an attacker would: with the *public* key set only (it ships
with every sender) and the library's own primitives, so post-key cases are validly encrypted
and fail exactly where the case says. Each case asserts the exact error class.
"""

from __future__ import annotations

import base64
import json
import os
import random
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from jwcrypto.jwa import JWA
from jwcrypto.jwk import JWK

from request_crypto import (
    JWKManager,
    PassphraseCipher,
    RequestDecryptor,
    RequestEncryptor,
    pack_body,
)
from request_crypto._b64 import b64url_encode
from request_crypto._jose import CONTENT_ENCRYPTION_ALGORITHMS, KEY_MANAGEMENT_ALGORITHMS
from request_crypto.errors import (
    DecryptionError,
    JSONBudgetError,
    MalformedBodyError,
    MissingKidInBodyError,
    NoKeyFoundError,
    PayloadTooLargeError,
    RequestCryptoError,
    UnsupportedAlgorithmError,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
PAYLOAD = {"hostile": "test", "n": 1}
PLAIN = json.dumps(PAYLOAD, separators=(",", ":")).encode()
PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi")
MiB = 1024 * 1024


# -- the attacker's toolbox: public keys and the library's primitives ---------------------


class Kit:
    """A receiver (kibana_1, kibana_2: RSA-OAEP; oaep256: RSA-OAEP-256; public-only: no
    private half) and the public keys an attacker holds."""

    def __init__(self, private_jwks: dict[str, Any]) -> None:
        self.keys = JWKManager(private_jwks)
        self.keys.add_key("oaep256", alg="RSA-OAEP-256")
        self.keys.insert_key({**self.keys.get_public_jwk("kibana_2"), "kid": "public-only"})
        self.decryptor = RequestDecryptor(self.keys)
        public_set = self.keys.get_public_jwks()
        self.elastic = RequestEncryptor(public_set)
        self.jwe = RequestEncryptor(public_set, format="jwe")
        self.publics = {jwk["kid"]: JWK(**jwk).get_op_key("wrapKey") for jwk in public_set["keys"]}
        self.vectors = json.loads((FIXTURES / "bodies.json").read_text(encoding="utf-8"))

    def public(self, kid: str) -> rsa.RSAPublicKey:
        return self.publics[kid]  # type: ignore[no-any-return]


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


def header(kid: str | None = "kibana_1", **members: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"alg": "RSA-OAEP", "enc": "A256GCM"}
    if kid is not None:
        base["kid"] = kid
    return {**base, **members}


def craft(
    kit: Kit,
    protected: dict[str, Any] | bytes,
    plaintext: bytes = PLAIN,
    *,
    to: str = "kibana_1",
    alg: str = "RSA-OAEP",
    enc: str | None = None,
    cek: bytes | None = None,
    iv: bytes | None = None,
    wrap: Callable[[rsa.RSAPublicKey, bytes], bytes] | None = None,
    wrapped: bytes | None = None,
) -> list[str]:
    """The five parts of a JWE really encrypted to `to`'s public key, with any header bytes.

    `alg`/`enc` choose the cryptography actually used (the header may claim anything);
    `wrapped` is what the RSA layer carries, when it is not the content key itself.
    """
    raw = protected if isinstance(protected, bytes) else json.dumps(protected).encode()
    claimed = protected.get("enc") if isinstance(protected, dict) else None
    if enc is None:
        enc = claimed if isinstance(claimed, str) and claimed in IV_LENGTHS else "A256GCM"
    aad = b64url_encode(raw)
    content = JWA.encryption_alg(enc)
    cek = os.urandom(content.wrap_key_size // 8) if cek is None else cek
    public = kit.public(to)
    carried = cek if wrapped is None else wrapped
    encrypted_key = (
        wrap(public, carried) if wrap else public.encrypt(carried, KEY_MANAGEMENT_ALGORITHMS[alg])
    )
    if iv is not None:  # GCM with a chosen IV
        sealed = AESGCM(cek).encrypt(iv, plaintext, aad.encode())
        ciphertext, tag = sealed[:-16], sealed[-16:]
    else:
        iv, ciphertext, tag = content.encrypt(cek, aad.encode(), plaintext)
    return [aad, *(b64url_encode(part) for part in (encrypted_key, iv, ciphertext, tag))]


IV_LENGTHS = {"A128CBC-HS256": 16, "A256CBC-HS512": 16, "A128GCM": 12, "A256GCM": 12}


def token(kit: Kit, protected: dict[str, Any] | bytes, plaintext: bytes = PLAIN, **kw: Any) -> str:
    return ".".join(craft(kit, protected, plaintext, **kw))


def dummy(protected: dict[str, Any] | bytes) -> str:
    """A token whose header is refused before any key is used: the other parts are filler."""
    raw = protected if isinstance(protected, bytes) else json.dumps(protected).encode()
    return b64url_encode(raw) + ".AAAA.AAAA.AAAA.AAAA"


def flip(part: str, index: int = -1, bit: int = 0) -> str:
    raw = bytearray(b64url_decode(part))
    raw[index] ^= 1 << bit
    return b64url_encode(bytes(raw))


def character_edits(body: str, rng: random.Random, count: int = 40) -> Iterator[str]:
    """`count` copies of `body`, each with one character replaced or inserted at random (from
    both base64 alphabets, padding, separators and non-ASCII)."""
    for _ in range(count):
        chars = list(body)
        position = rng.randrange(len(chars))
        char = rng.choice(["A", "/", "+", "-", "_", "=", ".", " ", "\u00e9", "Q", "B"])
        if rng.random() < 0.5:
            chars[position] = char
        else:
            chars.insert(position, char)
        yield "".join(chars)


URL_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def noncanonical(part: str) -> str:
    """The same bytes with a nonzero unused bit in the last character (len % 4 must be 2)."""
    assert len(part) % 4 == 2
    return part[:-1] + URL_ALPHABET[URL_ALPHABET.index(part[-1]) | 1]


def replace(parts: list[str], index: int, value: str) -> str:
    changed = list(parts)
    changed[index] = value
    return ".".join(changed)


ELASTIC_KEY_HEADER = {"zip": "DEF", "enc": "A128CBC-HS256", "alg": "RSA-OAEP"}


def wrapped_key(
    kit: Kit,
    passphrase: bytes,
    *,
    kid: str | None = "kibana_1",
    raw: bytes | None = None,
    to: str = "kibana_1",
    **members: Any,
) -> str:
    """The `elastic` K: `passphrase` deflated (or `raw` as the compressed bytes) in a JWE."""
    protected: dict[str, Any] = {**ELASTIC_KEY_HEADER, **members}
    if kid is not None:
        protected["kid"] = kid
    plain = deflate(passphrase) if raw is None else raw
    return token(kit, protected, plain, to=to, alg=protected.get("alg", "RSA-OAEP"))


def encrypted_payload(passphrase: bytes, plaintext: bytes = PLAIN) -> str:
    return PassphraseCipher(passphrase).encrypt_bytes(plaintext)


def elastic(
    kit: Kit,
    plaintext: bytes = PLAIN,
    *,
    key: str | None = None,
    payload: str | None = None,
    kid: str = "kibana_1",
) -> str:
    passphrase = os.urandom(32)
    return pack_body(
        key if key is not None else wrapped_key(kit, passphrase, kid=kid),
        payload if payload is not None else encrypted_payload(passphrase, plaintext),
    )


def tamper_payload(text: str, index: int) -> str:
    raw = bytearray(base64.b64decode(text))
    raw[index] ^= 1
    return base64.b64encode(bytes(raw)).decode()


def envelope(document: Any) -> str:
    return b64url_encode(json.dumps(document).encode())


def parts_of(body: str) -> tuple[str, str]:
    document = json.loads(b64url_decode(body))
    return document["encryptedAESKey"], document["encryptedPayload"]


def elastic_with_length_mod(kit: Kit, mod: int) -> str:
    for extra in range(64):
        body = elastic(kit, json.dumps({"pad": "x" * extra}).encode())
        if len(body) % 4 == mod:
            return body
    raise AssertionError("no body of that length")  # pragma: no cover


def nested(depth: int) -> dict[str, Any]:
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    return header(x=value)


# -- the table ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[Kit], Any]
    error: type[RequestCryptoError]
    #: The compact JWE itself is at fault, so JWKManager.decrypt(body) raises the same error.
    token_level: bool = False
    limits: dict[str, int] = field(default_factory=dict)
    #: What JWKManager.decrypt raises instead, where the `jwe` wire format refuses earlier
    #: (a `zip` header: JWE allows it, the wire format does not).
    token_error: type[RequestCryptoError] | None = None


# Short names keep the table one case per line.
Bad, Alg, NoKey = MalformedBodyError, UnsupportedAlgorithmError, NoKeyFoundError
Dec, Big, Budget = DecryptionError, PayloadTooLargeError, JSONBudgetError
T = {"token_level": True}  # the compact JWE itself is at fault


def J(k: Kit, **members: Any) -> list[str]:
    """The parts of a valid `jwe` body to kibana_1, header members overridden."""
    return craft(k, header(**members))


def tampered(k: Kit, index: int, change: Callable[[str], str], **members: Any) -> str:
    parts = J(k, **members)
    return replace(parts, index, change(parts[index]))


def cut(n: int) -> Callable[[str], str]:
    return lambda part: b64url_encode(b64url_decode(part)[:-n])


def grow(part: str) -> str:
    return b64url_encode(b64url_decode(part) + b"\0")


def K(k: Kit, passphrase: bytes | None = None, **kw: Any) -> str:
    """An elastic wrapped key (see `wrapped_key`); a fresh 32-byte passphrase by default."""
    return wrapped_key(k, os.urandom(32) if passphrase is None else passphrase, **kw)


def EK(k: Kit, passphrase: bytes | None = None, **kw: Any) -> str:
    """An elastic body whose wrapped key is `K(...)`, its payload encrypted under that same
    passphrase: only the rule under test stands between the body and its payload."""
    passphrase = os.urandom(32) if passphrase is None else passphrase
    key = K(k, passphrase, **kw)
    return elastic(k, key=key, payload=encrypted_payload(passphrase or b"\0"))


def EP(k: Kit, change: Callable[[str], str]) -> str:
    """An elastic body with a genuine wrapped key and its payload changed."""
    key, payload = parts_of(elastic(k))
    return elastic(k, key=key, payload=change(payload))


def random_part(size: int) -> str:
    return b64url_encode(os.urandom(size))


def insert(body: str, at: int, text: str) -> str:
    return body[:at] + text + body[at:]


def url_alphabet_body(k: Kit) -> str:
    """A valid body whose base64url uses `-` and `_`: base64url of ASCII JSON only has them
    where a byte is `>`, `?` or `~`, so an extra member (ignored) carries those."""
    key, payload = parts_of(elastic(k))
    body = envelope({"encryptedAESKey": key, "encryptedPayload": payload, "x": "?~" * 8})
    assert "-" in body and "_" in body
    return body


def url_to_standard(k: Kit) -> str:
    return url_alphabet_body(k).translate(str.maketrans("-_", "+/"))


def reencoded_envelope(k: Kit, codec: str) -> str:
    """A genuine envelope, as JSON in another encoding (the JavaScript side reads UTF-8)."""
    key, payload = parts_of(elastic(k))
    text = json.dumps({"encryptedAESKey": key, "encryptedPayload": payload})
    return b64url_encode(text.encode(codec))


def key_part_swap(k: Kit) -> str:
    return elastic(k, key=parts_of(elastic(k))[0], payload=parts_of(elastic(k))[1])


def members(document: dict[str, Any]) -> Callable[[Kit], str]:
    """An envelope with these members; "K"/"P" stand for a genuine wrapped key/payload."""

    def build(k: Kit) -> str:
        key, payload = parts_of(elastic(k))
        real = {"K": key, "P": payload}
        return envelope(
            {m: real.get(v, v) if isinstance(v, str) else v for m, v in document.items()}
        )

    return build


def rsa1_5(public: rsa.RSAPublicKey, cek: bytes) -> bytes:
    return public.encrypt(cek, padding.PKCS1v15())


P32 = os.urandom(32)  # one passphrase for the cases that need it in two places
DEEP_HEADER = b'{"alg":"RSA-OAEP","x":' + b"[" * 1000 + b"]" * 1000 + b"}"
REFUSED_ALGS = (
    "none",
    "dir",
    "RSA1_5",
    "RSA-OAEP-384",
    "RSA-OAEP-512",
    "rsa-oaep",
    "RSA-OAEP ",
    "HS256",
    "ECDH-ES",
    "ECDH-ES+A128KW",
    "A128KW",
    "A256KW",
    "A128GCMKW",
    "PBES2-HS256+A128KW",
    "PBES2-HS512+A256KW",
)
REFUSED_ENCS = ("A192GCM", "A192CBC-HS384", "a256gcm", "A256GCM\u0000", "", "A256GCMKW")
BAD_PAYLOADS = {
    "not-json": b"not json",
    "empty": b"",
    "not-utf8": b'"\xff\xfe"',
    "utf16": json.dumps(PAYLOAD).encode("utf-16"),
    "bom": b"\xef\xbb\xbf" + PLAIN,
    "nan": b"[NaN]",
    "infinity": b"-Infinity",
    "huge-int": b"9" * 5000,
    "deep": b"[" * 100_000,
    "trailing": PLAIN + b" x",
}

# fmt: off
CASES = [
    # ---- not a body at all: types, encodings --------------------------------------------
    Case("type-None", lambda k: None, Bad, **T),
    Case("type-int", lambda k: 42, Bad, **T),
    Case("type-list", lambda k: ["a.b.c.d.e"], Bad, **T),
    Case("type-dict", lambda k: {"encryptedAESKey": "x"}, Bad, **T),
    Case("type-memoryview", lambda k: memoryview(b"AAAA"), Bad, **T),
    Case("E-empty", lambda k: "", Bad),
    Case("E-not-base64", lambda k: "this is not base64!", Bad),
    Case("E-not-base64-bytes", lambda k: b"\x00\x01\x02\xff", Bad),
    Case("E-non-ascii-str", lambda k: insert(elastic(k), 40, "\u00e9"), Bad),
    Case("E-lone-surrogate", lambda k: elastic(k) + "\udc80", Bad),
    Case("E-whitespace", lambda k: insert(elastic(k), 50, "\n"), Bad),
    Case("E-standard-alphabet", url_to_standard, Bad),
    Case("J-non-ascii-str", lambda k: ".".join(J(k)).replace(".", ".\u00e9", 2), Bad, **T),
    Case("J-non-ascii-bytes", lambda k: ".".join(J(k)).encode().replace(b".", b".\xc3\xa9"), Bad,
         **T),
    Case("J-standard-alphabet-part", lambda k: replace(J(k), 3, "ab+/"), Bad, **T),
    Case("J-whitespace-in-part", lambda k: tampered(k, 3, lambda p: " " + p), Bad, **T),
    # ---- padding games ------------------------------------------------------------------
    Case("E-padding-too-long", lambda k: (lambda b: b + "=" * (-len(b) % 4 + 4))(elastic(k)), Bad),
    Case("E-padding-short", lambda k: elastic_with_length_mod(k, 2) + "=", Bad),
    Case("E-padding-inside", lambda k: insert(elastic(k), 100, "="), Bad),
    Case("J-padding-too-long-on-part", lambda k: tampered(k, 2, lambda p: p + "==="), Bad, **T),
    Case("J-padding-on-4n-part", lambda k: replace(J(k), 2, "AAAA=="), Bad, **T),
    Case("J-noncanonical-trailing-bits", lambda k: tampered(k, 4, noncanonical), Bad, **T),
    # ---- elastic structure --------------------------------------------------------------
    Case("E-not-json", lambda k: b64url_encode(b"hello"), Bad),
    Case("E-json-array", lambda k: envelope(["encryptedAESKey", "encryptedPayload"]), Bad),
    Case("E-json-deep", lambda k: b64url_encode(b"[" * 100_000), Bad),
    Case("E-json-utf16", lambda k: reencoded_envelope(k, "utf-16"), Bad),
    Case("E-json-utf32", lambda k: reencoded_envelope(k, "utf-32"), Bad),
    Case("E-json-bom", lambda k: reencoded_envelope(k, "utf-8-sig"), Bad),
    Case("E-missing-payload", members({"encryptedAESKey": "K"}), Bad),
    Case("E-missing-key", members({"encryptedPayload": "P"}), Bad),
    Case("E-key-not-string", members({"encryptedAESKey": 1, "encryptedPayload": "P"}), Bad),
    Case("E-payload-not-string", members({"encryptedAESKey": "K", "encryptedPayload": ["x"]}), Bad),
    Case("E-payload-base64url", lambda k: EP(k, lambda p: "ab-_" * 40), Bad),
    Case("E-payload-non-ascii", lambda k: EP(k, lambda p: "\u00e9" * 200), Bad),
    Case("E-payload-too-short", lambda k: EP(k, lambda p: p[:120]), Bad),
    Case("E-key-3-parts", lambda k: elastic(k, key="a.b.c"), Bad),
    Case("E-key-6-parts", lambda k: elastic(k, key=K(k) + ".AAAA"), Bad),
    Case("E-key-not-base64url", lambda k: elastic(k, key="!!!!.AAAA.AAAA.AAAA.AAAA"), Bad),
    # ---- compact JWE structure ----------------------------------------------------------
    Case("J-2-parts", lambda k: "abc.def", Bad, **T),
    Case("J-4-parts", lambda k: ".".join(J(k)[:4]), Bad, **T),
    Case("J-6-parts", lambda k: ".".join(J(k)) + ".AAAA", Bad, **T),
    Case("J-empty-parts", lambda k: "....", Bad, **T),
    Case("J-header-not-json", lambda k: dummy(b"not json"), Bad, **T),
    Case("J-header-array", lambda k: dummy(b'["alg","enc"]'), Bad, **T),
    Case("J-header-utf16", lambda k: dummy(json.dumps(header()).encode("utf-16")), Bad, **T),
    Case("J-header-bom", lambda k: dummy(b"\xef\xbb\xbf" + json.dumps(header()).encode()), Bad,
         **T),
    Case("J-header-nan", lambda k: dummy(json.dumps(header(x=float("nan"))).encode()), Bad, **T),
    Case("J-header-nested-9", lambda k: dummy(nested(9)), Bad, **T),
    Case("J-header-nested-1000", lambda k: dummy(DEEP_HEADER), Bad, **T),
    Case("J-header-missing-alg", lambda k: dummy({"enc": "A256GCM", "kid": "kibana_1"}), Bad, **T),
    Case("J-header-missing-enc", lambda k: dummy({"alg": "RSA-OAEP", "kid": "kibana_1"}), Bad, **T),
    Case("J-alg-list", lambda k: dummy(header(alg=["RSA-OAEP"])), Bad, **T),
    Case("J-alg-null", lambda k: dummy(header(alg=None)), Bad, **T),
    Case("J-enc-object", lambda k: dummy(header(enc={"A256GCM": 1})), Bad, **T),
    Case("J-zip-null", lambda k: dummy(header(zip=None)), Bad, **T),
    Case("J-zip-int", lambda k: dummy(header(zip=1)), Bad, **T),
    Case("J-kid-int", lambda k: token(k, header(kid=1)), Bad, **T),
    Case("J-kid-list", lambda k: token(k, header(kid=["kibana_1"])), Bad, **T),
    Case("J-kid-null", lambda k: token(k, {**header(None), "kid": None}), Bad, **T),
    Case("J-duplicate-alg", lambda k: token(k, b'{"alg":"RSA-OAEP","alg":"RSA1_5",'
                                              b'"enc":"A256GCM","kid":"kibana_1"}'), Bad, **T),
    Case("J-duplicate-kid", lambda k: token(k, b'{"alg":"RSA-OAEP","enc":"A256GCM",'
                                              b'"kid":"kibana_1","kid":"kibana_2"}'), Bad, **T),
    Case("J-duplicate-nested", lambda k: token(k, b'{"alg":"RSA-OAEP","enc":"A256GCM",'
                                                 b'"kid":"kibana_1","x":{"a":1,"a":2}}'), Bad, **T),
    Case("J-huge-header", lambda k: token(k, header(x="a" * 4000)), Bad, **T),
    # ---- the allow-lists ----------------------------------------------------------------
    *(Case(f"J-alg-{alg}", lambda k, a=alg: dummy(header(alg=a)), Alg, **T)
      for alg in REFUSED_ALGS),
    # validly wrapped with PKCS#1 v1.5 to the real key: refused all the same (Bleichenbacher)
    Case("J-alg-RSA1_5-real", lambda k: token(k, header(alg="RSA1_5"), wrap=rsa1_5), Alg, **T),
    Case("J-alg-PBES2-p2c", lambda k: dummy(header(alg="PBES2-HS512+A256KW", p2c=10**9)), Alg, **T),
    *(Case(f"J-enc-{enc!r}", lambda k, e=enc: dummy(header(enc=e)), Alg, **T)
      for enc in REFUSED_ENCS),
    Case("J-zip-GZIP", lambda k: dummy(header(zip="GZIP")), Alg, **T),
    Case("J-zip-lowercase", lambda k: dummy(header(zip="def")), Alg, **T),
    Case("J-crit", lambda k: token(k, header(crit=["exp"], exp=1)), Alg, **T),
    Case("J-crit-empty", lambda k: token(k, header(crit=[])), Alg, **T),
    Case("J-alg-differs-256-to-oaep-key",
         lambda k: token(k, header(alg="RSA-OAEP-256"), alg="RSA-OAEP-256"), Alg, **T),
    Case("J-alg-differs-oaep-to-256-key",
         lambda k: token(k, header("oaep256"), to="oaep256"), Alg, **T),
    Case("E-key-alg-differs", lambda k: EK(k, alg="RSA-OAEP-256"), Alg),
    Case("E-key-crit", lambda k: EK(k, crit=["b64"]), Alg),
    Case("E-key-alg-none", lambda k: elastic(k, key=dummy(header(alg="none", zip="DEF"))), Alg),
    # ---- which key ----------------------------------------------------------------------
    # No kid, and the set holds two keys for its alg: the sender must name one.
    Case("J-missing-kid", lambda k: token(k, header(None)), MissingKidInBodyError, **T),
    Case("J-unknown-kid", lambda k: token(k, header("nobody")), NoKey, **T),
    Case("J-empty-kid", lambda k: token(k, header("")), NoKey, **T),
    Case("J-public-only-kid",
         lambda k: token(k, header("public-only"), to="public-only"), NoKey, **T),
    Case("E-key-missing-kid", lambda k: EK(k, kid=None), NoKey),
    Case("E-key-unknown-kid", lambda k: EK(k, kid="nobody"), NoKey),
    Case("E-js-foreign-body", lambda k: k.vectors["foreign_body"], NoKey),
    # ---- after the key is chosen: one DecryptionError -----------------------------------
    Case("J-cek-short", lambda k: token(k, header(), cek=os.urandom(16)), Dec, **T),
    Case("J-cek-long", lambda k: token(k, header(enc="A128GCM"), cek=os.urandom(32)), Dec, **T),
    Case("J-cek-empty", lambda k: token(k, header(), wrapped=b""), Dec, **T),
    Case("J-cek-enc-confusion",
         lambda k: token(k, header(enc="A256CBC-HS512"), enc="A128CBC-HS256"), Dec, **T),
    *(Case(f"J-tag-flip-{enc}", lambda k, e=enc: tampered(k, 4, flip, enc=e), Dec, **T)
      for enc in CONTENT_ENCRYPTION_ALGORITHMS),
    Case("J-tag-truncated", lambda k: tampered(k, 4, cut(1)), Dec, **T),
    Case("J-tag-extended", lambda k: tampered(k, 4, grow), Dec, **T),
    Case("J-tag-empty", lambda k: replace(J(k), 4, ""), Dec, **T),
    Case("J-ciphertext-truncated", lambda k: tampered(k, 3, cut(1)), Dec, **T),
    Case("J-ciphertext-truncated-cbc",
         lambda k: tampered(k, 3, cut(16), enc="A128CBC-HS256"), Dec, **T),
    Case("J-ciphertext-flip", lambda k: tampered(k, 3, lambda p: flip(p, 0)), Dec, **T),
    Case("J-iv-flip", lambda k: tampered(k, 2, flip), Dec, **T),
    Case("J-iv-16-bytes-gcm", lambda k: token(k, header(), iv=os.urandom(16)), Dec, **T),
    Case("J-encrypted-key-garbage", lambda k: replace(J(k), 1, random_part(256)), Dec, **T),
    Case("J-encrypted-key-short", lambda k: replace(J(k), 1, random_part(10)), Dec, **T),
    Case("J-encrypted-key-empty", lambda k: replace(J(k), 1, ""), Dec, **T),
    Case("J-encrypted-to-other-key", lambda k: token(k, header(), to="kibana_2"), Dec, **T),
    # same members in another order: the AAD no longer matches
    Case("J-header-swapped", lambda k: replace(J(k), 0, b64url_encode(json.dumps(
        {"kid": "kibana_1", "enc": "A256GCM", "alg": "RSA-OAEP"}).encode())), Dec, **T),
    # zip: the wire format refuses it unread; JWKManager.decrypt still inflates, strictly
    Case("J-zip-bad-deflate", lambda k: token(k, header(zip="DEF"), b"\xff\xff\xff\xff"), Alg,
         token_error=Dec, **T),
    Case("J-zip-trailing-bytes", lambda k: token(k, header(zip="DEF"), deflate(PLAIN) + b"x"),
         Alg, token_error=Dec, **T),
    Case("J-zip-truncated", lambda k: token(k, header(zip="DEF"), deflate(PLAIN)[:-3]), Alg,
         token_error=Dec, **T),
    Case("J-zip-empty", lambda k: token(k, header(zip="DEF"), b""), Alg, token_error=Dec, **T),
    Case("J-zip-DEF-valid", lambda k: token(k, header(zip="DEF"), deflate(PLAIN)), Alg),
    Case("E-key-tag-flip", lambda k: elastic(k, key=(lambda p: replace(p, 4, flip(p[4])))(
        K(k).split("."))), Dec),
    Case("E-key-encrypted-key-garbage", lambda k: elastic(k, key=replace(
        K(k).split("."), 1, b64url_encode(os.urandom(256)))), Dec),
    Case("E-passphrase-31-bytes", lambda k: EK(k, os.urandom(31)), Dec),
    Case("E-passphrase-33-bytes", lambda k: EK(k, os.urandom(33)), Dec),
    Case("E-passphrase-0-bytes", lambda k: EK(k, b""), Dec),
    Case("E-passphrase-1-MiB", lambda k: EK(k, b"\0" * MiB), Dec),
    Case("E-passphrase-bad-deflate", lambda k: EK(k, raw=b"\xff" * 40), Dec),
    Case("E-passphrase-trailing-bytes", lambda k: EK(k, P32, raw=deflate(P32) + b"\0"), Dec),
    Case("E-passphrase-truncated-deflate", lambda k: EK(k, P32, raw=deflate(P32)[:-2]), Dec),
    Case("E-key-encrypted-to-other-key", lambda k: EK(k, to="kibana_2"), Dec),
    Case("E-payload-tag-flip", lambda k: EP(k, lambda p: tamper_payload(p, 64 + 12)), Dec),
    Case("E-payload-salt-flip", lambda k: EP(k, lambda p: tamper_payload(p, 0)), Dec),
    Case("E-payload-iv-flip", lambda k: EP(k, lambda p: tamper_payload(p, 64)), Dec),
    Case("E-payload-ciphertext-flip", lambda k: EP(k, lambda p: tamper_payload(p, -1)), Dec),
    Case("E-payload-truncated", lambda k: EP(k, lambda p: base64.b64encode(
        base64.b64decode(p)[:-1]).decode()), Dec),
    Case("E-payload-other-passphrase", lambda k: EP(k, lambda p: encrypted_payload(
        os.urandom(32))), Dec),
    Case("E-payload-header-only", lambda k: EP(k, lambda p: base64.b64encode(
        os.urandom(92)).decode()), Dec),
    Case("E-keys-swapped-between-bodies", key_part_swap, Dec),
    # ---- authentic, but the payload is not JSON -----------------------------------------
    *(Case(f"J-payload-{name}", lambda k, p=plain: token(k, header(), p), Bad)
      for name, plain in BAD_PAYLOADS.items()),
    Case("E-payload-deep", lambda k: elastic(k, b"[" * 100_000), Bad),
    Case("E-payload-not-json", lambda k: elastic(k, b"{'single': 'quotes'}"), Bad),
    # ---- limits -------------------------------------------------------------------------
    Case("J-body-over-limit", lambda k: token(k, header()), Big, limits={"max_body_size": 300}),
    Case("E-body-over-limit", elastic, Big, limits={"max_body_size": 900}),
    Case("E-key-over-wrapped-limit", lambda k: EK(k, raw=os.urandom(7000)), Big),
    Case("J-zip-inflates-over-limit", lambda k: token(k, header(zip="DEF"), deflate(
        b"[" + b" " * 1000 + b"]")), Alg, limits={"max_inflated_size": 1001}),
    Case("J-plaintext-over-limit", lambda k: token(k, header(), b'"' + b"a" * 100 + b'"'), Big,
         limits={"max_inflated_size": 101}),
    Case("J-plaintext-over-limit-cbc", lambda k: token(k, header(enc="A128CBC-HS256"),
         b'"' + b"a" * 130 + b'"'), Big, limits={"max_inflated_size": 101}),
    Case("E-plaintext-over-limit", lambda k: elastic(k, b'"' + b"a" * 100 + b'"'), Big,
         limits={"max_inflated_size": 101}),
    Case("J-json-values-over-limit", lambda k: token(k, header(), b"[" + b"0," * 99 + b"0]"),
         Budget, limits={"max_json_values": 100}),
    Case("E-json-values-over-limit", lambda k: elastic(k, b"[" + b"{}," * 99 + b"{}]"),
         Budget, limits={"max_json_values": 100}),
    Case("J-json-deeper-than-limit", lambda k: token(k, header(), b"[" * 9 + b"]" * 9), Bad,
         limits={"max_json_depth": 8}),
    Case("E-json-deeper-than-limit", lambda k: elastic(k, b"[" * 9 + b"]" * 9), Bad,
         limits={"max_json_depth": 8}),
]
# fmt: on


def decryptor_for(kit: Kit, case: Case) -> RequestDecryptor:
    return RequestDecryptor(kit.keys, **case.limits) if case.limits else kit.decryptor


def assert_quotes_nothing_of(body: Any, message: str) -> None:
    """A message names the problem; it never echoes the body (nor the secret parts in it)."""
    assert len(message) < 300
    if isinstance(body, (str, bytes)):
        text = body if isinstance(body, str) else body.decode("latin-1")
        for start in range(0, max(len(text) - 24, 0), 8):
            assert text[start : start + 24] not in message
