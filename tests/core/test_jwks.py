"""jwks.py: JWKManager / JWKSManager, the wrapped-key JWE, key-set validation."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwcrypto import jwe as jwcrypto_jwe
from jwcrypto import jwk as jwcrypto_jwk

from request_crypto import (
    JWKDecryptResult,
    JWKManager,
    JWKMetadata,
    JWKSManager,
    create_jwk_manager,
)
from request_crypto.errors import (
    DecryptionError,
    InvalidArgumentError,
    InvalidJWKSError,
    MissingKidError,
    NoKeyFoundError,
    UnsupportedAlgorithmError,
)
from tests.conftest import PYTHON_KIDS

PUBLIC_MEMBERS = ["kty", "kid", "use", "alg", "e", "n"]
PRIVATE_MEMBERS = ["d", "p", "q", "dp", "dq", "qi"]
JS_KIDS = ["kibana_1", "kibana_2"]
ALGS = list(PYTHON_KIDS)


def protected_header(token: str) -> bytes:
    part = token.split(".")[0]
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


@pytest.fixture(scope="module")
def js_manager(private_jwks: dict[str, Any]) -> JWKManager:
    """The JavaScript-made private set, for tests that do not change it."""
    return JWKManager(private_jwks)


@pytest.fixture(scope="module")
def both_sets(private_jwks: dict[str, Any], python_private_jwks: dict[str, Any]) -> JWKManager:
    """The JavaScript-made RSA-OAEP keys and this library's keys of both algorithms."""
    return JWKManager({"keys": private_jwks["keys"] + python_private_jwks["keys"]})


@pytest.fixture(scope="module")
def generated() -> tuple[JWKManager, dict[str, dict[str, str]]]:
    """A manager that made one key per algorithm, and what add_key returned for each."""
    manager = JWKManager()
    return manager, {alg: manager.add_key(f"new-{alg}", alg=alg) for alg in ALGS}


@pytest.mark.parametrize("given", ["mapping", "str", "bytes", "manager", "factory"])
def test_a_set_loads_from_every_accepted_input(private_jwks: dict[str, Any], given: str) -> None:
    text = json.dumps(private_jwks)
    make: dict[str, Callable[[], JWKSManager]] = {
        "mapping": lambda: JWKManager(private_jwks),
        "str": lambda: JWKManager(text),
        "bytes": lambda: JWKManager(text.encode()),
        "manager": lambda: JWKManager(JWKSManager(private_jwks)),
        "factory": lambda: create_jwk_manager(private_jwks),
    }
    manager = make[given]()
    assert isinstance(manager, JWKManager)
    assert manager.kids() == JS_KIDS
    assert manager.get_private_jwks() == private_jwks


def test_empty_managers() -> None:
    for manager in (JWKManager(), JWKSManager(), create_jwk_manager()):
        assert manager.kids() == []
        assert manager.get_public_jwks() == {"keys": []}


def test_jwk_manager_extends_jwks_manager(public_jwks: dict[str, Any]) -> None:
    assert issubclass(JWKManager, JWKSManager)
    assert JWKSManager(public_jwks).get_public_jwks() == public_jwks


def test_public_set_holds_exactly_the_public_members(
    js_manager: JWKManager, public_jwks: dict[str, Any]
) -> None:
    # The JavaScript library derived public_jwks from private_jwks: the same, member order too.
    exported = js_manager.get_public_jwks()
    assert [list(key) for key in exported["keys"]] == [PUBLIC_MEMBERS] * 2
    assert json.dumps(exported) == json.dumps(public_jwks)


@pytest.mark.parametrize("kid", JS_KIDS)
def test_get_jwk_by_kid(
    js_manager: JWKManager, private_jwks: dict[str, Any], public_jwks: dict[str, Any], kid: str
) -> None:
    index = JS_KIDS.index(kid)
    assert js_manager.get_public_jwk(kid) == public_jwks["keys"][index]
    assert js_manager.get_private_jwk(kid) == private_jwks["keys"][index]


@pytest.mark.parametrize("method", ["get_public_jwk", "get_private_jwk"])
def test_get_jwk_of_an_absent_kid_is_none(js_manager: JWKManager, method: str) -> None:
    assert getattr(js_manager, method)("kibana_3") is None


def test_get_private_jwk_of_a_public_key_has_no_private_members(
    public_jwks: dict[str, Any],
) -> None:
    private = JWKManager(public_jwks).get_private_jwk("kibana_1")
    assert private is not None
    assert list(private) == PUBLIC_MEMBERS


