"""The throughput paths give exactly what the general paths give, or step aside for them.

- Streaming `elastic` pack/unpack (request.py's encrypt and decrypt, formats/elastic.py) against
  pack_body / unpack_body + the standard base64 decode, on bodies and on mutations of them,
  with chunks small enough to split every structure, with and without pybase64.
- The orjson (writing) and msgspec (reading) JSON paths (_json.py) against the json module:
  same bytes out, same values in, the same refusals; skipped when they are not installed.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import datetime
import enum
import importlib.metadata
import json
import math
import os
import random
import struct
import subprocess
import sys
import tracemalloc
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from jwcrypto.jwa import JWA

from request_crypto import RequestDecryptor, RequestEncryptor, _accel, _b64, _json
from request_crypto import _jose as jwe
from request_crypto.errors import (
    InvalidArgumentError,
    MalformedBodyError,
    UnsupportedAlgorithmError,
)
from request_crypto.formats import elastic as envelope
from request_crypto.formats.elastic import (
    pack_body,
    pack_encrypted_payload,
    unpack_body,
    unpack_encrypted_payload,
)
from request_crypto.formats.nodecrypto import decode_standard_base64
from request_crypto.keys.jwks import JWKManager


def general(body: str | bytes) -> tuple[str, bytes] | None:
    try:
        parts = unpack_body(body)
        return parts.encrypted_aes_key, decode_standard_base64(parts.encrypted_payload, "p")
    except MalformedBodyError:
        return None


def mutations(body: str, rng: random.Random) -> Iterator[str | bytes]:
    yield body
    yield body.encode()
    yield body + "=" * (-len(body) % 4)
    for _ in range(8):
        chars = list(body)
        position = rng.randrange(len(chars))
        char = rng.choice(["A", "/", "+", "-", "_", "=", ".", " ", "\u00e9", "Q", '"'])
        action = rng.randrange(4)
        if action == 0:
            chars[position] = char
        elif action == 1:
            chars.insert(position, char)
        elif action == 2:
            del chars[position]
        else:
            chars += ["="] * rng.randrange(1, 5)
        yield "".join(chars)


KEYS = ["", "a.b.c.d.e", "eyJ.x-y_z.QQ", "k" * 700]


@pytest.mark.parametrize("whole", [True, False], ids=["whole", "streamed"])
@pytest.mark.parametrize("chunk", [8, 12, 64, _b64.CHUNK])
def test_streaming_envelope_matches_the_general_path(
    backend: str, monkeypatch: pytest.MonkeyPatch, chunk: int, whole: bool
) -> None:
    """Small bodies are unpacked whole by default; `streamed` forces the piecewise path."""
    monkeypatch.setattr(_b64, "CHUNK", chunk)
    monkeypatch.setattr(envelope, "CHUNK", chunk)
    if not whole:
        monkeypatch.setattr(envelope, "_WHOLE_UP_TO", -1)
    rng = random.Random(chunk)
    fast_seen = 0
    for round_ in range(60):
        key = KEYS[round_ % len(KEYS)]
        layout = os.urandom(rng.choice([0, 1, 2, 3, 91, 92, 93, 500, 3000]) + rng.randrange(3))
        body = pack_encrypted_payload(key, layout)
        assert body == pack_body(key, base64.b64encode(layout).decode())
        inner = base64.b64encode(layout).decode()
        variants = [inner + "=", inner.rstrip("="), inner[:-1], inner + "A", "-" + inner,
                    inner + "==", "QUJD=", "QQ", "Q===", inner + "\\/",
                    inner[:-4] + "=" + inner[-3:]]  # fmt: skip
        candidates = [*mutations(body, rng), *(pack_body(key, v) for v in variants)]
        for candidate in candidates:
            fast = unpack_encrypted_payload(candidate)
            if fast is not None:
                fast_seen += 1
                assert (fast[0], bytes(fast[1])) == general(candidate), candidate[:60]
    assert fast_seen > 200  # the streaming path did take the ordinary bodies


def test_keys_that_need_json_escaping_take_the_general_pack(backend: str) -> None:
    for key in ['quote"d', "back\\slash", "\u00e9", "\ud800"]:
        assert pack_encrypted_payload(key, b"xyz") == pack_body(key, "eHl6")


def test_standard_and_url_quads_refuse_what_b64url_decode_refuses(backend: str) -> None:
    good = base64.b64encode(bytes(range(48)))
    to_url = bytes.maketrans(b"+/", b"-_")
    for byte in range(256):
        raw = bytearray(good)
        raw[17] = byte
        standard_ok = byte in b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
        for decode, alphabet_ok, source in [
            (_b64.decode_standard_quads, standard_ok, bytes(raw)),
            (_b64._decode_url_quads, byte in b"-_" or (standard_ok and byte not in b"+/"),
             bytes(raw).translate(to_url) if byte not in b"+/" else bytes(raw)),
        ]:  # fmt: skip
            if alphabet_ok:
                decode(source)
            else:
                with pytest.raises(_b64.Decline):
                    decode(source)


def b64url_oracle(part: bytes) -> bytes | None:
    """Strict base64url decoded independently of _b64: the alphabet, padding absent or exact,
    and canonical (re-encoding gives the same text, so no stray trailing bits)."""
    text = part.rstrip(b"=")
    padding = len(part) - len(text)
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    if any(byte not in alphabet for byte in text) or len(text) % 4 == 1:
        return None
    if padding and padding != -len(text) % 4:
        return None
    decoded = base64.urlsafe_b64decode(text + b"=" * (-len(text) % 4))
    return decoded if base64.urlsafe_b64encode(decoded).rstrip(b"=") == text else None


def b64url_general(part: bytes) -> bytes | None:
    try:
        return _b64.b64url_decode(part, "part")
    except MalformedBodyError:
        return None


def test_canonical_b64url_decodes_what_strict_base64url_does_or_steps_aside(backend: str) -> None:
    """Every length (all residues mod 4, both decoders), every byte at two places, padding."""
    rng = random.Random(7)
    seen = 0
    for size in [*range(0, 40), 255, 256, 257, 300]:
        good = base64.urlsafe_b64encode(rng.randbytes(size)).rstrip(b"=")
        variants = [good, good + b"=" * (-len(good) % 4), good + b"A", good[:-1], good + b"=="]
        for at in {0, len(good) // 2, len(good) - 1} if good else set():
            for byte in range(256):
                raw = bytearray(good)
                raw[at] = byte
                variants.append(bytes(raw))
        for part in variants:
            fast = _b64.b64url_decode_canonical(part)
            if fast is not None:
                seen += 1
                assert fast == b64url_oracle(part), part[:40]
                assert b"=" not in part  # padded text always goes the general way
            elif b"=" not in part:
                assert b64url_oracle(part) is None, part[:40]
            assert b64url_general(part) == b64url_oracle(part), part[:40]  # the whole decoder
    assert seen > 1000


def compact(header: dict[str, Any]) -> str:
    text = base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=").decode()
    return text + ".AAAA.AAAA.AAAA.AAAA"


def test_checked_headers_are_cached_as_copies_and_bounded() -> None:
    jwe._HEADER_CACHE.clear()
    token = compact({"alg": "RSA-OAEP", "enc": "A256GCM", "kid": "k1"})
    first = jwe.parse_compact(token).header
    first["kid"] = "tampered"  # a caller mutating its copy (it is handed out in metadata)
    again = jwe.parse_compact(token)
    assert again.header == {"alg": "RSA-OAEP", "enc": "A256GCM", "kid": "k1"}
    assert again.kid == "k1" and len(jwe._HEADER_CACHE) == 1
    nested = compact({"alg": "RSA-OAEP", "enc": "A256GCM", "kid": "k1", "x": {"y": [1]}})
    jwe.parse_compact(nested)
    assert len(jwe._HEADER_CACHE) == 1  # nested values would need deep copies: not kept
    for n in range(3 * jwe._HEADER_CACHE_SIZE):
        jwe.parse_compact(compact({"alg": "RSA-OAEP", "enc": "A256GCM", "kid": f"k{n}"}))
        assert len(jwe._HEADER_CACHE) <= jwe._HEADER_CACHE_SIZE


def test_refused_headers_are_refused_every_time() -> None:
    token = compact({"alg": "RSA1_5", "enc": "A256GCM", "kid": "k1"})
    for _ in range(3):
        with pytest.raises(UnsupportedAlgorithmError):
            jwe.parse_compact(token)


# --- JSON -----------------------------------------------------------------------------------

orjson_needed = pytest.mark.skipif(_accel.orjson is None, reason="orjson is not installed")


def as_orjson_writes(value: Any) -> Any:
    """json's `default` for the types orjson writes and json refuses: Enum and UUID."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(type(value).__name__)


