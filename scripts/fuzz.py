#!/usr/bin/env python3
"""Coverage-guided fuzzing of the decrypt path: `decrypt`, `get_jwk_metadata`, `unpack_body`;
with `--target=sealed`, of sealed files: `open_sealed`, `inspect_sealed` and `SealedReader`.

Every input is a body from an attacker. The only acceptable outcomes are a payload the seeds
carried (nothing can be forged without the private key) or a `RequestCryptoError`; any other
exception, or a payload no seed carried, is a crash.

    /tmp/venv/bin/pip install atheris           # not a dev dependency: CI does not need it
    python scripts/fuzz.py -runs=100000         # libFuzzer flags pass straight through
    python scripts/fuzz.py -max_total_time=600 [CORPUS_DIR ...]

The corpus directory (default: $REQUEST_CRYPTO_FUZZ_DIR or /tmp/request_crypto_fuzz/corpus) is
seeded on every start with valid bodies of both formats: the JavaScript-made vectors in
fixtures/ and fresh Python-made ones (elastic, jwe with each content algorithm), some carrying
the JSON shapes the budget counts (nesting, separators and brackets inside strings, escapes),
plus hostile ones (issue 11): a `jwe` body with `zip`, payloads over the tight receiver's JSON
budget, and envelopes with extra and nested members. Crash inputs land in the directory above
the corpus (`-artifact_prefix`).

Given files instead of corpus directories (`python scripts/fuzz.py --target=sealed CRASH`),
it runs each once and stops, as libFuzzer and atheris do: a crash file replays its crash.

Without atheris (or with `--plain`) the same target runs under a plain random mutation fuzzer
with the same `-runs=` / `-max_total_time=` interface: no coverage guidance, but the same
oracle. tests/project/test_fuzz_harness.py runs the target on a few hundred inputs in CI so
this file cannot rot.

The sealed target (`SealedTarget`) is seeded with fixtures/sealed/ and fresh v1 and v2 files
(one or two RSA recipients, an in-process stand-in for KMS); its oracle is the same: a
`RequestCryptoError`, or exactly a plaintext some seed sealed.
"""

from __future__ import annotations

import atexit
import base64
import collections
import hashlib
import json
import os
import random
import re
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import io  # noqa: E402

from cryptography.exceptions import InvalidTag  # noqa: E402
from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: E402

from request_crypto import (  # noqa: E402
    JWKManager,
    RequestDecryptor,
    RequestEncryptor,
    SealedReader,
    inspect_sealed,
    open_sealed,
    seal,
    unpack_body,
)
from request_crypto._jose import encrypt_compact  # noqa: E402
from request_crypto.errors import RequestCryptoError  # noqa: E402

FIXTURES = ROOT / "fixtures"
DEFAULT_DIR = Path(os.environ.get("REQUEST_CRYPTO_FUZZ_DIR", "/tmp/request_crypto_fuzz"))
#: Seeds larger than this are left out: libFuzzer's -max_len follows the largest seed.
MAX_SEED = 4096
#: Python-made seed payloads (the JavaScript vectors add theirs).
SEED_PAYLOADS: list[Any] = [
    {"cluster_uuid": "abc", "count": 3},
    ["x", 1, 2.5, None, True, {"nested": ["deep"]}],
    "a string with \u00e9 and \u2603",
    0,
    {},
    # What the JSON budget scan counts: nesting, and separators, brackets, quotes and
    # backslashes inside strings (which must not count).
    [[[[[[[[]]]]]]]],
    {"k": ["[{,:", "\\", '"]', '}\\"{'], "e": "\u00e9\ud83d\ude00", "n": 12345678901234567890},
    [{}, [], "", 0, -1.5e-7, [{"a": [{"b": {}}]}]],
]
#: Payloads over the tight receiver's JSON budget (values, depth): refused there, decrypted
#: by the default one.
BUDGET_PAYLOADS: list[bytes] = [
    b"[" + b"{}," * 8 + b"{}]",
    b"[" + b"0," * 16 + b"0]",
    b"[" * 5 + b"]" * 5,
    b"{" + b",".join(b'"%d":1' % i for i in range(9)) + b"}",
]


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


