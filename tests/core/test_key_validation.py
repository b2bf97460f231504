"""jwks.py key validation: sound RSA numbers only, `use`/`key_ops` honoured per operation.

Every refusal is an InvalidJWKSError naming the key's position and kid, never a bare
ValueError from `cryptography`, and never quoting key material.
"""

from __future__ import annotations

import copy
import gc
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from request_crypto import JWKManager, RequestDecryptor, RequestEncryptor
from request_crypto._b64 import b64url_decode, b64url_encode
from request_crypto.errors import InvalidArgumentError, InvalidJWKSError, NoKeyFoundError
from request_crypto.keys.jwks import MAX_KEY_SIZE, MIN_KEY_SIZE, PRIVATE_MEMBERS
from tests.conftest import load_fixture

JS_KEY_FILES = ("private_jwks.json", "public_jwks.json")


def b64int(value: int) -> str:
    return b64url_encode(value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))


def unb64int(text: str) -> int:
    return int.from_bytes(b64url_decode(text, "test"), "big")


def secrets_of(jwks: dict[str, Any]) -> list[str]:
    return [key[m][:12] for key in jwks["keys"] for m in PRIVATE_MEMBERS if m in key]


def refused(jwks: dict[str, Any], position: str, kid: str, *, secrets: list[str]) -> str:
    """Load must fail with InvalidJWKSError (not a bare ValueError) naming where, no secrets."""
    with pytest.raises(InvalidJWKSError) as caught:
        JWKManager(jwks)
    message = str(caught.value)
    assert position in message and repr(kid) in message, message
    assert [secret for secret in secrets if secret in message] == []
    return message


# ---------------------------------------------------------------------------------------------
# The numbers


def public_key_with(public_jwks: dict[str, Any], **numbers: int | str) -> dict[str, Any]:
    key = dict(public_jwks["keys"][1])
    key.update({m: b64int(v) if isinstance(v, int) else v for m, v in numbers.items()})
    return {"keys": [public_jwks["keys"][0], key]}


def n_of(jwks: dict[str, Any]) -> int:
    return unb64int(jwks["keys"][1]["n"])


PUBLIC_CASES: dict[str, Callable[[int], dict[str, int | str]]] = {
    "even-modulus": lambda n: {"n": n - 1},
    "2047-bit-modulus": lambda n: {"n": (1 << 2046) + 1},
    "16385-bit-modulus": lambda n: {"n": (1 << 16384) + 1},
    "even-exponent": lambda n: {"e": 65536},
    "exponent-1": lambda n: {"e": 1},
    "exponent-0": lambda n: {"e": "AA"},
    "exponent-not-below-n": lambda n: {"e": n},
    "empty-modulus": lambda n: {"n": ""},
    "modulus-not-base64url": lambda n: {"n": "n*t"},
}


@pytest.mark.parametrize("case", PUBLIC_CASES)
def test_unsound_public_numbers_are_refused_at_load(public_jwks: dict[str, Any], case: str) -> None:
    jwks = public_key_with(public_jwks, **PUBLIC_CASES[case](n_of(public_jwks)))
    refused(jwks, "key #1", "kibana_2", secrets=[])


@pytest.mark.parametrize("bits", [MIN_KEY_SIZE, MAX_KEY_SIZE])
def test_moduli_at_both_limits_load(public_jwks: dict[str, Any], bits: int) -> None:
    manager = JWKManager(public_key_with(public_jwks, n=(1 << (bits - 1)) + 1))
    assert manager.key_metadata("kibana_2") == {
        "kid": "kibana_2",
        "kty": "RSA",
        "use": "enc",
        "alg": "RSA-OAEP",
        "length": bits,
    }


def _from_other(*members: str) -> Callable[[dict[str, Any]], None]:
    def edit(jwks: dict[str, Any]) -> None:
        jwks["keys"][0].update({m: jwks["keys"][1][m] for m in members})

    return edit


def _swap_p_and_q(jwks: dict[str, Any]) -> None:
    key = jwks["keys"][0]
    key["p"], key["q"] = key["q"], key["p"]


def _set(member: str, value: int) -> Callable[[dict[str, Any]], None]:
    def edit(jwks: dict[str, Any]) -> None:
        jwks["keys"][0][member] = b64int(value)

    return edit


PRIVATE_CASES: dict[str, Callable[[dict[str, Any]], None]] = {
    "p-of-another-key": _from_other("p"),
    "d-of-another-key": _from_other("d"),
    "dp-of-another-key": _from_other("dp"),
    "dq-of-another-key": _from_other("dq"),
    "qi-of-another-key": _from_other("qi"),
    "public-numbers-of-another-key": _from_other("n", "e"),
    "p-and-q-swapped": _swap_p_and_q,
    "another-sound-exponent": _set("e", 3),
    "p-is-1": _set("p", 1),
    "d-is-0": _set("d", 0),
}


