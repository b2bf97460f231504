"""Issue 11: no single body, valid or not, adds more than 256 MiB of peak RSS to a decrypting
process with the default limits, whatever it holds.

Every body here is made with the *public* key only (it ships with every sender), so it
decrypts correctly: the limits must hold for authentic bodies. Each is decrypted in a fresh
child process, on both JSON paths (msgspec, and the standard library with msgspec switched
off). The child resets its RSS high-water mark (/proc/self/clear_refs) after reading the body
and reports VmHWM minus its RSS before the call: `ru_maxrss` is no use here, because Linux
carries a parent's high-water mark across fork and exec into the child's `ru_maxrss`.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from request_crypto import JWKManager, PassphraseCipher, RequestDecryptor, pack_body
from request_crypto._jose import encrypt_compact
from request_crypto._json import measure_json
from request_crypto.errors import (
    JSONBudgetError,
    MalformedBodyError,
    PayloadTooLargeError,
    UnsupportedAlgorithmError,
)
from request_crypto.limits import (
    DEFAULT_MAX_BODY_SIZE,
    DEFAULT_MAX_INFLATED_SIZE,
    DEFAULT_MAX_JSON_DEPTH,
    DEFAULT_MAX_JSON_VALUES,
)

MiB = 1024 * 1024
BUDGET = 256 * MiB
V = DEFAULT_MAX_JSON_VALUES
#: The largest plaintext both formats carry at the default limits (an elastic body is ~1.78x).
P = min(DEFAULT_MAX_INFLATED_SIZE, (DEFAULT_MAX_BODY_SIZE - 2048) * 9 // 16 - 128)
LINUX = Path("/proc/self/clear_refs").exists()

CHILD = r"""
import json, sys
if sys.argv[3] == "stdlib":
    from request_crypto import _accel
    _accel.msgspec = None
from request_crypto import RequestDecryptor
from request_crypto.errors import RequestCryptoError
decryptor = RequestDecryptor(json.loads(open(sys.argv[1]).read()))
body = open(sys.argv[2], "rb").read()
def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
with open("/proc/self/clear_refs", "w") as reset:
    reset.write("5")  # VmHWM := VmRSS
before = status("VmRSS")
try:
    decryptor.decrypt(body)
    outcome = "ok"
except RequestCryptoError as exc:
    outcome = type(exc).__name__