class Target:
    """The function the fuzzer calls: one body through the three public entry points."""

    def __init__(self) -> None:
        jwks = json.loads((FIXTURES / "private_jwks.json").read_text(encoding="utf-8"))
        # Two receivers: default limits, and tight ones so the limit paths are reached too.
        self.decryptor = RequestDecryptor(jwks)
        self.tight = RequestDecryptor(
            jwks,
            max_body_size=2048,
            max_wrapped_key_size=768,
            max_inflated_size=64,
            max_json_values=16,
            max_json_depth=4,
        )
        self.kids = set(self.decryptor.keys.kids())
        self.encryptors = {
            "elastic": RequestEncryptor(self.decryptor.get_well_knowns()),
            "jwe": RequestEncryptor(self.decryptor.get_well_knowns(), format="jwe"),
        }
        vectors = json.loads((FIXTURES / "bodies.json").read_text(encoding="utf-8"))
        self.js_bodies = [v["body"] for v in vectors["bodies"] if len(v["body"]) <= MAX_SEED]
        payloads = SEED_PAYLOADS + [v["payload"] for v in vectors["bodies"]]
        payloads += [json.loads(p) for p in BUDGET_PAYLOADS]
        self.known_payloads = {_canonical(p) for p in payloads}
        self.calls = 0
        #: What `decrypt` made of the inputs: "payload" or the error class, for the summary.
        self.outcomes: collections.Counter[str] = collections.Counter()

    def seeds(self) -> list[bytes]:
        """Valid bodies of both formats (fresh Python ones plus the JavaScript vectors)."""
        bodies: list[str] = list(self.js_bodies)
        for kid in sorted(self.kids):
            for payload in SEED_PAYLOADS:
                bodies.append(self.encryptors["elastic"].encrypt(kid, payload))
                bodies.append(self.encryptors["jwe"].encrypt(kid, payload))
            keys = self.decryptor.keys
            plaintext = json.dumps(SEED_PAYLOADS[1]).encode()
            for enc in ("A128CBC-HS256", "A256CBC-HS512", "A128GCM"):
                bodies.append(keys.encrypt_jwe(kid, plaintext, enc=enc))
            for budget in BUDGET_PAYLOADS:
                bodies.append(keys.encrypt_jwe(kid, budget))
        raw = [b.encode("ascii") for b in bodies]
        return raw + [form for body in raw for form in shrink(body)]

    def hostile_seeds(self) -> list[bytes]:
        """Bodies every receiver refuses (issue 11), so mutations start from the refusals too."""
        kid = sorted(self.kids)[0]
        public_key = self.decryptor.keys._keys[kid].public_key
        header = {"alg": "RSA-OAEP", "enc": "A256GCM", "zip": "DEF", "kid": kid}
        compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        bomb = compressor.compress(b"[" + b"{}," * 20_000 + b"{}]") + compressor.flush()
        elastic = self.encryptors["elastic"].encrypt(kid, SEED_PAYLOADS[0]).encode("ascii")
        document = json.loads(shrink(elastic)[0])
        return [
            encrypt_compact(public_key, header, bomb).encode("ascii"),  # no zip in `jwe`
            json.dumps({**document, "x": [{}] * 100}).encode(),  # envelope over its budget
            json.dumps({**document, "x": [[[[[[[[[1]]]]]]]]]}).encode(),  # envelope too deep
            json.dumps({"x": {"y": 1}, **document}).encode(),  # nested extra member: accepted
        ]

    def __call__(self, data: bytes) -> None:
        self.calls += 1
        data = expand(data)
        text = data.decode("utf-8", "surrogateescape")  # non-UTF-8 bytes become lone surrogates
        decryptor = self.tight if len(data) % 2 else self.decryptor
        payload = _attempt(decryptor.decrypt, data, self.outcomes)
        if self.calls & (self.calls - 1) == 0 and self.calls >= 1 << 16:
            self.report()
        if payload is not _REFUSED and _canonical(payload) not in self.known_payloads:
            raise AssertionError("decrypt returned a payload no seed carried: a forgery")
        metadata = _attempt(decryptor.get_jwk_metadata, text)
        if metadata is not _REFUSED and metadata.key["kid"] not in self.kids:
            raise AssertionError("get_jwk_metadata reported a kid the receiver does not hold")
        _attempt(unpack_body, data)
        _attempt(unpack_body, text)

    def report(self) -> None:
        """One line: how far the inputs got (a DecryptionError means a key was chosen)."""
        shares = ", ".join(f"{name} {count}" for name, count in self.outcomes.most_common())
        print(f"#{self.calls} decrypt outcomes: {shares}", file=sys.stderr, flush=True)