def stdlib_dumps(value: Any) -> bytes | str:
    """The json module's text, NaN and Infinity kept as json spells them (`meaning` reads
    them as null, which is what orjson and JSON.stringify write)."""
    try:
        text = json.dumps(
            value, separators=(",", ":"), ensure_ascii=False, default=as_orjson_writes
        )
    except (TypeError, ValueError, RecursionError):
        return "refused"
    try:
        return text.encode()
    except UnicodeEncodeError:
        return _json._escape_surrogates(text).encode()


def ours(value: Any, dumps: Any = _json.dumps_utf8) -> bytes | str:
    try:
        return bytes(dumps(value))
    except InvalidArgumentError:
        return "refused"


SPECIAL_FLOATS = ["1e-5", "1e-6", "1e-7", "1e-9", "1e-10", "1e-4", "1e16", "1e21", "-0.0",
                  "5e-324", "1.7976931348623157e308", "9.99e-5"]  # fmt: skip


def random_float(rng: random.Random) -> float:
    kind = rng.randrange(4)
    if kind == 0:
        return float(struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0])
    if kind == 1:
        return rng.random() * 10 ** rng.randint(-12, 25) * rng.choice([1, -1])
    if kind == 2:
        return float(rng.choice(SPECIAL_FLOATS))
    return round(rng.random(), rng.randrange(1, 12))