@pytest.mark.parametrize("case", PRIVATE_CASES)
def test_private_numbers_that_do_not_match_are_refused_at_load(
    private_jwks: dict[str, Any], case: str
) -> None:
    jwks = copy.deepcopy(private_jwks)
    PRIVATE_CASES[case](jwks)
    refused(jwks, "key #0", "kibana_1", secrets=secrets_of(private_jwks))


def test_an_inserted_unsound_key_names_itself(private_jwks: dict[str, Any]) -> None:
    manager = JWKManager(private_jwks)
    key = {**private_jwks["keys"][0], "kid": "extra", "n": b64int(n_of(private_jwks) - 1)}
    with pytest.raises(InvalidJWKSError, match=r"the inserted key \(kid 'extra'\).*even"):
        manager.insert_key(key)
    assert manager.kids() == ["kibana_1", "kibana_2"]


MEMBERS = ("n", "e", *PRIVATE_MEMBERS)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    member=st.sampled_from(MEMBERS),
    value=st.one_of(
        st.integers(0, 2**64),
        st.integers(2**2000, 2**16500),
        st.integers(0, 2**2048).map(lambda v: v * 2),
    ),
    private=st.booleans(),
)
def test_whatever_loads_encrypts_and_decrypts(member: str, value: int, private: bool) -> None:
    """A key that loads is usable: no number check is left to fail at encrypt time."""
    jwks = load_fixture("private_jwks.json" if private else "public_jwks.json")
    if member not in jwks["keys"][0]:
        return
    jwks["keys"][0][member] = b64int(value)
    try:
        manager = JWKManager(jwks)
    except InvalidJWKSError as exc:
        assert "key #0 (kid 'kibana_1')" in str(exc)
        return
    token = manager.encrypt("kibana_1", b"k" * 32)  # any other exception fails the test
    if manager.has_private_key("kibana_1"):
        assert manager.decrypt(token).payload == b"k" * 32


@pytest.mark.parametrize("name", JS_KEY_FILES)
def test_the_keys_the_js_packages_made_still_load(name: str) -> None:
    jwks = load_fixture(name)
    manager = JWKManager(jwks)
    assert manager.kids() == [key["kid"] for key in jwks["keys"]]
    for kid in manager.kids():
        metadata = manager.key_metadata(kid)
        assert metadata is not None and metadata["length"] >= MIN_KEY_SIZE
        assert manager.get_public_jwk(kid) == {
            m: jwks["keys"][manager.kids().index(kid)][m]
            for m in ("kty", "kid", "use", "alg", "e", "n")
        }


# ---------------------------------------------------------------------------------------------
# use and key_ops


def with_ops(jwks: dict[str, Any], key_ops: Any, index: int = 0) -> dict[str, Any]:
    jwks = copy.deepcopy(jwks)
    jwks["keys"][index]["key_ops"] = key_ops
    return jwks


@pytest.mark.parametrize(
    "key_ops",
    [["sign", "verify"], [], "wrapKey", ["wrapKey", "wrapKey"], ["unwrapKey", 1], None],
    ids=["signing-only", "empty", "not-a-list", "duplicate", "not-strings", "null"],
)
def test_key_ops_no_operation_here_may_use_are_refused_at_load(
    private_jwks: dict[str, Any], key_ops: Any
) -> None:
    message = refused(
        with_ops(private_jwks, key_ops), "key #0", "kibana_1", secrets=secrets_of(private_jwks)
    )
    assert "key_ops" in message


def test_a_signing_key_is_refused_at_load(private_jwks: dict[str, Any]) -> None:
    jwks = copy.deepcopy(private_jwks)
    jwks["keys"][1]["use"] = "sig"
    assert "use 'sig'" in refused(jwks, "key #1", "kibana_2", secrets=secrets_of(private_jwks))


@pytest.mark.parametrize("key_ops", [["unwrapKey"], ["decrypt", "unwrapKey"], ["decrypt"]])
def test_a_key_for_decryption_only_never_encrypts(
    private_jwks: dict[str, Any], key_ops: list[str]
) -> None:
    jwks = with_ops(private_jwks, key_ops)
    manager = JWKManager(jwks)
    assert not manager.can_encrypt("kibana_1") and manager.can_decrypt("kibana_1")
    assert manager.can_encrypt("kibana_2")
    for source in (jwks, manager.get_public_jwks(), manager):  # public halves keep key_ops
        encryptor = RequestEncryptor(source)
        with pytest.raises(InvalidArgumentError, match="'kibana_1' is not for encryption"):
            encryptor.encrypt("kibana_1", {"a": 1})
    for method in ("encrypt", "encrypt_jwe"):
        with pytest.raises(InvalidArgumentError, match="not for encryption"):
            getattr(manager, method)("kibana_1", b"k" * 32)
    # ...but it still opens what was sent to it before its key_ops said so.
    body = RequestEncryptor(private_jwks).encrypt("kibana_1", {"a": 1})
    assert RequestDecryptor(jwks).decrypt(body) == {"a": 1}


