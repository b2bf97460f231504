"""Issue 5: property tests. Round trips for any JSON value in both formats, and mutations.

A mutated body (bit flips, truncation, insertion, deletion, part swaps and splices, every kind
of re-encoding) must give either the original payload (a re-encoding the rules accept) or a
RequestCryptoError; never another exception, never another payload. At least 5,000 mutated
bodies are tried per run; a counter checks it.
"""

from __future__ import annotations

import base64
import contextlib
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jwcrypto.jwk import JWK

from request_crypto import JWKManager, RequestDecryptor, RequestEncryptor, unpack_body
from request_crypto._jose import encrypt_compact
from request_crypto.errors import MalformedBodyError, RequestCryptoError
from request_crypto.formats.elastic import unpack_encrypted_payload
from request_crypto.formats.nodecrypto import decode_standard_base64

MUTANTS_PER_EXAMPLE = 25
MUTATION_EXAMPLES = 260
MIN_MUTATED_BODIES = 5_000
URL_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


# -- keys, encryptors and a pool of valid bodies ---------------------------------------------


class World:
    def __init__(self, private_jwks: dict[str, Any], vectors: dict[str, Any]) -> None:
        self.keys = JWKManager(private_jwks)
        self.keys.add_key("oaep256", alg="RSA-OAEP-256")
        self.decryptor = RequestDecryptor(self.keys)
        public_set = self.keys.get_public_jwks()
        self.encryptors = {
            "elastic": RequestEncryptor(public_set),
            "jwe": RequestEncryptor(public_set, format="jwe"),
        }
        # (body, payload): JavaScript-made elastic bodies, Python-made bodies of both formats
        # for every kid, and the other content algorithms (a `jwe` body has no zip: issue 11).
        self.pool: list[tuple[str, Any]] = [
            (v["body"], v["payload"]) for v in vectors["bodies"] if len(v["body"]) < 1500
        ][:4]
        payloads: list[Any] = [{"a": [1, 2.5, None, True]}, "\u00e9t\u00e9 \U0001f600", 7, []]
        for index, kid in enumerate(self.keys.kids()):
            for fmt in ("elastic", "jwe"):
                payload = payloads[index % len(payloads)]
                self.pool.append((self.encryptors[fmt].encrypt(kid, payload), payload))
        plain = json.dumps({"zip": "yes" * 20}).encode()
        public = JWK(**self.keys.get_public_jwk("kibana_1")).get_op_key("wrapKey")
        header = {"alg": "RSA-OAEP", "enc": "A256CBC-HS512", "kid": "kibana_1"}
        self.pool.append((encrypt_compact(public, header, plain), json.loads(plain)))
        for enc in ("A128CBC-HS256", "A128GCM"):
            self.pool.append((self.keys.encrypt_jwe("kibana_2", plain, enc=enc), json.loads(plain)))


@pytest.fixture(scope="module")
def world(private_jwks: dict[str, Any], js_bodies: dict[str, Any]) -> World:
    return World(private_jwks, js_bodies)


# -- round trips -------------------------------------------------------------------------------

surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
text = st.text(st.one_of(st.characters(exclude_categories=()), surrogates), max_size=12)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4),
    max_leaves=16,
)


def as_javascript(value: Any) -> Any:
    """The value a JavaScript receiver would see: strings are UTF-16, so a high and a low
    surrogate side by side are one character (JSON.stringify writes them as one)."""
    if isinstance(value, str):
        return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
    if isinstance(value, list):
        return [as_javascript(item) for item in value]
    if isinstance(value, dict):
        return {as_javascript(k): as_javascript(v) for k, v in value.items()}
    return value


@pytest.mark.parametrize(("fmt", "examples"), [("jwe", 150), ("elastic", 40)])
def test_any_json_value_round_trips(world: World, fmt: str, examples: int) -> None:
    kids = world.keys.kids()

    @settings(max_examples=examples, deadline=None, database=None)
    @given(value=json_values, kid=st.sampled_from(kids), as_bytes=st.booleans())
    def round_trip(value: Any, kid: str, as_bytes: bool) -> None:
        body = world.encryptors[fmt].encrypt(kid, value)
        request = world.decryptor.decrypt_request(body.encode() if as_bytes else body)
        assert request.payload == as_javascript(value)
        assert request.kid == kid
        assert request.format.value == fmt

    round_trip()


# -- mutations ---------------------------------------------------------------------------------


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _envelope(body: str) -> dict[str, Any] | None:
    try:
        document = json.loads(_b64url_decode(body))
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


