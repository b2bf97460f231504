"""Issue 5: secret hygiene: no repr, str or exception carries key material or plaintext;
one decryptor shared by threads.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from typing import Any

import pytest

from request_crypto import (
    DecryptedRequest,
    JWKDecryptResult,
    JWKManager,
    JWKSManager,
    PassphraseCipher,
    RequestDecryptor,
    RequestEncryptor,
)
from request_crypto.errors import (
    DecryptionError,
    RequestCryptoError,
)
from request_crypto.formats.elastic import unwrap_passphrase
from tests.core.hostile import (
    PRIVATE_MEMBERS,
    Kit,
    b64url_decode,
    craft,
    elastic,
    flip,
    header,
    parts_of,
    replace,
    token,
    wrapped_key,
)

# -- secret hygiene ------------------------------------------------------------------------


def _secret_strings(private_jwks: dict[str, Any]) -> list[str]:
    """Every private parameter as base64url, decimal and hex (a prefix is enough to leak)."""
    found: list[str] = []
    for jwk in private_jwks["keys"]:
        if "d" not in jwk:
            continue
        for member in PRIVATE_MEMBERS:
            value = jwk[member]
            number = int.from_bytes(b64url_decode(value), "big")
            found += [value[:24], str(number)[:24], f"{number:x}"[:24], f"{number:X}"[:24]]
    return found


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        item = todo.pop()
        if item is None or any(item is s for s in seen):
            continue
        seen.append(item)
        todo += [item.__cause__, item.__context__]
    return seen


def _exception_texts(exc: BaseException) -> str:
    texts = []
    for item in _chain(exc):
        texts += [str(item), repr(item), *(repr(a) for a in item.args)]
        for attribute in ("doc", "object", "msg"):
            if hasattr(item, attribute):
                texts.append(repr(getattr(item, attribute)))
        texts += [repr(v) for v in vars(item).values() if not isinstance(v, list)]
    return "\n".join(texts)


def test_repr_and_str_of_public_objects_hide_key_material(
    kit: Kit, private_jwks: dict[str, Any]
) -> None:
    secrets = _secret_strings(private_jwks) + _secret_strings(kit.keys.get_private_jwks())
    passphrase = os.urandom(32)
    word = "correct horse battery staple"
    marker = "TOPSECRET-" + os.urandom(8).hex()
    payload = {"secret": marker}
    jwe_body = kit.jwe.encrypt("kibana_1", payload)
    elastic_body = kit.elastic.encrypt("kibana_2", payload)
    objects: list[Any] = [
        kit.keys,
        JWKManager(private_jwks),
        JWKSManager(private_jwks),
        kit.decryptor,
        RequestDecryptor(private_jwks),
        RequestEncryptor(private_jwks),  # given a private set: it keeps only the public half
        kit.elastic,
        kit.jwe,
        PassphraseCipher(passphrase),
        PassphraseCipher(word),
        kit.keys.decrypt(jwe_body),
        kit.decryptor.decrypt_request(jwe_body),
        kit.decryptor.decrypt_request(elastic_body),
        kit.decryptor.get_jwk_metadata(elastic_body),
        unwrap_passphrase(kit.keys, parts_of(elastic_body)[0], max_token_size=8192),
    ]
    assert isinstance(objects[10], JWKDecryptResult)
    assert isinstance(objects[11], DecryptedRequest)
    forbidden = [*secrets, repr(passphrase)[2:30], passphrase.hex()[:24], word, marker]
    for thing in objects:
        for text in (repr(thing), str(thing), f"{thing}"):
            leaked = [s for s in forbidden if s in text]
            assert not leaked, f"{type(thing).__name__} shows {leaked[0][:12]}..."


def test_exceptions_carry_no_plaintext_or_key_material(
    kit: Kit, private_jwks: dict[str, Any]
) -> None:
    marker = "TOPSECRET-" + os.urandom(8).hex()
    secret = marker.encode()
    passphrase = os.urandom(32)
    key_secrets = _secret_strings(private_jwks)
    # (attempt, whether it must raise with nothing chained: the parser's and the primitives'
    # exceptions hold the plaintext, or tell which step failed)
    failing: list[tuple[Callable[[], Any], bool]] = [
        (lambda: kit.decryptor.decrypt(token(kit, header(), b"\xff" + secret)), True),
        (lambda: kit.decryptor.decrypt(token(kit, header(), secret)), True),
        (lambda: kit.decryptor.decrypt(token(kit, header(), b'{"a":"' + secret)), True),
        (lambda: kit.decryptor.decrypt(token(kit, header(), b"[" * 5000 + secret)), True),
        (lambda: kit.decryptor.decrypt(token(kit, header(), b"[" + secret + b"\x00]")), True),
        (
            lambda: kit.decryptor.decrypt(
                token(kit, header(), json.dumps(marker).encode("utf-16"))
            ),
            True,
        ),
        (lambda: kit.decryptor.decrypt(elastic(kit, b"\xc3" + secret)), True),
        (lambda: kit.decryptor.decrypt(elastic(kit, secret)), True),
        (lambda: kit.decryptor.decrypt(token(kit, header(zip="DEF"), secret)), True),
        (
            lambda: kit.decryptor.decrypt(
                replace(craft(kit, header(), secret), 4, flip(craft(kit, header(), secret)[4]))
            ),
            True,
        ),
        (
            lambda: kit.decryptor.decrypt(elastic(kit, key=wrapped_key(kit, passphrase + b"!"))),
            True,
        ),
        (
            lambda: PassphraseCipher(passphrase).decrypt(
                PassphraseCipher(os.urandom(32)).encrypt(marker)
            ),
            True,
        ),
        (
            lambda: PassphraseCipher(passphrase).decrypt(
                PassphraseCipher(passphrase).encrypt_bytes(b"\xff" + secret)
            ),
            True,
        ),
        (
            lambda: PassphraseCipher(passphrase).decrypt(
                PassphraseCipher(passphrase).encrypt(marker), aad="x"
            ),
            True,
        ),
        (lambda: kit.elastic.encrypt("kibana_1", {"secret": marker, "bad": {1, 2}}), False),
        (lambda: kit.jwe.encrypt("kibana_1", {"secret": marker, "bad": object()}), False),
        (lambda: kit.decryptor.decrypt_many([kit.jwe.encrypt("kibana_1", marker), "x.y"]), False),
        (
            lambda: JWKManager(
                {"keys": [{**private_jwks["keys"][0], "p": private_jwks["keys"][1]["p"]}]}
            ),
            False,
        ),
        (
            lambda: JWKManager(
                {"keys": [{**private_jwks["keys"][0], "d": private_jwks["keys"][1]["d"]}]}
            ),
            False,
        ),
        (lambda: JWKManager({"keys": [{**private_jwks["keys"][0], "qi": 5}]}), False),
        (
            lambda: JWKManager(
                {"keys": [{k: v for k, v in private_jwks["keys"][0].items() if k != "dq"}]}
            ),
            False,
        ),
    ]
    forbidden = [marker, repr(passphrase)[2:30], passphrase.hex()[:24], *key_secrets]
    for index, (attempt, nothing_chained) in enumerate(failing):
        with pytest.raises(RequestCryptoError) as caught:
            attempt()
        texts = _exception_texts(caught.value)
        leaked = [s for s in forbidden if s in texts]
        assert not leaked, (
            f"attempt #{index} ({type(caught.value).__name__}) leaks {leaked[0][:12]}"
        )
        if nothing_chained:
            assert caught.value.__cause__ is None, f"attempt #{index}"
            assert caught.value.__context__ is None, f"attempt #{index}"


# -- thread safety -------------------------------------------------------------------------


def test_one_decryptor_shared_by_8_threads(kit: Kit) -> None:
    """1,000 bodies (both formats, three kids, some tampered) through one shared decryptor."""
    kids = ["kibana_1", "kibana_2", "oaep256"]
    jobs: list[tuple[str, Any]] = []
    for i in range(1000):
        kid = kids[i % 3]
        payload = {"i": i, "nonce": os.urandom(6).hex(), "kid": kid}
        if i % 10 < 3:  # 300 elastic (PBKDF2 each, both sides): the expensive ones
            body = kit.elastic.encrypt(kid, payload)
        elif i % 10 < 9:
            body = kit.jwe.encrypt(kid, payload)
        else:  # 100 tampered jwe bodies: each must fail alone, with the one error
            parts = kit.jwe.encrypt(kid, payload).split(".")
            body = replace(parts, 4, flip(parts[4]))
            payload = DecryptionError
        jobs.append((body, payload))

    results: list[Any] = [None] * len(jobs)
    barrier = threading.Barrier(8)

    def work(offset: int) -> None:
        barrier.wait()
        for index in range(offset, len(jobs), 8):
            body, _ = jobs[index]
            try:
                results[index] = (
                    kit.decryptor.decrypt(body),
                    kit.decryptor.get_jwk_metadata(body).key["kid"] if index % 7 == 0 else None,
                )
            except RequestCryptoError as exc:
                results[index] = (type(exc), None)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(thread.is_alive() for thread in threads)
    for index, (_, expected) in enumerate(jobs):
        value, kid = results[index]
        assert value == expected, f"body #{index}"
        if kid is not None:
            assert kid == expected["kid"]