@pytest.mark.parametrize("key_ops", [["wrapKey"], ["encrypt", "wrapKey"]])
def test_a_key_for_encryption_only_never_decrypts(
    private_jwks: dict[str, Any], key_ops: list[str]
) -> None:
    jwks = with_ops(private_jwks, key_ops)
    manager = JWKManager(jwks)
    assert manager.can_encrypt("kibana_1") and not manager.can_decrypt("kibana_1")
    body = RequestEncryptor(jwks).encrypt("kibana_1", {"a": 1})
    with pytest.raises(NoKeyFoundError) as caught:
        RequestDecryptor(jwks).decrypt(body)
    # Answered exactly as a kid the set does not hold: no oracle for the key's key_ops.
    with pytest.raises(NoKeyFoundError) as absent:
        RequestDecryptor({"keys": jwks["keys"][1:]}).decrypt(body)
    assert (str(caught.value), caught.value.kid) == (str(absent.value), absent.value.kid)
    assert RequestDecryptor(jwks).decrypt(RequestEncryptor(jwks).encrypt("kibana_2", 1)) == 1


def test_key_ops_round_trip_and_are_copies(private_jwks: dict[str, Any]) -> None:
    manager = JWKManager(with_ops(private_jwks, ["unwrapKey", "wrapKey"]))
    public = manager.get_public_jwk("kibana_1")
    assert public is not None and public["key_ops"] == ["unwrapKey", "wrapKey"]
    assert "key_ops" not in (manager.get_public_jwk("kibana_2") or {})
    public["key_ops"].clear()
    assert manager.get_private_jwks()["keys"][0]["key_ops"] == ["unwrapKey", "wrapKey"]
    assert JWKManager(manager.get_private_jwks()).can_decrypt("kibana_1")


# ---------------------------------------------------------------------------------------------
# A sender keeps no private member


def reachable(root: object) -> list[object]:
    """Every object reachable from `root` through references the GC knows of."""
    seen: dict[int, object] = {}
    todo = [root]
    while todo:
        item = todo.pop()
        if id(item) in seen or isinstance(item, type):
            continue
        seen[id(item)] = item
        todo.extend(gc.get_referents(item))
    return list(seen.values())


def private_material(root: object, jwks: dict[str, Any]) -> list[object]:
    secrets = {key[m] for key in jwks["keys"] for m in PRIVATE_MEMBERS}
    return [
        item
        for item in reachable(root)
        if isinstance(item, rsa.RSAPrivateKey) or (isinstance(item, str) and item in secrets)
    ]


def test_the_object_walk_does_find_private_material(private_jwks: dict[str, Any]) -> None:
    """The walk below can fail: a decryptor's private keys and members are found."""
    found = private_material(RequestDecryptor(copy.deepcopy(private_jwks)), private_jwks)
    assert sum(isinstance(item, rsa.RSAPrivateKey) for item in found) == 2
    assert sum(isinstance(item, str) for item in found) == 2 * len(PRIVATE_MEMBERS)


def test_an_encryptor_given_a_private_set_keeps_only_public_halves(
    private_jwks: dict[str, Any], tmp_path: Path
) -> None:
    path = tmp_path / "private_jwks.json"
    path.write_text(json.dumps(private_jwks))
    path.chmod(0o600)
    sources: list[Any] = [
        copy.deepcopy(private_jwks),
        JWKManager(copy.deepcopy(private_jwks)),
        json.dumps(private_jwks),
    ]
    encryptors = [RequestEncryptor(source) for source in sources]
    encryptors.append(RequestEncryptor.from_file(path))
    del sources
    for encryptor in encryptors:
        assert private_material(encryptor, private_jwks) == []
        assert not any(encryptor.keys.has_private_key(kid) for kid in encryptor.kids())
        for kid in encryptor.kids():
            assert not set(encryptor.keys.get_private_jwk(kid) or {}) & set(PRIVATE_MEMBERS)
        assert RequestDecryptor(private_jwks).decrypt(encryptor.encrypt("kibana_1", 7)) == 7