_REFUSED = object()


class LocalDataKey:
    """A stand-in for a KMS key (sealed.DataKeySource) in process: AES-GCM under a fixed key,
    the EncryptionContext as associated data, so a blob unwraps only in its own file."""

    ARN = "arn:aws:kms:us-east-1:000000000000:key/fuzz"

    def __init__(self) -> None:
        self._aead = AESGCM(bytes(range(32)))

    def generate(self, context: dict[str, str]) -> tuple[bytes, str, bytes]:
        key, nonce = os.urandom(32), os.urandom(12)
        return key, self.ARN, nonce + self._aead.encrypt(nonce, key, _canonical(context).encode())

    def unwrap(self, arn: str, blob: bytes, context: dict[str, str]) -> bytes | None:
        if arn != self.ARN or len(blob) < 12:
            return None
        try:
            return self._aead.decrypt(blob[:12], blob[12:], _canonical(context).encode())
        except InvalidTag:
            return None


class SealedTarget:
    """The sealed-file target: one input as a whole sealed file, opened three ways."""

    SEGMENT = 1024

    def __init__(self) -> None:
        sealed = FIXTURES / "sealed"
        self.keys = JWKManager(json.loads((sealed / "keys.json").read_text(encoding="utf-8")))
        self.kms = LocalDataKey()
        self.fixtures = [
            path.read_bytes()
            for path in sorted(sealed.glob("*.sealed"))
            if path.stat().st_size <= MAX_SEED
        ]
        # Fixed plaintexts: a corpus kept from an earlier run must still open to a known one.
        fixed = random.Random(0)
        self.plaintexts = [
            b"",
            b"x",
            fixed.randbytes(self.SEGMENT),
            fixed.randbytes(2 * self.SEGMENT + 5),
        ]
        self.known = {hashlib.sha256(p.read_bytes()).digest() for p in sealed.glob("*.plain")}
        self.known |= {hashlib.sha256(p).digest() for p in self.plaintexts}
        self.calls = 0
        self.outcomes: collections.Counter[str] = collections.Counter()

    def seeds(self) -> list[bytes]:
        """The fixtures, and fresh v1 (one and two RSA recipients) and v2 (KMS) files."""
        out = list(self.fixtures)
        kids = self.keys.kids()
        for plaintext in self.plaintexts:
            for recipients, kms in (
                ([kids[0]], None),
                (kids, None),
                ([], self.kms),
                (kids[:1], self.kms),
            ):
                out.append(self._seal(plaintext, recipients, kms))
        return out

    def hostile_seeds(self) -> list[bytes]:
        """No extra: the fixtures already hold the refused shapes (see vectors.json)."""
        return []

    def _seal(self, plaintext: bytes, kids: list[str], kms: Any) -> bytes:
        out = io.BytesIO()
        public = [self.keys.get_public_jwk(kid) or {} for kid in kids]
        seal(io.BytesIO(plaintext), out, public, segment_size=self.SEGMENT, kms=kms)
        return out.getvalue()

    def __call__(self, data: bytes) -> None:
        self.calls += 1
        for keys in (self.keys, self.kms):
            opened = _attempt(lambda d, keys=keys: self._open(d, keys), data, self.outcomes)
            if opened is not _REFUSED and hashlib.sha256(opened).digest() not in self.known:
                raise AssertionError("open_sealed returned data no seed sealed: a forgery")
        _attempt(lambda d: inspect_sealed(io.BytesIO(d)), data)
        reader = _attempt(lambda d: SealedReader(io.BytesIO(d), self.keys), data)
        if reader is not _REFUSED:
            middle = reader.length // 2
            reader.seek(middle)
            _attempt(reader.read, 1500)
        if self.calls & (self.calls - 1) == 0 and self.calls >= 1 << 14:
            self.report()

    @staticmethod
    def _open(data: bytes, keys: Any) -> bytes:
        out = io.BytesIO()
        open_sealed(io.BytesIO(data), out, keys)
        return out.getvalue()

    def report(self) -> None:
        """One line: how far the inputs got."""
        shares = ", ".join(f"{name} {count}" for name, count in self.outcomes.most_common())
        print(f"#{self.calls} open_sealed outcomes: {shares}", file=sys.stderr, flush=True)