def _reencode(body: str, kind: str, position: int) -> str:
    """Ways to write the same body differently (some the rules accept, most they refuse)."""
    document = None if "." in body else _envelope(body)
    if kind == "pad":
        return body + "=" * (-len(body) % 4)
    if kind == "overpad":
        return body + "=" * (-len(body) % 4 + 1 + position % 3)
    if kind == "standard-alphabet":
        return body.translate(str.maketrans("-_", "+/"))
    if kind == "standard-padded" and document is not None:
        return base64.b64encode(_b64url_decode(body)).decode()
    if kind in ("whitespace", "crlf"):
        at = position % (len(body) + 1)
        return body[:at] + (" " if kind == "whitespace" else "\r\n") + body[at:]
    if kind == "part-padding":
        return ".".join(p + "=" * (-len(p) % 4) for p in body.split("."))
    if kind == "case" and body:
        at = position % len(body)
        return body[:at] + body[at].swapcase() + body[at + 1 :]
    if document is None:
        return body
    key, payload = document.get("encryptedAESKey"), document.get("encryptedPayload")
    if kind == "json-spaces":
        return _b64url(json.dumps(document, indent=1).encode())
    if kind == "json-reordered":
        return _b64url(json.dumps(dict(reversed(list(document.items())))).encode())
    if kind == "json-escaped":  # the same strings with \u escapes: still the same JSON
        return _b64url(json.dumps(document).replace("A", "\\u0041", 1).encode())
    if kind == "json-extra-member":
        return _b64url(json.dumps({**document, "extra": [1, {"x": None}]}).encode())
    if kind == "json-duplicate-member":
        text = json.dumps(document)
        return _b64url((text[:-1] + ',"encryptedPayload":"AAAA"}').encode())
    if kind == "payload-urlsafe" and isinstance(payload, str):
        urlsafe = payload.translate(str.maketrans("+/", "-_"))
        return _b64url(json.dumps({"encryptedAESKey": key, "encryptedPayload": urlsafe}).encode())
    if kind == "payload-unpadded" and isinstance(payload, str):
        bare = payload.rstrip("=")
        return _b64url(json.dumps({"encryptedAESKey": key, "encryptedPayload": bare}).encode())
    if kind == "payload-newlines" and isinstance(payload, str):
        wrapped = "\n".join(payload[i : i + 76] for i in range(0, len(payload), 76))
        return _b64url(json.dumps({"encryptedAESKey": key, "encryptedPayload": wrapped}).encode())
    if kind == "key-padded" and isinstance(key, str):
        padded = ".".join(p + "=" * (-len(p) % 4) for p in key.split("."))
        return _b64url(
            json.dumps({"encryptedAESKey": padded, "encryptedPayload": payload}).encode()
        )
    return body


REENCODINGS = [
    "pad",
    "overpad",
    "standard-alphabet",
    "standard-padded",
    "whitespace",
    "crlf",
    "part-padding",
    "case",
    "json-spaces",
    "json-reordered",
    "json-escaped",
    "json-extra-member",
    "json-duplicate-member",
    "payload-urlsafe",
    "payload-unpadded",
    "payload-newlines",
    "key-padded",
]
INSERTS = ["=", "==", ".", "+", "/", "-", "_", " ", "\n", "A", "\u00e9", "\x00", "....", "\udc80"]
position = st.integers(min_value=0, max_value=1 << 20)
mutations = st.one_of(
    st.tuples(st.just("flip"), position, st.integers(0, 7)),
    st.tuples(st.just("truncate"), position),
    st.tuples(st.just("chop"), position),
    st.tuples(st.just("insert"), position, st.sampled_from(INSERTS) | st.text(max_size=3)),
    st.tuples(st.just("delete"), position, st.integers(1, 40)),
    st.tuples(st.just("replace"), position, st.sampled_from(URL_ALPHABET)),
    st.tuples(st.just("duplicate"), position, st.integers(1, 40)),
    st.tuples(st.just("swap-parts"), st.integers(0, 4), st.integers(0, 4)),
    st.tuples(st.just("splice-part"), st.integers(0, 4), st.integers(0, 63)),
    st.tuples(st.just("splice-body"), position, st.integers(0, 63)),
    st.tuples(st.just("reencode"), st.sampled_from(REENCODINGS), position),
)


def spliced_from(mutation: tuple[Any, ...], pool: list[tuple[str, Any]]) -> Any:
    """For a splice, the pool entry whose parts went in: its payload is a fair result too."""
    if mutation[0] in ("splice-part", "splice-body"):
        return pool[mutation[2] % len(pool)][1]
    return None


