"""request.py: RequestEncryptor / RequestDecryptor in both formats, batches, async, factories."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwcrypto.jwk
import pytest

from request_crypto import (
    Format,
    JWKManager,
    JWKMetadata,
    JWKSManager,
    PassphraseCipher,
    RequestDecryptor,
    RequestEncryptor,
    create_request_decryptor,
    create_request_encryptor,
    detect_format,
    generate_passphrase,
    pack_body,
    unpack_body,
)
from request_crypto.errors import (
    BatchError,
    DecryptionError,
    InvalidArgumentError,
    InvalidJWKSError,
    MalformedBodyError,
    MissingKidError,
    NoKeyFoundError,
)
from request_crypto.keys import jwks
from tests.conftest import PYTHON_KIDS

#: One JavaScript-made RSA-OAEP key and one RSA-OAEP-256 key made here.
KIDS = ["kibana_1", PYTHON_KIDS["RSA-OAEP-256"]]
ALG_OF = {"kibana_1": "RSA-OAEP", PYTHON_KIDS["RSA-OAEP-256"]: "RSA-OAEP-256"}
PRIVATE_MEMBERS = ["d", "p", "q", "dp", "dq", "qi"]
PAYLOADS: list[Any] = [
    {"cluster_uuid": "abc", "stack_stats": {"count": 3, "versions": ["8.12.0"]}},
    [1, 2, 3, {"a": None, "b": True, "c": False}],
    "just a string",
    42,
    None,
    {"text": "héllo 🚀", "lone": "\ud800"},
]


def b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def flip_byte(text: str, index: int, *, urlsafe: bool) -> str:
    decode, encode = (
        (b64url_decode, base64.urlsafe_b64encode)
        if urlsafe
        else (base64.b64decode, base64.b64encode)
    )
    raw = bytearray(decode(text))
    raw[index] ^= 1
    encoded = encode(bytes(raw)).decode()
    return encoded.rstrip("=") if urlsafe else encoded


@pytest.fixture(scope="module")
def private_set(private_jwks: dict[str, Any], python_private_jwks: dict[str, Any]) -> Any:
    return {"keys": private_jwks["keys"] + python_private_jwks["keys"]}


@pytest.fixture(scope="module")
def decryptor(private_set: dict[str, Any]) -> RequestDecryptor:
    return RequestDecryptor(private_set)


@pytest.fixture(scope="module")
def encryptors(decryptor: RequestDecryptor) -> dict[Format, RequestEncryptor]:
    return {f: RequestEncryptor(decryptor.get_well_knowns(), format=f) for f in Format}


@pytest.mark.parametrize("payload", PAYLOADS, ids=range(len(PAYLOADS)))
@pytest.mark.parametrize("kid", KIDS)
@pytest.mark.parametrize("body_format", list(Format))
def test_round_trip_str_and_bytes(
    encryptors: dict[Format, RequestEncryptor],
    decryptor: RequestDecryptor,
    body_format: Format,
    kid: str,
    payload: Any,
) -> None:
    body = encryptors[body_format].encrypt(kid, payload)
    assert isinstance(body, str)
    assert detect_format(body) is body_format
    assert decryptor.decrypt(body) == payload
    assert decryptor.decrypt(body.encode("ascii")) == payload


@pytest.mark.parametrize("kid", KIDS)
def test_elastic_body_wraps_a_fresh_passphrase_per_request(
    encryptors: dict[Format, RequestEncryptor], decryptor: RequestDecryptor, kid: str
) -> None:
    passphrases = []
    for _ in range(3):
        parts = unpack_body(encryptors[Format.ELASTIC].encrypt(kid, {"same": 1}))
        header = json.loads(b64url_decode(parts.encrypted_aes_key.split(".")[0]))
        assert list(header.items()) == [
            ("zip", "DEF"),
            ("enc", "A128CBC-HS256"),
            ("alg", ALG_OF[kid]),
            ("kid", kid),
        ]
        passphrase = decryptor.keys.decrypt(parts.encrypted_aes_key).payload
        assert PassphraseCipher(passphrase).decrypt(parts.encrypted_payload) == {"same": 1}
        passphrases.append(passphrase)
    assert all(len(p) == 32 for p in passphrases)
    assert len(set(passphrases)) == 3


@pytest.mark.parametrize("kid", KIDS)
def test_jwe_body_is_one_compact_jwe_with_a256gcm_and_no_zip(
    encryptors: dict[Format, RequestEncryptor], kid: str
) -> None:
    parts = encryptors[Format.JWE].encrypt(kid, {"a": 1}).split(".")
    assert len(parts) == 5
    assert json.loads(b64url_decode(parts[0])) == {"alg": ALG_OF[kid], "enc": "A256GCM", "kid": kid}
    assert len(b64url_decode(parts[2])) == 12  # GCM IV


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, Format.ELASTIC),
        ("elastic", Format.ELASTIC),
        ("jwe", Format.JWE),
        (Format.JWE, Format.JWE),
    ],
)
@pytest.mark.parametrize("factory", [RequestEncryptor, create_request_encryptor])
def test_format_argument(
    public_jwks: dict[str, Any],
    factory: Callable[..., RequestEncryptor],
    given: str | None,
    expected: Format,
) -> None:
    encryptor = factory(public_jwks) if given is None else factory(public_jwks, format=given)
    assert isinstance(encryptor, RequestEncryptor)
    assert encryptor.format is expected
    assert detect_format(encryptor.encrypt("kibana_1", 1)) is expected


@pytest.mark.parametrize("given", ["JWE", "compact", ""])
def test_unknown_format_is_refused(public_jwks: dict[str, Any], given: str) -> None:
    with pytest.raises(InvalidArgumentError, match="use 'elastic' or 'jwe'"):
        RequestEncryptor(public_jwks, format=given)


@pytest.mark.parametrize("body_format", list(Format))
def test_missing_kid_message(
    encryptors: dict[Format, RequestEncryptor], body_format: Format
) -> None:
    with pytest.raises(MissingKidError) as caught:
        encryptors[body_format].encrypt("kibana_3", {"a": 1})
    assert str(caught.value) == "Missing kid (kibana_3)."


@pytest.mark.parametrize("body_format", list(Format))
def test_a_private_set_is_accepted_and_only_its_public_part_used(
    private_jwks: dict[str, Any], decryptor: RequestDecryptor, body_format: Format
) -> None:
    # Private numbers that are not even a key pair: a sender must never look at them.
    broken = copy.deepcopy(private_jwks)
    broken["keys"][0]["d"] = broken["keys"][1]["d"]
    with pytest.raises(InvalidJWKSError):
        JWKManager(broken)
    for jwks_input in (broken, json.dumps(broken), JWKManager(private_jwks)):
        encryptor = RequestEncryptor(jwks_input, format=body_format)
        assert encryptor.kids() == ["kibana_1", "kibana_2"]
        assert decryptor.decrypt(encryptor.encrypt("kibana_1", [1])) == [1]


@pytest.mark.parametrize("body_format", list(Format))
def test_from_file(
    tmp_path: Path, private_set: dict[str, Any], decryptor: RequestDecryptor, body_format: Format
) -> None:
    public_path, private_path = tmp_path / "public.json", tmp_path / "private.json"
    public_path.write_text(json.dumps(decryptor.get_well_knowns()))
    private_path.write_text(json.dumps(private_set))
    private_path.chmod(0o600)
    encryptor = RequestEncryptor.from_file(str(public_path), format=body_format)
    assert encryptor.format is body_format
    body = encryptor.encrypt(KIDS[1], {"from": "file"})
    assert RequestDecryptor.from_file(private_path).decrypt(body) == {"from": "file"}


@pytest.mark.parametrize("kid", KIDS)
@pytest.mark.parametrize("body_format", list(Format))
def test_get_jwk_metadata(
    encryptors: dict[Format, RequestEncryptor],
    decryptor: RequestDecryptor,
    body_format: Format,
    kid: str,
) -> None:
    alg = ALG_OF[kid]
    header = (
        {"zip": "DEF", "enc": "A128CBC-HS256", "alg": alg, "kid": kid}
        if body_format is Format.ELASTIC
        else {"alg": alg, "enc": "A256GCM", "kid": kid}
    )
    expected = {
        "key": {"kid": kid, "kty": "RSA", "use": "enc", "alg": alg, "length": 2048},
        "protected": list(header),
        "header": header,
    }
    metadata = decryptor.get_jwk_metadata(encryptors[body_format].encrypt(kid, {"a": 1}))
    assert isinstance(metadata, JWKMetadata)
    assert (metadata.key, metadata.protected, metadata.header) == (
        expected["key"],
        expected["protected"],
        expected["header"],
    )
    assert json.dumps(metadata.to_dict()) == json.dumps(expected)  # member order too


def test_get_jwk_metadata_authenticates_the_whole_body(
    encryptors: dict[Format, RequestEncryptor], decryptor: RequestDecryptor
) -> None:
    # Unlike the original (which opens K only), an altered payload fails metadata too.
    parts = unpack_body(encryptors[Format.ELASTIC].encrypt("kibana_1", {"a": 1}))
    bad_payload = pack_body(
        parts.encrypted_aes_key, flip_byte(parts.encrypted_payload, -1, urlsafe=False)
    )
    for operation in (decryptor.get_jwk_metadata, decryptor.decrypt):
        with pytest.raises(DecryptionError):
            operation(bad_payload)

    key_parts = parts.encrypted_aes_key.split(".")
    key_parts[1] = flip_byte(key_parts[1], 0, urlsafe=True)
    bad_key = pack_body(".".join(key_parts), parts.encrypted_payload)
    for operation in (decryptor.get_jwk_metadata, decryptor.decrypt):
        with pytest.raises(DecryptionError):
            operation(bad_key)


def test_get_public_component_and_well_knowns(
    decryptor: RequestDecryptor, public_jwks: dict[str, Any], python_private_jwks: dict[str, Any]
) -> None:
    assert decryptor.get_public_component("kibana_1") == public_jwks["keys"][0]
    assert decryptor.get_public_component("kibana_3") is None
    well_knowns = decryptor.get_well_knowns()
    assert [key["kid"] for key in well_knowns["keys"]] == [
        "kibana_1",
        "kibana_2",
        *PYTHON_KIDS.values(),
    ]
    assert all(list(key) == ["kty", "kid", "use", "alg", "e", "n"] for key in well_knowns["keys"])
    assert well_knowns["keys"][:2] == public_jwks["keys"]
    python_public = {m: python_private_jwks["keys"][0][m] for m in well_knowns["keys"][2]}
    assert well_knowns["keys"][2] == python_public


@pytest.fixture(scope="module")
def without_private_key(
    public_jwks: dict[str, Any], python_private_jwks: dict[str, Any]
) -> dict[str, RequestDecryptor]:
    return {
        "public-only-set": RequestDecryptor(public_jwks),
        "kid-not-in-set": create_request_decryptor(python_private_jwks),
    }


@pytest.mark.parametrize("operation", ["decrypt", "get_jwk_metadata"])
@pytest.mark.parametrize("holder", ["public-only-set", "kid-not-in-set"])
@pytest.mark.parametrize("body_format", list(Format))
def test_no_key_found(
    encryptors: dict[Format, RequestEncryptor],
    without_private_key: dict[str, RequestDecryptor],
    body_format: Format,
    holder: str,
    operation: str,
) -> None:
    body = encryptors[body_format].encrypt("kibana_1", {"a": 1})
    with pytest.raises(NoKeyFoundError) as caught:
        getattr(without_private_key[holder], operation)(body)
    assert str(caught.value) == "no key found"


def mixed_bodies(encryptors: dict[Format, RequestEncryptor], count: int) -> list[str]:
    """Bodies of both formats to both kids, payload {"i": index}."""
    return [
        encryptors[list(Format)[i % 2]].encrypt(KIDS[i // 2 % 2], {"i": i}) for i in range(count)
    ]


@pytest.mark.parametrize("workers", [1, 3, None])
def test_decrypt_many_keeps_order(
    encryptors: dict[Format, RequestEncryptor], decryptor: RequestDecryptor, workers: int | None
) -> None:
    bodies = mixed_bodies(encryptors, 8)
    assert decryptor.decrypt_many(iter(bodies), workers=workers) == [{"i": i} for i in range(8)]


@pytest.mark.parametrize("workers", [1, 4])
def test_decrypt_many_failures(
    encryptors: dict[Format, RequestEncryptor],
    decryptor: RequestDecryptor,
    js_bodies: dict[str, Any],
    workers: int,
) -> None:
    good = mixed_bodies(encryptors, 2)
    bodies = [good[0], js_bodies["foreign_body"], good[1], "a.b"]
    expected_types = {1: NoKeyFoundError, 3: MalformedBodyError}
    with pytest.raises(BatchError) as caught:
        decryptor.decrypt_many(bodies, workers=workers)
    error = caught.value
    assert {i: type(e) for i, e in error.failures.items()} == expected_types
    assert [error.results[0], error.results[2]] == [{"i": 0}, {"i": 1}]
    assert all(error.results[i] is error.failures[i] for i in expected_types)

    results = decryptor.decrypt_many(bodies, workers=workers, return_exceptions=True)
    assert [type(r) for r in results] == [dict, NoKeyFoundError, dict, MalformedBodyError]
    assert [results[0], results[2]] == [{"i": 0}, {"i": 1}]


@pytest.mark.parametrize("body_format", list(Format))
def test_encrypt_many_keeps_order(
    encryptors: dict[Format, RequestEncryptor], decryptor: RequestDecryptor, body_format: Format
) -> None:
    items = [(KIDS[i % 2], {"i": i}) for i in range(6)]
    bodies = encryptors[body_format].encrypt_many(items, workers=3)
    assert [decryptor.get_jwk_metadata(b).key["kid"] for b in bodies] == [k for k, _ in items]
    assert decryptor.decrypt_many(bodies) == [p for _, p in items]


def test_encrypt_many_failures(
    encryptors: dict[Format, RequestEncryptor], decryptor: RequestDecryptor
) -> None:
    items = [("kibana_1", 0), ("kibana_3", 1), ("kibana_1", {1, 2})]
    encryptor = encryptors[Format.ELASTIC]
    with pytest.raises(BatchError) as caught:
        encryptor.encrypt_many(items, workers=2)
    failures = caught.value.failures
    assert {i: type(e) for i, e in failures.items()} == {
        1: MissingKidError,
        2: InvalidArgumentError,
    }
    assert str(failures[1]) == "Missing kid (kibana_3)."
    assert decryptor.decrypt(caught.value.results[0]) == 0

    results = encryptor.encrypt_many(items, return_exceptions=True)
    assert decryptor.decrypt(results[0]) == 0
    assert [type(r) for r in results[1:]] == [MissingKidError, InvalidArgumentError]


def test_batches_refuse_zero_workers_and_accept_nothing(
    encryptors: dict[Format, RequestEncryptor], decryptor: RequestDecryptor
) -> None:
    with pytest.raises(InvalidArgumentError):
        decryptor.decrypt_many([], workers=0)
    with pytest.raises(InvalidArgumentError):
        encryptors[Format.JWE].encrypt_many([], workers=0)
    assert decryptor.decrypt_many([]) == []
    assert encryptors[Format.JWE].encrypt_many([]) == []


def test_async_helpers_run_off_the_event_loop_thread(
    monkeypatch: pytest.MonkeyPatch,
    encryptors: dict[Format, RequestEncryptor],
    private_set: dict[str, Any],
) -> None:
    decryptor = RequestDecryptor(JWKManager(private_set))
    threads: list[int] = []
    decrypt = decryptor.decrypt

    def recording_decrypt(body: str | bytes) -> Any:
        threads.append(threading.get_ident())
        return decrypt(body)

    monkeypatch.setattr(decryptor, "decrypt", recording_decrypt)

    async def main() -> list[Any]:
        bodies = await asyncio.gather(
            *(encryptors[f].encrypt_async(kid, {f.value: kid}) for f in Format for kid in KIDS)
        )
        return await asyncio.gather(*(decryptor.decrypt_async(b) for b in bodies))

    assert asyncio.run(main()) == [{f.value: kid} for f in Format for kid in KIDS]
    assert len(threads) == 4
    assert threading.get_ident() not in threads

    with pytest.raises(MissingKidError):
        asyncio.run(encryptors[Format.JWE].encrypt_async("kibana_3", 1))


def test_create_request_decryptor_passes_limits(private_jwks: dict[str, Any]) -> None:
    body = RequestEncryptor(private_jwks).encrypt("kibana_1", {"a": 1})
    decryptor = create_request_decryptor(private_jwks, max_body_size=len(body))
    assert isinstance(decryptor, RequestDecryptor)
    assert decryptor.decrypt(body) == {"a": 1}
    assert (
        create_request_decryptor(private_jwks, max_body_size=len(body) - 1).limits.max_body_size
        == len(body) - 1
    )


def test_repr_and_str_never_show_key_material_passphrases_or_payloads(
    private_jwks: dict[str, Any], js_bodies: dict[str, Any]
) -> None:
    secret_payload = {"secret": "TOP-SECRET-PAYLOAD"}
    passphrase = generate_passphrase()
    manager = JWKManager(private_jwks)
    decryptor = RequestDecryptor(manager)
    body = RequestEncryptor(private_jwks).encrypt("kibana_1", secret_payload)
    batch = decryptor.decrypt_many([body, js_bodies["foreign_body"]], return_exceptions=True)
    shown = [
        manager,
        JWKSManager(private_jwks),
        RequestEncryptor(private_jwks),
        RequestEncryptor(private_jwks, format="jwe"),
        decryptor,
        decryptor.decrypt_request(body),
        decryptor.get_jwk_metadata(body),
        manager.decrypt(manager.encrypt("kibana_1", passphrase)),
        PassphraseCipher(passphrase),
        batch[1],
        BatchError(batch, {1: batch[1]}),
    ]
    texts = [text for obj in shown for text in (repr(obj), str(obj))]
    secrets = [key[m] for key in private_jwks["keys"] for m in PRIVATE_MEMBERS]
    secrets += [passphrase.hex(), base64.b64encode(passphrase).decode(), repr(passphrase)[2:-1]]
    secrets += ["TOP-SECRET-PAYLOAD"]
    leaks = [(text, secret) for text in texts for secret in secrets if secret[:12] in text]
    assert leaks == []
    assert "kibana_1" in repr(manager)
    assert "kibana_1" in repr(decryptor)


def test_keys_are_parsed_once_not_per_request(
    monkeypatch: pytest.MonkeyPatch, private_set: dict[str, Any]
) -> None:
    decryptor = RequestDecryptor(private_set)
    encryptors = {f: RequestEncryptor(decryptor.get_well_knowns(), format=f) for f in Format}
    calls: Counter[str] = Counter()

    def count(owner: Any, name: str) -> None:
        original = getattr(owner, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            calls[f"{owner.__name__}.{name}"] += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, counted)

    count(jwks._Key, "__init__")
    count(jwks, "_cryptography_keys")
    for name in ("__init__", "import_key", "from_json", "get_op_key"):
        count(jwcrypto.jwk.JWK, name)

    for encryptor in encryptors.values():
        for kid in KIDS:
            body = encryptor.encrypt(kid, {"n": 1})
            assert decryptor.decrypt(body) == {"n": 1}
            assert decryptor.get_jwk_metadata(body).key["kid"] == kid
        assert decryptor.decrypt_many([encryptor.encrypt(KIDS[0], 1)] * 2, workers=2) == [1, 1]
    assert calls == Counter()

    # The counters do see parsing: building a manager parses each of its keys.
    JWKManager(decryptor.get_well_knowns())
    assert calls["_Key.__init__"] == len(private_set["keys"])
    assert calls["request_crypto.keys.jwks._cryptography_keys"] == len(private_set["keys"])