def mutate_sealed(data: bytes, corpus: Sequence[bytes], rng: random.Random) -> bytes:
    """A sealed file's header lines dropped, repeated, swapped or taken from another file;
    else one of `mutate`'s byte-level changes."""
    head, sep, rest = data.partition(b"\nmac ")
    lines = head.split(b"\n")
    op = rng.randrange(6)
    if not sep or op >= 4:
        return mutate(data, corpus, rng)
    i = rng.randrange(len(lines))
    if op == 0:
        del lines[i]
    elif op == 1:
        lines.insert(i, lines[rng.randrange(len(lines))])
    elif op == 2:
        j = rng.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]
    else:
        other = rng.choice(corpus).partition(b"\nmac ")[0].split(b"\n")
        lines[i] = rng.choice(other)
    return b"\n".join(lines) + sep + rest


def expand(data: bytes) -> bytes:
    """Two input encodings that let the fuzzer mutate inside the base64url layers.

    `{...}`: the decoded JSON of an `elastic` body (it is base64url-encoded here).
    `!HEADER\x00.rest`: a compact JWE whose protected header JSON is given raw.
    Anything else is the body as is.
    """
    if data[:1] == b"{":
        return _b64url(data)
    if data[:1] == b"!":
        header, _, rest = data[1:].partition(b"\x00")
        return _b64url(header) + rest
    return data


def shrink(body: bytes) -> list[bytes]:
    """The `expand` encodings of a valid body, as extra seeds."""
    if b"." in body:
        header, _, rest = body.partition(b".")
        decoded = base64.urlsafe_b64decode(header + b"=" * (-len(header) % 4))
        return [b"!" + decoded + b"\x00." + rest]
    return [base64.urlsafe_b64decode(body + b"=" * (-len(body) % 4))]


def _b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _attempt(
    function: Callable[[Any], Any],
    argument: Any,
    outcomes: collections.Counter[str] | None = None,
) -> Any:
    """Call; a RequestCryptoError is a refusal (fine), anything else propagates as a crash."""
    try:
        result = function(argument)
    except RequestCryptoError as exc:
        if outcomes is not None:
            outcomes[type(exc).__name__] += 1
        return _REFUSED
    if outcomes is not None:
        outcomes["payload"] += 1
    return result


# -- the plain fallback -------------------------------------------------------------------

_B64URL = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_INTERESTING = [b"", b".", b"=", b"==", b"+", b"/", b"\n", b" ", b"\x00", b"\xff", b"\xc3\xa9"]