print(json.dumps({"added": status("VmHWM") - before, "outcome": outcome}))
"""


def _filled(unit: bytes, values_each: int) -> bytes:
    """`[unit,unit,...]`: as many as the value budget and the plaintext limit allow."""
    count = min((V - 2) // values_each, (P - 2) // len(unit))
    return b"[" + (unit * count)[:-1] + b"]"


#: The worst shapes per byte and per value; each within every default limit (it decrypts).
SHAPES: dict[str, Callable[[], bytes]] = {
    "empty-objects": lambda: _filled(b"{},", 2),
    "nested-lists-256-deep": lambda: _filled(b"[" * 255 + b"]" * 255 + b",", 256),
    "zeros": lambda: _filled(b"0,", 1),
    "distinct-keys": lambda: b"{" + b",".join(b'"%x":1' % i for i in range((V - 2) // 2)) + b"}",
    "one-member-objects": lambda: _filled(b'{"a":0},', 3),
    "short-strings": lambda: b"[" + b",".join(b'"%x"' % i for i in range(V - 2)) + b"]",
    "empty-strings": lambda: _filled(b'"",', 1),
    "floats": lambda: _filled(b"1.5,", 1),
    "big-integers": lambda: _filled(b"9" * 4000 + b",", 1),
    "latin1-escapes": lambda: b'["' + b"\\u00e9" * ((P - 4) // 6) + b'"]',
    "astral-escapes": lambda: b'["' + b"\\ud83d\\ude00" * ((P - 4) // 12) + b'"]',
    # One astral character makes Python store the whole string at 4 bytes a character.
    "ucs4-string": lambda: b'["' + b"a" * (P - 10) + "\U0001f600".encode() + b'"]',
}
#: Shapes over a limit: refused, and what the refusal costs counts too.
OVER: dict[str, tuple[Callable[[], bytes], type[Exception]]] = {
    "empty-objects-16MiB": (lambda: b"[" + b"{}," * (P // 3 - 1) + b"{}]", JSONBudgetError),
    "zeros-16MiB": (lambda: b"[" + b"0," * (P // 2 - 2) + b"0]", JSONBudgetError),
    "too-deep": (lambda: _filled(b"[" * 257 + b"]" * 257 + b",", 258), MalformedBodyError),
}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    keys = JWKManager()
    keys.add_key("k")
    folder = tmp_path_factory.mktemp("budget")
    (folder / "jwks.json").write_text(json.dumps(keys.get_private_jwks()))
    return {"public": JWKManager(keys.get_public_jwks()), "folder": folder, "keys": keys}


def _body(world: dict[str, Any], fmt: str, plaintext: bytes) -> str:
    public: JWKManager = world["public"]
    if fmt == "jwe":
        return public.encrypt_jwe("k", plaintext)
    passphrase = os.urandom(32)
    return pack_body(
        public.encrypt("k", passphrase), PassphraseCipher(passphrase).encrypt_bytes(plaintext)
    )


def _added_peak(world: dict[str, Any], body: str | bytes, parser: str) -> tuple[int, str]:
    folder: Path = world["folder"]
    path = folder / "body"
    path.write_bytes(body.encode() if isinstance(body, str) else body)
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(folder / "jwks.json"), str(path), parser],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    return int(report["added"]), str(report["outcome"])


needs_linux = pytest.mark.skipif(not LINUX, reason="reads /proc/self/clear_refs and VmHWM")


@needs_linux
@pytest.mark.parametrize("parser", ["msgspec", "stdlib"])
@pytest.mark.parametrize("fmt", ["elastic", "jwe"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_authentic_worst_shapes_stay_under_256_MiB(
    world: dict[str, Any], shape: str, fmt: str, parser: str
) -> None:
    plaintext = SHAPES[shape]()
    assert len(plaintext) <= DEFAULT_MAX_INFLATED_SIZE
    assert measure_json(plaintext, V, DEFAULT_MAX_JSON_DEPTH).values <= V
    body = _body(world, fmt, plaintext)
    assert len(body) <= DEFAULT_MAX_BODY_SIZE
    added, outcome = _added_peak(world, body, parser)
    assert outcome == "ok"
    assert added < BUDGET, f"{shape}/{fmt}/{parser}: +{added / MiB:.0f} MiB"


@needs_linux
@pytest.mark.parametrize("parser", ["msgspec", "stdlib"])
@pytest.mark.parametrize("fmt", ["elastic", "jwe"])
@pytest.mark.parametrize("shape", list(OVER))
def test_shapes_over_a_limit_are_refused_cheaply(
    world: dict[str, Any], shape: str, fmt: str, parser: str
) -> None:
    build, error = OVER[shape]
    added, outcome = _added_peak(world, _body(world, fmt, build()), parser)
    assert outcome == error.__name__
    assert added < BUDGET / 2, f"{shape}/{fmt}/{parser}: +{added / MiB:.0f} MiB"


def _b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _outer_shapes(world: dict[str, Any]) -> dict[str, bytes]:
    """Non-canonical `elastic` envelopes at the body limit, refused before authentication."""
    room = (DEFAULT_MAX_BODY_SIZE - 64) * 3 // 4
    genuine = json.loads(base64.urlsafe_b64decode(_body(world, "elastic", b"1") + "=="))
    key, payload = genuine["encryptedAESKey"], genuine["encryptedPayload"]
    head = json.dumps({"encryptedAESKey": key, "encryptedPayload": payload})[:-1].encode()
    return {
        "array-of-objects": _b64url(b"[" + b"{}," * (room // 3 - 1) + b"{}]"),
        "extra-member-of-objects": _b64url(head + b',"x":[' + b"{}," * (room // 3 - 400) + b"{}]}"),
        "deep": _b64url(b"[" * room),
        "extra-ucs4-string": _b64url(
            head + b', "x":"' + b"a" * (room - 1024) + "\U0001f600".encode() + b'"}'
        ),
    }


@needs_linux
@pytest.mark.parametrize("shape", ["array-of-objects", "extra-member-of-objects", "deep"])
def test_outer_json_is_checked_before_it_is_parsed(world: dict[str, Any], shape: str) -> None:
    """Issue 11, item 6: a huge envelope used to cost +1.1 GB before anything was checked."""
    body = _outer_shapes(world)[shape]
    assert len(body) <= DEFAULT_MAX_BODY_SIZE
    added, outcome = _added_peak(world, body, "msgspec")
    assert outcome == "MalformedBodyError"
    assert added < BUDGET / 2, f"{shape}: +{added / MiB:.0f} MiB"


@needs_linux
def test_outer_json_with_a_huge_extra_string_stays_under_budget(world: dict[str, Any]) -> None:
    body = _outer_shapes(world)["extra-ucs4-string"]
    assert len(body) <= DEFAULT_MAX_BODY_SIZE
    added, outcome = _added_peak(world, body, "msgspec")
    assert outcome == "ok"  # the JavaScript side ignores extra members; so does this one
    assert added < BUDGET, f"+{added / MiB:.0f} MiB"


@needs_linux
def test_jwe_zip_bomb_costs_nothing(world: dict[str, Any]) -> None:
    """Issue 11, item 4: 87 KB inflating to 64 MiB of `[{},...]`, made with the public key."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    bomb = compressor.compress(b"[" + b"{}," * (22 * MiB) + b"{}]") + compressor.flush()
    public = world["public"]._keys["k"].public_key
    header = {"alg": "RSA-OAEP", "enc": "A256GCM", "zip": "DEF", "kid": "k"}
    body = encrypt_compact(public, header, bomb)
    assert len(body) < 150_000
    added, outcome = _added_peak(world, body, "msgspec")
    assert outcome == "UnsupportedAlgorithmError"
    assert added < 8 * MiB, f"+{added / MiB:.0f} MiB"