TRICKY_STRINGS = ["", "e-7", "1e-7", ":1e-7,", 'a"b', "x\\y", "0.00001", '"1e-7"', "\u00e9",
                  "\u2028", ",0.000001]", "\\", '\\"', "kube-system", "[0.00002,"]  # fmt: skip


def random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(8 if depth < 4 else 5)
    if kind in (0, 4):
        return random_float(rng)
    if kind == 1:
        return rng.choice(TRICKY_STRINGS) + rng.choice(TRICKY_STRINGS)
    if kind == 2:
        return rng.choice([None, True, False, 0, -1, 2**63 - 1, 2**64, -(2**63) - 1, 10**19])
    if kind == 3:
        return rng.randrange(-(10**6), 10**6)
    if kind == 5:
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    if kind == 6:
        return {
            rng.choice(TRICKY_STRINGS) + str(i): random_value(rng, depth + 1)
            for i in range(rng.randrange(4))
        }
    return (random_value(rng, depth + 1), random_value(rng, depth + 1))


def stdlib_with_null(value: Any) -> bytes:
    """The json module's bytes with NaN and Infinity written as null (a walk of our own)."""

    def finite(item: Any) -> Any:
        if isinstance(item, float) and not math.isfinite(item):
            return None
        if isinstance(item, dict):
            return {key: finite(each) for key, each in item.items()}
        return [finite(each) for each in item] if isinstance(item, (list, tuple)) else item

    dumped = stdlib_dumps(finite(value))
    if isinstance(dumped, str):
        raise InvalidArgumentError(dumped)
    return dumped


def meaning(dumped: bytes | str) -> str:
    """What a serialization says: the parsed value's repr (float text may differ in form;
    NaN and Infinity mean null)."""
    return dumped if isinstance(dumped, str) else repr(json.loads(dumped, parse_constant=no_number))


def no_number(name: str) -> None:
    return None


@orjson_needed
def test_orjson_dumps_means_what_the_json_module_writes() -> None:
    rng = random.Random(7)
    fast = 0
    for _ in range(4000):
        value = random_value(rng)
        expected = stdlib_dumps(value)
        assert meaning(ours(value)) == meaning(expected), repr(value)[:200]
        assert ours(value, _json.dumps_utf8_standard) == ours(value, stdlib_with_null), value
        fast += expected != "refused" and _json._fast_dumps(value) is not None
    assert fast > 3000  # the fast path is taken, not just stepped aside from


@orjson_needed
def test_orjson_dumps_writes_small_floats_as_json_stringify_does() -> None:
    assert _json.dumps_utf8([1e-7, 0.00001]) == b"[1e-7,0.00001]"


class Color(enum.Enum):
    RED = 1


class Level(enum.IntEnum):
    LOW = 1


class Text(str):
    pass


@dataclasses.dataclass
class Point:
    x: int = 1


def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


@orjson_needed
@pytest.mark.parametrize(
    "value",
    [math.nan, [1, math.inf], {"a": -math.inf}, [None, math.nan], [None, 1e-7], Color.RED,
     Level.LOW, Text("x"), {Text("k"): 1}, uuid.UUID(int=1), collections.OrderedDict(a=1),
     datetime.date(2020, 1, 1), Point(), {1: 2}, {None: 1}, b"x", {1, 2}, ["\ud800"],
     "\ud83d\ude80", nested(10), nested(10**5), [[1e-7, "\\"], 'x"']],
)  # fmt: skip
def test_orjson_dumps_refuses_and_accepts_what_the_standard_path_does(value: Any) -> None:
    assert meaning(ours(value)) == meaning(stdlib_dumps(value))
    assert meaning(ours(value)) == meaning(ours(value, _json.dumps_utf8_standard))