@pytest.mark.parametrize("alg", ALGS)
def test_add_key_makes_a_2048_bit_key_and_returns_its_public_jwk(
    generated: tuple[JWKManager, dict[str, dict[str, str]]], alg: str
) -> None:
    manager, returned = generated
    kid = f"new-{alg}"
    public = returned[alg]
    assert list(public) == PUBLIC_MEMBERS
    assert (public["kty"], public["kid"], public["use"], public["alg"]) == ("RSA", kid, "enc", alg)
    assert public == manager.get_public_jwk(kid)
    private = manager.get_private_jwk(kid)
    assert private is not None
    assert list(private) == PUBLIC_MEMBERS + PRIVATE_MEMBERS
    assert manager.key_metadata(kid) == {
        "kid": kid,
        "kty": "RSA",
        "use": "enc",
        "alg": alg,
        "length": 2048,
    }
    assert manager.decrypt(manager.encrypt(kid, b"x" * 32)).payload == b"x" * 32


def test_add_key_defaults_to_rsa_oaep(
    generated: tuple[JWKManager, dict[str, dict[str, str]]],
) -> None:
    manager, returned = generated
    assert returned["RSA-OAEP"]["alg"] == "RSA-OAEP"
    assert manager.kids() == [f"new-{alg}" for alg in ALGS]
    assert len({key["n"] for key in returned.values()}) == len(ALGS)


@pytest.mark.parametrize(
    "kwargs",
    [{"size": 1024}, {"size": 2047}, {"size": 0}, {"alg": "RSA1_5"}, {"alg": "dir"}],
    ids=["1024", "2047", "0", "RSA1_5", "dir"],
)
def test_add_key_refuses_weak_sizes_and_other_algorithms(
    private_jwks: dict[str, Any], kwargs: dict[str, Any]
) -> None:
    manager = JWKManager(private_jwks)
    with pytest.raises(InvalidArgumentError):
        manager.add_key("weak", **kwargs)
    assert manager.kids() == JS_KIDS