# -- the budget itself, in process --------------------------------------------------------


def test_the_fast_and_the_standard_parser_refuse_alike(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    decryptor = RequestDecryptor(world["keys"], max_json_values=1000, max_json_depth=16)
    bodies = {
        "values": (_body(world, "jwe", b"[" + b"0," * 1000 + b"0]"), JSONBudgetError),
        "depth": (_body(world, "elastic", b"[" * 17 + b"]" * 17), MalformedBodyError),
        "values-in-strings": (_body(world, "jwe", b'["' + b"[{,:" * 1000 + b'"]'), None),
        "depth-in-strings": (_body(world, "jwe", b'["' + b"[" * 100 + b'"]'), None),
    }
    from request_crypto import _accel

    for accelerated in (True, False):
        if not accelerated:
            monkeypatch.setattr(_accel, "msgspec", None)
        for name, (body, error) in bodies.items():
            if error is None:
                decryptor.decrypt(body)  # separators and brackets inside strings do not count
            else:
                with pytest.raises(error):
                    decryptor.decrypt(body)
                assert name


def test_budget_errors_are_payload_too_large_with_the_setting_to_raise(
    world: dict[str, Any],
) -> None:
    decryptor = RequestDecryptor(world["keys"], max_json_values=10)
    with pytest.raises(PayloadTooLargeError) as caught:
        decryptor.decrypt(_body(world, "elastic", b"[1,2,3,4,5,6,7,8,9,10]"))
    assert isinstance(caught.value, JSONBudgetError)
    assert caught.value.limit == 10 and caught.value.size == 11
    assert "raise max_json_values" in str(caught.value)
    with pytest.raises(MalformedBodyError, match="raise max_json_depth"):
        RequestDecryptor(world["keys"], max_json_depth=2).decrypt(_body(world, "jwe", b"[[[1]]]"))


@pytest.mark.parametrize("name", ["max_json_values", "max_json_depth"])
@pytest.mark.parametrize("value", [0, -1, True, 1.5, "10"])
def test_budget_limits_are_validated(world: dict[str, Any], name: str, value: Any) -> None:
    with pytest.raises(ValueError, match=name):
        RequestDecryptor(world["keys"], **{name: value})


def test_jwe_zip_refused_before_any_key_is_used(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The elastic wrapped key is a zip=DEF JWE too: it still opens.
    assert RequestDecryptor(world["keys"]).decrypt(_body(world, "elastic", b"[1]")) == [1]
    calls: list[str] = []
    monkeypatch.setattr(
        "request_crypto.keys.source.decrypt_compact", lambda *a, **k: calls.append("rsa")
    )
    public = world["public"]._keys["k"].public_key
    header = {"alg": "RSA-OAEP", "enc": "A256GCM", "zip": "DEF", "kid": "k"}
    body = encrypt_compact(public, header, b"[]")
    with pytest.raises(UnsupportedAlgorithmError, match="'zip'"):
        RequestDecryptor(world["keys"]).decrypt(body)
    assert calls == []