@orjson_needed
def test_orjson_dumps_refuses_a_cycle() -> None:
    cycle: list[Any] = []
    cycle.append(cycle)
    assert ours(cycle) == "refused"


@orjson_needed
def test_an_orjson_fragment_is_written_as_it_is_and_parsed_on_the_standard_path() -> None:
    import orjson

    value = {"a": orjson.Fragment(b"[1, 2.50]")}
    assert _json.dumps_utf8(value) == b'{"a":[1, 2.50]}'  # orjson's contract: unchecked
    assert _json.dumps_utf8_standard(value) == b'{"a":[1,2.5]}'
    with pytest.raises(InvalidArgumentError, match="must be a JSON value"):
        _json.dumps_utf8_standard([orjson.Fragment(b"{not json")])


@orjson_needed
def test_a_large_serialization_holds_no_spare_capacity() -> None:
    value = [{"id": i, "name": f"record-{i}", "ratio": i / 7, "owner": None} for i in range(40000)]
    tracemalloc.start()
    try:
        dumped = _json.dumps_utf8(value)
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(dumped) > _json._TRIM_FROM
    assert held < 1.1 * len(dumped)  # orjson's own bytes held ~1.6x their length


def opened(open_: Any, *args: Any) -> bytes | str:
    try:
        return bytes(open_(*args))
    except Exception:  # the caller maps every failure to one DecryptionError
        return "refused"


def cbc_token(enc: str, cek: bytes, plaintext: bytes, pad: bytes | None) -> jwe.CompactJWE:
    """A CBC-HMAC token of `plaintext`; with `pad`, that padding instead of PKCS#7's, MAC'd."""
    content = JWA.encryption_alg(enc)
    protected = b"eyJhbGciOiJSU0EtT0FFUCJ9"
    iv, ciphertext, tag = content.encrypt(cek, protected, plaintext)
    if pad is not None:
        half = len(cek) // 2
        padded = plaintext + pad
        padded += bytes(-len(padded) % 16)
        encryptor = Cipher(algorithms.AES(cek[half:]), modes.CBC(iv)).encryptor()
        ciphertext = encryptor.update(padded) + encryptor.finalize()
        tag = content._mac(cek[:half], protected, iv, ciphertext)
    return jwe.CompactJWE(protected, {"enc": enc}, b"", iv, ciphertext, tag)


@pytest.mark.parametrize("enc", ["A128CBC-HS256", "A256CBC-HS512"])
def test_cbc_hmac_opens_and_refuses_what_jwcrypto_does(enc: str) -> None:
    rng = random.Random(enc)
    content = JWA.encryption_alg(enc)
    refused = 0
    for _ in range(300):
        cek = rng.randbytes(content.wrap_key_size // 8)
        plaintext = rng.randbytes(rng.randrange(70))
        pad = rng.choice([None, None, b"", b"\x00", b"\x11", b"\x02\x01", b"\x03" * 3])
        token = cbc_token(enc, cek, plaintext, pad)
        field = rng.choice(["iv", "ciphertext", "tag", "protected", None])
        if field is not None and getattr(token, field):
            value = bytearray(getattr(token, field))
            value[rng.randrange(len(value))] ^= 1 << rng.randrange(8)
            token = token._replace(**{field: bytes(value)})
        ours = opened(jwe._open_content, enc, cek, token)
        parts = (token.protected, token.iv, token.ciphertext, token.tag)
        theirs = opened(content.decrypt, cek, *parts)
        assert ours == theirs
        if field is None and pad is None:
            assert ours == plaintext
        refused += ours == "refused"
    assert refused > 100  # tampering and bad padding were tried, not only valid tokens


def finite(text: str) -> float:
    """1e400 is refused, not read as Infinity (what msgspec does; _json.finite_float)."""
    value = float(text)
    if value in (math.inf, -math.inf):
        raise ValueError(text)
    return value


def stdlib_loads(data: bytes) -> Any:
    try:
        return json.loads(
            str(data, "utf-8"), parse_constant=_json.reject_constant, parse_float=finite
        )
    except (ValueError, TypeError, RecursionError):
        return "refused"


def our_loads(data: bytes) -> Any:
    try:
        return _json.loads_payload(data)
    except MalformedBodyError:
        return "refused"


LOAD_CASES = [b"1e400", b"-1e400", b"1e-400", str(2**64).encode(), str(2**64 - 1).encode(),
              str(-(2**63)).encode(), str(-(2**63) - 1).encode(), b"-9999999999999999999",
              b"-0", b"-0.0", b'{"a":1,"a":2}', b'"\\ud800"', b'"\\ud83d\\ude00"', b"1E5",
              b"[" * 1100 + b"]" * 1100, b"\xef\xbb\xbf1", b'"\\u0000"', b" 1 ", b"NaN",
              b"[Infinity]", b'"\xed\xa0\x80"', b"\xff", b'"a"x', b"", b"01", b"1.", b".5",
              b'"\t"', b"[1,]", '"\u00e9"'.encode("utf-16"), b"123456789012345678901234567890",
              b"0.1234567890123456789"]  # fmt: skip


@pytest.mark.skipif(_accel.msgspec is None, reason="msgspec is not installed")
def test_msgspec_loads_gives_the_json_module_values() -> None:
    rng = random.Random(3)
    cases = list(LOAD_CASES)
    for _ in range(3000):
        bits = struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0]
        cases.append(repr(bits).encode())
        cases.append(json.dumps([rng.random() * 10 ** rng.randint(-30, 30), "x"]).encode())
        cases.append(f"{rng.randrange(10 ** rng.randrange(1, 25))}e{rng.randrange(-330, 330)}"
                     .encode())  # fmt: skip
    for data in cases:
        expected, got = stdlib_loads(data), our_loads(data)
        assert repr(got) == repr(expected), data[:60]
        assert type(got) is type(expected)