def mutate(data: bytes, corpus: Sequence[bytes], rng: random.Random) -> bytes:
    """One random structural or byte-level mutation of a body (plain fuzzer and tests)."""
    buf = bytearray(data)
    op = rng.randrange(12)
    pos = rng.randrange(len(buf) + 1)
    if op == 0 and buf:  # bit flip
        i = min(pos, len(buf) - 1)
        buf[i] ^= 1 << rng.randrange(8)
    elif op == 1:  # truncate
        del buf[pos:]
    elif op == 2:  # insert alphabet or interesting bytes
        buf[pos:pos] = rng.choice([bytes([rng.choice(_B64URL)]), rng.choice(_INTERESTING)])
    elif op == 3:  # delete a run
        del buf[pos : pos + rng.randrange(1, 16)]
    elif op == 4:  # replace with an alphabet character
        if buf:
            buf[min(pos, len(buf) - 1)] = rng.choice(_B64URL)
    elif op == 5:  # swap two compact JWE parts, or splice a part from another body
        parts = bytes(buf).split(b".")
        if len(parts) > 1:
            i, j = rng.randrange(len(parts)), rng.randrange(len(parts))
            if rng.random() < 0.5:
                parts[i], parts[j] = parts[j], parts[i]
            else:
                other = rng.choice(corpus).split(b".")
                parts[i] = other[min(i, len(other) - 1)]
            buf = bytearray(b".".join(parts))
    elif op == 6:  # splice with another body
        other = rng.choice(corpus)
        cut = rng.randrange(len(other) + 1)
        buf = buf[:pos] + bytearray(other[cut:])
    elif op == 7:  # re-encode an elastic body: padding, standard alphabet, whitespace
        buf = bytearray(_reencode(bytes(buf), rng))
    elif op == 8:  # elastic: swap or splice the two members inside the decoded JSON
        buf = bytearray(_swap_members(bytes(buf), corpus, rng))
    elif op == 9:  # duplicate a run
        buf[pos:pos] = buf[pos : pos + rng.randrange(1, 64)]
    elif op == 10:  # random garbage
        buf[pos:pos] = rng.randbytes(rng.randrange(1, 8))
    else:  # change the length of a part by a few characters at its end
        parts = bytes(buf).split(b".")
        i = rng.randrange(len(parts))
        parts[i] = parts[i][: max(0, len(parts[i]) - rng.randrange(1, 4))]
        buf = bytearray(b".".join(parts))
    return bytes(buf)


def _reencode(body: bytes, rng: random.Random) -> bytes:
    choice = rng.randrange(4)
    if choice == 0:
        return body + b"=" * rng.randrange(1, 4)
    if choice == 1:
        return body.translate(bytes.maketrans(b"-_", b"+/"))
    if choice == 2:
        i = rng.randrange(len(body) + 1)
        return body[:i] + rng.choice([b" ", b"\n", b"\r\n", b"\t"]) + body[i:]
    try:
        decoded = base64.urlsafe_b64decode(body + b"=" * (-len(body) % 4))
        document = json.loads(decoded)
    except ValueError:
        return body
    text = json.dumps(document, indent=rng.choice([None, 1]), sort_keys=rng.random() < 0.5)
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=")


def _swap_members(body: bytes, corpus: Sequence[bytes], rng: random.Random) -> bytes:
    try:
        document = json.loads(base64.urlsafe_b64decode(body + b"=" * (-len(body) % 4)))
        pick = rng.choice(corpus)
        other = json.loads(base64.urlsafe_b64decode(pick + b"=" * (-len(pick) % 4)))
        key, payload = document["encryptedAESKey"], document["encryptedPayload"]
    except (ValueError, TypeError, KeyError):
        return body
    if rng.random() < 0.5:
        key, payload = payload, key
    elif isinstance(other, dict):
        member = rng.choice(["encryptedAESKey", "encryptedPayload"])
        if member in other:
            document[member] = other[member]
        key, payload = document["encryptedAESKey"], document["encryptedPayload"]
    text = json.dumps({"encryptedAESKey": key, "encryptedPayload": payload})
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=")