def mutate(body: str, mutation: tuple[Any, ...], pool: list[tuple[str, Any]]) -> str | bytes:
    op, *args = mutation
    at = args[0] % (len(body) + 1) if isinstance(args[0], int) else 0
    if op == "flip":  # on the bytes: the result may not be ASCII any more
        raw = bytearray(body.encode("utf-8", "surrogatepass"))
        if raw:
            raw[min(at, len(raw) - 1)] ^= 1 << args[1]
        return bytes(raw)
    if op == "truncate":
        return body[:at]
    if op == "chop":
        return body[at:]
    if op == "insert":
        return body[:at] + args[1] + body[at:]
    if op == "delete":
        return body[:at] + body[at + args[1] :]
    if op == "replace":
        return body[:at] + args[1] + body[at + 1 :]
    if op == "duplicate":
        return body[:at] + body[at : at + args[1]] + body[at:]
    other = pool[args[1] % len(pool)][0] if op in ("splice-part", "splice-body") else ""
    if op == "swap-parts":
        if "." in body:
            parts = body.split(".")
            i, j = args[0] % len(parts), args[1] % len(parts)
            parts[i], parts[j] = parts[j], parts[i]
            return ".".join(parts)
        document = _envelope(body) or {}
        key, payload = document.get("encryptedAESKey"), document.get("encryptedPayload")
        return _b64url(json.dumps({"encryptedAESKey": payload, "encryptedPayload": key}).encode())
    if op == "splice-part":
        if "." in body and "." in other:
            parts, theirs = body.split("."), other.split(".")
            parts[args[0] % len(parts)] = theirs[args[0] % len(theirs)]
            return ".".join(parts)
        mine, theirs = _envelope(body), _envelope(other)
        if mine is None or theirs is None:
            return body + other
        member = ("encryptedAESKey", "encryptedPayload")[args[0] % 2]
        return _b64url(json.dumps({**mine, member: theirs[member]}).encode())
    if op == "splice-body":
        return body[:at] + other[at:]
    return _reencode(body, args[0], args[1])


class Tally:
    mutated = 0
    accepted = 0
    refused = 0


def check_mutant(world: World, mutant: str | bytes, payloads: list[Any], deep: bool) -> None:
    """The property: the original payload (or, for a splice, the other body's) or a
    RequestCryptoError, on every entry point."""
    Tally.mutated += 1
    try:
        value = world.decryptor.decrypt(mutant)
    except RequestCryptoError:
        Tally.refused += 1
    else:
        Tally.accepted += 1
        assert value in payloads, "a mutated body decrypted to another payload"
    with contextlib.suppress(RequestCryptoError):
        unpack_body(mutant)
    # The streaming elastic parser must agree with the general one wherever it answers.
    if isinstance(mutant, (str, bytes)):
        streamed = unpack_encrypted_payload(mutant)
        if streamed is not None:
            general = unpack_body(mutant)
            assert streamed[0] == general.encrypted_aes_key
            assert bytes(streamed[1]) == decode_standard_base64(
                general.encrypted_payload, "the encrypted payload"
            )
    if deep:
        with contextlib.suppress(RequestCryptoError):
            world.decryptor.get_jwk_metadata(mutant)
        with contextlib.suppress(RequestCryptoError):
            world.keys.decrypt(mutant)


def test_mutated_bodies_give_the_payload_or_a_library_error(world: World) -> None:
    before = Tally.mutated
    pool = world.pool

    @settings(
        max_examples=MUTATION_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        index=st.integers(0, len(pool) - 1),
        changes=st.lists(mutations, min_size=MUTANTS_PER_EXAMPLE, max_size=MUTANTS_PER_EXAMPLE),
        stacked=st.lists(mutations, min_size=2, max_size=4),
    )
    def mutants_of_one_body(index: int, changes: list[Any], stacked: list[Any]) -> None:
        body, payload = pool[index]
        for number, change in enumerate(changes):
            mutant = mutate(body, change, pool)
            allowed = [payload, spliced_from(change, pool)]
            check_mutant(world, mutant, allowed, deep=number % 8 == 0)
        stack: str | bytes = body
        allowed = [payload]
        for change in stacked:  # mutations on mutations
            if isinstance(stack, bytes):
                stack = stack.decode("latin-1")
            stack = mutate(stack, change, pool)
            allowed.append(spliced_from(change, pool))
        check_mutant(world, stack, allowed, deep=False)

    mutants_of_one_body()
    tried = Tally.mutated - before
    assert tried >= MIN_MUTATED_BODIES, f"only {tried} mutated bodies were tried"
    # The mutations are not all trivially refused, nor all harmless re-encodings.
    assert Tally.refused > tried // 2
    assert Tally.accepted > 0


def test_the_pool_decrypts_and_covers_both_formats(world: World) -> None:
    formats = set()
    for body, payload in world.pool:
        request = world.decryptor.decrypt_request(body)
        assert request.payload == payload
        formats.add(request.format.value)
    assert formats == {"elastic", "jwe"}


def test_mutate_produces_different_bodies(world: World) -> None:
    body = world.pool[0][0]
    assert mutate(body, ("flip", 10, 0), world.pool) != body.encode()
    assert mutate(body, ("reencode", "json-spaces", 0), world.pool) != body
    assert world.decryptor.decrypt(mutate(body, ("reencode", "json-spaces", 0), world.pool))
    with pytest.raises(MalformedBodyError):
        world.decryptor.decrypt(mutate(body, ("reencode", "overpad", 0), world.pool))