# --- the default install and the standard-library fallback -----------------------------------

ACCELERATOR_PACKAGES = ("msgspec", "orjson", "pybase64")


def test_accelerators_are_ordinary_dependencies() -> None:
    """The default install is the fast install: no extra is needed for the fast paths."""
    requires = importlib.metadata.requires("request_crypto") or []
    plain = {r.split(";")[0].split(">")[0].split("=")[0].strip() for r in requires if ";" not in r}
    assert set(ACCELERATOR_PACKAGES) <= plain, requires


FALLBACK_CHILD = """
import json, sys
from request_crypto import RequestDecryptor, RequestEncryptor, _accel
task = json.load(sys.stdin)
decryptor = RequestDecryptor(task["private"])
decrypted = [decryptor.decrypt(body) == task["payload"] for body in task["bodies"]]
bodies = [RequestEncryptor(task["public"], format=f).encrypt(task["kid"], task["payload"])
          for f in ("elastic", "jwe")]
json.dump({"backends": _accel.describe(), "decrypted": decrypted, "bodies": bodies}, sys.stdout)
"""


def run_child(task: dict[str, Any], accelerators: str | None) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "REQUEST_CRYPTO_ACCELERATORS"}
    if accelerators is not None:
        env["REQUEST_CRYPTO_ACCELERATORS"] = accelerators
    done = subprocess.run(
        [sys.executable, "-c", FALLBACK_CHILD],
        input=json.dumps(task),
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def fallback_task() -> dict[str, Any]:
    manager = JWKManager()
    manager.add_key("k1")
    rng = random.Random(5)
    # Over 1 MiB (the GC-paused parse, chunked base64), with floats and non-ASCII text.
    payload = {
        "rows": [
            {"i": i, "x": rng.random(), "s": f"caf\u00e9-{i}-\U0001f600", "n": None}
            for i in range(14000)
        ]
    }
    public = manager.get_public_jwks()
    bodies = [RequestEncryptor(public, format=f).encrypt("k1", payload) for f in ("elastic", "jwe")]
    return {
        "private": manager.get_private_jwks(),
        "public": public,
        "kid": "k1",
        "payload": payload,
        "bodies": bodies,
    }


def test_the_default_install_uses_the_accelerators() -> None:
    answer = run_child({**fallback_task(), "bodies": []}, accelerators=None)
    backends = " ".join(answer["backends"].values())
    assert all(name in backends for name in ACCELERATOR_PACKAGES), answer["backends"]


def test_the_standard_library_fallback_reads_and_writes_the_same_bodies() -> None:
    """REQUEST_CRYPTO_ACCELERATORS=0 in a fresh process: what a platform without wheels runs.

    It decrypts bodies made here (with the accelerators when installed), and its own bodies
    decrypt here to the same payload."""
    task = fallback_task()
    answer = run_child(task, accelerators="0")
    assert answer["backends"] == {
        "json": "json (stdlib)",
        "json reading": "json (stdlib)",
        "base64": "binascii (stdlib)",
    }
    assert answer["decrypted"] == [True, True]
    decryptor = RequestDecryptor(task["private"])
    assert [decryptor.decrypt(b) == task["payload"] for b in answer["bodies"]] == [
        True,
        True,
    ]