@pytest.mark.parametrize("use", ["sig", "desc", "", None])
def test_add_key_refuses_a_use_other_than_enc_before_generating_a_key(
    private_jwks: dict[str, Any], use: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`use` is there for parity with the original's addKey(kid, modulus, use); only enc works."""

    def no_generation(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("an RSA key was generated for a refused use")

    monkeypatch.setattr(rsa, "generate_private_key", no_generation)
    manager = JWKSManager(private_jwks)
    with pytest.raises(InvalidArgumentError, match="use must be 'enc': request_crypto keys only"):
        manager.add_key("new", use=use)
    assert manager.kids() == JS_KIDS


def test_add_key_accepts_use_enc() -> None:
    manager = JWKSManager()
    assert manager.add_key("new", use="enc")["use"] == "enc"
    metadata = manager.key_metadata("new")
    assert metadata is not None
    assert (metadata["use"], metadata["alg"], metadata["length"]) == ("enc", "RSA-OAEP", 2048)


@pytest.mark.parametrize("kid", ["", None])
def test_add_key_refuses_an_empty_kid(kid: Any) -> None:
    with pytest.raises(InvalidArgumentError):
        JWKManager().add_key(kid)


def test_add_key_refuses_a_kid_already_present(private_jwks: dict[str, Any]) -> None:
    manager = JWKManager(private_jwks)
    with pytest.raises(InvalidArgumentError, match="already in the key set"):
        manager.add_key("kibana_1")
    assert manager.get_private_jwks() == private_jwks


@pytest.mark.parametrize("part", ["public", "private"])
def test_insert_key(private_jwks: dict[str, Any], public_jwks: dict[str, Any], part: str) -> None:
    jwk = (private_jwks if part == "private" else public_jwks)["keys"][1]
    manager = JWKManager({"keys": private_jwks["keys"][:1]})
    manager.insert_key(jwk)
    assert manager.kids() == JS_KIDS
    assert manager.get_private_jwk("kibana_2") == jwk
    assert manager.has_private_key("kibana_2") is (part == "private")


def test_insert_key_refuses_a_duplicate_kid_and_an_invalid_key(
    private_jwks: dict[str, Any],
) -> None:
    manager = JWKManager(private_jwks)
    with pytest.raises(InvalidArgumentError, match="already in the key set"):
        manager.insert_key(private_jwks["keys"][0])
    with pytest.raises(InvalidJWKSError):
        manager.insert_key({"kty": "RSA", "kid": "broken"})
    assert manager.kids() == JS_KIDS


def test_remove_key(private_jwks: dict[str, Any]) -> None:
    manager = JWKManager(private_jwks)
    shared = JWKManager(manager)  # shares the parsed keys; updates must not leak across
    manager.remove_key("kibana_1")
    assert manager.kids() == ["kibana_2"]
    assert manager.get_public_jwk("kibana_1") is None
    assert shared.kids() == JS_KIDS
    with pytest.raises(MissingKidError, match=r"^Missing kid \(kibana_1\)\.$"):
        manager.remove_key("kibana_1")


def test_kids_keep_set_order_newest_last(private_jwks: dict[str, Any]) -> None:
    reversed_set = {"keys": private_jwks["keys"][::-1]}
    manager = JWKManager(reversed_set)
    assert manager.kids() == JS_KIDS[::-1]
    manager.remove_key("kibana_2")
    manager.insert_key(private_jwks["keys"][1])
    assert manager.kids() == JS_KIDS


@pytest.mark.parametrize("kid", ["kibana_1", *PYTHON_KIDS.values()])
def test_encrypt_writes_the_wrapped_key_header_bytes_in_order(
    both_sets: JWKManager, kid: str
) -> None:
    token = both_sets.encrypt(kid, b"\x00" * 32)
    alg = both_sets.key_metadata(kid)["alg"]  # type: ignore[index]
    assert len(token.split(".")) == 5
    assert protected_header(token) == (
        f'{{"zip":"DEF","enc":"A128CBC-HS256","alg":"{alg}","kid":"{kid}"}}'.encode()
    )


@pytest.mark.parametrize("kid", ["kibana_1", *PYTHON_KIDS.values()])
def test_decrypt_returns_payload_and_metadata(both_sets: JWKManager, kid: str) -> None:
    data = bytes(range(32))
    result = both_sets.decrypt(both_sets.encrypt(kid, data))
    alg = "RSA-OAEP-256" if kid == PYTHON_KIDS["RSA-OAEP-256"] else "RSA-OAEP"
    header = {"zip": "DEF", "enc": "A128CBC-HS256", "alg": alg, "kid": kid}
    key = {"kid": kid, "kty": "RSA", "use": "enc", "alg": alg, "length": 2048}
    assert isinstance(result, JWKDecryptResult)
    assert result.payload == data
    assert result.key == key
    assert result.header == header
    assert result.protected == ["zip", "enc", "alg", "kid"]
    assert result.metadata == JWKMetadata(key, ["zip", "enc", "alg", "kid"], header)


@pytest.mark.parametrize("kid", ["kibana_1", *PYTHON_KIDS.values()])
def test_the_wrapped_key_is_a_standard_jwe(both_sets: JWKManager, kid: str) -> None:
    # jwcrypto opens what encrypt makes, and decrypt opens what jwcrypto makes.
    private = jwcrypto_jwk.JWK(**both_sets.get_private_jwk(kid))
    ours = jwcrypto_jwe.JWE()
    ours.deserialize(both_sets.encrypt(kid, b"from python"), key=private)
    assert ours.payload == b"from python"

    header = {"zip": "DEF", "enc": "A128CBC-HS256", "alg": private["alg"], "kid": kid}
    theirs = jwcrypto_jwe.JWE(b"from jwcrypto", protected=json.dumps(header))
    theirs.add_recipient(jwcrypto_jwk.JWK(**both_sets.get_public_jwk(kid)))
    assert both_sets.decrypt(theirs.serialize(compact=True)).payload == b"from jwcrypto"


def test_decrypt_refuses_an_alg_other_than_the_keys(both_sets: JWKManager) -> None:
    kid = PYTHON_KIDS["RSA-OAEP-256"]
    header = {"zip": "DEF", "enc": "A128CBC-HS256", "alg": "RSA-OAEP", "kid": kid}
    token = jwcrypto_jwe.JWE(b"x" * 32, protected=json.dumps(header))
    token.add_recipient(jwcrypto_jwk.JWK(**{**both_sets.get_public_jwk(kid), "alg": "RSA-OAEP"}))
    with pytest.raises(UnsupportedAlgorithmError, match="declared for RSA-OAEP-256"):
        both_sets.decrypt(token.serialize(compact=True))


def test_encrypt_to_a_missing_kid(js_manager: JWKManager) -> None:
    with pytest.raises(MissingKidError) as caught:
        js_manager.encrypt("kibana_3", b"x")
    assert str(caught.value) == "Missing kid (kibana_3)."


@pytest.mark.parametrize("holder", ["public-only", "other-keys"])
def test_decrypt_without_the_private_key(
    js_manager: JWKManager,
    python_private_jwks: dict[str, Any],
    public_jwks: dict[str, Any],
    holder: str,
) -> None:
    token = js_manager.encrypt("kibana_1", b"x" * 32)
    manager = JWKManager(public_jwks if holder == "public-only" else python_private_jwks)
    with pytest.raises(NoKeyFoundError) as caught:
        manager.decrypt(token)
    assert str(caught.value) == "no key found"


def flip_first_byte(part: str) -> str:
    raw = bytearray(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    raw[0] ^= 1
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.mark.parametrize("part", [1, 2, 3, 4], ids=["key", "iv", "ciphertext", "tag"])
def test_decrypt_of_an_altered_token_fails(js_manager: JWKManager, part: int) -> None:
    parts = js_manager.encrypt("kibana_1", b"x" * 32).split(".")
    parts[part] = flip_first_byte(parts[part])
    with pytest.raises(DecryptionError):
        js_manager.decrypt(".".join(parts))


def _with(index: int, **members: Any) -> Callable[[dict[str, Any]], Any]:
    def edit(jwks: dict[str, Any]) -> Any:
        jwks["keys"][index].update(members)
        return jwks

    return edit


def _without(member: str) -> Callable[[dict[str, Any]], Any]:
    def edit(jwks: dict[str, Any]) -> Any:
        del jwks["keys"][0][member]
        return jwks

    return edit


def _small_key(jwks: dict[str, Any]) -> Any:
    small = jwcrypto_jwk.JWK.from_pyca(rsa.generate_private_key(65537, 1024))
    return {"keys": [{**small.export(as_dict=True), "kid": "small", "alg": "RSA-OAEP"}]}


def _swap_d(jwks: dict[str, Any]) -> Any:
    jwks["keys"][0]["d"] = jwks["keys"][1]["d"]
    return jwks


INVALID_SETS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "not-json": lambda _: "{not json",
    "not-an-object": lambda _: [],
    "no-keys-list": lambda _: {"keys": "none"},
    "key-not-an-object": lambda _: {"keys": ["key"]},
    "no-kid": _without("kid"),
    "ec-key": _with(0, kty="EC"),
    "rsa1_5": _with(0, alg="RSA1_5"),
    "signing-key": _with(0, use="sig"),
    "no-modulus": _without("n"),
    "some-private-members": _without("qi"),
    "numbers-not-a-pair": _swap_d,
    "duplicate-kid": _with(1, kid="kibana_1"),
    "1024-bit": _small_key,
}


@pytest.mark.parametrize("case", INVALID_SETS)
def test_invalid_sets_are_refused_without_showing_key_material(
    private_jwks: dict[str, Any], case: str
) -> None:
    jwks = INVALID_SETS[case](copy.deepcopy(private_jwks))
    with pytest.raises(InvalidJWKSError) as caught:
        JWKManager(jwks)
    secrets = [key[m][:12] for key in private_jwks["keys"] for m in PRIVATE_MEMBERS]
    message = str(caught.value)
    assert message
    assert not [secret for secret in secrets if secret in message]


@pytest.mark.parametrize("method", ["encrypt", "encrypt_jwe"])
@pytest.mark.parametrize("data", ["a str", 42, None])
def test_encrypt_refuses_data_that_is_not_bytes(
    js_manager: JWKManager, method: str, data: Any
) -> None:
    with pytest.raises(InvalidArgumentError, match="must be bytes"):
        getattr(js_manager, method)("kibana_1", data)


def test_a_kid_with_a_lone_surrogate_is_written_as_json_stringify_would(
    private_jwks: dict[str, Any],
) -> None:
    manager = JWKManager(private_jwks)
    odd = dict(private_jwks["keys"][0], kid="kibana_\ud800")
    manager.insert_key(odd)
    token = manager.encrypt("kibana_\ud800", b"k" * 32)
    assert protected_header(token).endswith(b'"kid":"kibana_\\ud800"}')
    assert manager.decrypt(token).payload == b"k" * 32