def plain_fuzz(
    target: Callable[[bytes], None],
    corpus: list[bytes],
    *,
    runs: int,
    max_total_time: float,
    seed: int,
    crash_dir: Path,
    mutator: Callable[[bytes, Sequence[bytes], random.Random], bytes] = mutate,
) -> int:
    """Random mutation fuzzing with libFuzzer's stop flags; returns a process exit code."""
    rng = random.Random(seed)
    start = time.monotonic()
    done = 0
    while (runs < 0 or done < runs) and (
        max_total_time <= 0 or time.monotonic() - start < max_total_time
    ):
        data = rng.choice(corpus)
        for _ in range(rng.randrange(1, 5)):
            data = mutator(data, corpus, rng)
        try:
            target(data)
        except BaseException:
            path = crash_dir / f"crash-{hashlib.sha1(data).hexdigest()}"
            path.write_bytes(data)
            print(f"==CRASH== input written to {path}", file=sys.stderr)
            raise
        done += 1
        if done % 5000 == 0:
            rate = done / max(time.monotonic() - start, 1e-9)
            print(f"#{done}\tplain\texec/s: {rate:.0f}", file=sys.stderr)
    elapsed = time.monotonic() - start
    print(
        f"#{done} DONE plain fuzzer: {done} runs in {elapsed:.0f}s, "
        f"exec/s: {done / max(elapsed, 1e-9):.0f}, no crash",
        file=sys.stderr,
    )
    return 0


def _flag(args: list[str], name: str, default: float) -> float:
    for arg in args:
        match = re.fullmatch(rf"-{name}=(-?\d+)", arg)
        if match:
            return float(match.group(1))
    return default


TARGETS = {"decrypt": (Target, mutate), "sealed": (SealedTarget, mutate_sealed)}


def replay(target: Callable[[bytes], None], files: Sequence[Path]) -> int:
    """Run the target once on each file (a crash input, say); a crash raises, with its
    traceback. libFuzzer's own output lines, so tools that parse them still do."""
    for path in files:
        print(f"Running: {path}", file=sys.stderr)
        target(path.read_bytes())
        print(f"Executed {path}", file=sys.stderr)
    return 0


def main(argv: list[str]) -> int:
    plain = "--plain" in argv
    chosen = [a.partition("=")[2] for a in argv if a.startswith("--target=")] or ["decrypt"]
    args = [a for a in argv if a != "--plain" and not a.startswith("--target=")]
    make_target, mutator = TARGETS[chosen[-1]]
    target: Any = make_target()
    corpus_dirs = [a for a in args[1:] if not a.startswith("-")]
    files = [Path(a) for a in corpus_dirs if Path(a).is_file()]
    if files:
        if len(files) != len(corpus_dirs):
            print("give input files to replay, or corpus directories: not both", file=sys.stderr)
            return 2
        return replay(target, files)
    if not corpus_dirs:
        corpus_dirs = [str(DEFAULT_DIR / "corpus")]
        args.append(corpus_dirs[0])
    corpus_dir = Path(corpus_dirs[0])
    corpus_dir.mkdir(parents=True, exist_ok=True)
    seeds = target.seeds() + target.hostile_seeds()
    for seed in seeds:
        (corpus_dir / hashlib.sha1(seed).hexdigest()).write_bytes(seed)
    if not any(a.startswith("-artifact_prefix=") for a in args):
        args.insert(1, f"-artifact_prefix={corpus_dir.parent}/")
    print(f"seeded {len(seeds)} valid bodies into {corpus_dir}", file=sys.stderr)
    atexit.register(target.report)

    try:
        if plain:
            raise ImportError("--plain")
        import atheris  # type: ignore[import-not-found]
    except ImportError as exc:
        print(f"atheris unavailable ({exc}): running the plain random fuzzer", file=sys.stderr)
        corpus = [p.read_bytes() for p in corpus_dir.iterdir() if p.is_file()]
        return plain_fuzz(
            target,
            corpus or seeds,
            runs=int(_flag(args, "runs", -1)),
            max_total_time=_flag(args, "max_total_time", 0),
            seed=int(_flag(args, "seed", time.time_ns() % 2**32)),
            crash_dir=corpus_dir.parent,
            mutator=mutator,
        )
    atheris.instrument_all()
    atheris.Setup(args, target)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
