"""Signing keys in a PKCS#11 token (SoftHSM): the library side of keys.pkcs11_signing."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from request_crypto import JWKManager, RequestDecryptor, RequestEncryptor
from request_crypto.errors import KeySourceError, SignatureError, UnknownSignerError
from request_crypto.keys.pkcs11 import PKCS11KeySource
from request_crypto.keys.pkcs11_signing import PKCS11SigningKey, generate_signing_key
from request_crypto.keys.signing import SigningKey, generate_signing_jwk
from request_crypto.limits import Limits
from request_crypto.nested import Signer, Verifier

TOKEN = "rc-sign"


@pytest.fixture(scope="module")
def signers(softhsm: Any) -> dict[str, PKCS11SigningKey]:
    keys = {}
    for alg in ("ES256", "RS256", "PS256"):
        label = f"core-{alg.lower()}"
        generate_signing_key(softhsm.uri(label, token=TOKEN), alg)
        keys[alg] = PKCS11SigningKey(softhsm.uri(label, token=TOKEN, alg=alg))
    return keys


@pytest.mark.parametrize("alg", ["ES256", "RS256", "PS256"])
def test_token_signatures_verify_with_the_exported_public_jwk_and_not_another(
    signers: dict[str, PKCS11SigningKey], alg: str
) -> None:
    key = signers[alg]
    token = Signer(key).sign({"n": 1})
    exported = SigningKey(key.public_jwk)
    assert not exported.has_private and exported.alg == alg
    assert Verifier({"keys": [key.public_jwk]}).verify(token, Limits())[1].kid == key.kid
    impostor = generate_signing_jwk(key.kid, alg)
    with pytest.raises(SignatureError, match="does not verify"):
        Verifier({"keys": [impostor]}).verify(token, Limits())
    with pytest.raises(UnknownSignerError):
        Verifier({"keys": [generate_signing_jwk("someone-else", alg)]}).verify(token, Limits())


def test_the_alg_is_the_keys_never_a_guess(softhsm: Any, signers: dict[str, Any]) -> None:
    with pytest.raises(KeySourceError, match="alg=RS256 or alg=PS256"):
        PKCS11SigningKey(softhsm.uri("core-rs256", token=TOKEN))
    with pytest.raises(KeySourceError, match="so alg is ES256"):
        PKCS11SigningKey(softhsm.uri("core-es256", token=TOKEN, alg="PS256"))
    with pytest.raises(KeySourceError, match="alg 'HS256' refused"):
        PKCS11SigningKey(softhsm.uri("core-es256", token=TOKEN, alg="HS256"))
    with pytest.raises(KeySourceError, match="name the signing key"):
        PKCS11SigningKey(softhsm.uri(None, token=TOKEN))
    # An RS256 token key signing under PS256 makes tokens its RS256 public half refuses.
    wrong = PKCS11SigningKey(softhsm.uri("core-rs256", token=TOKEN, alg="PS256"))
    with pytest.raises(SignatureError):
        Verifier({"keys": [signers["RS256"].public_jwk]}).verify(
            Signer(wrong).sign({"n": 1}), Limits()
        )


def test_a_decryption_key_is_not_a_signing_key_and_the_other_way_round(softhsm: Any) -> None:
    with pytest.raises(KeySourceError, match="no private signing keys match"):
        PKCS11SigningKey(softhsm.uri("recv-1", alg="RS256"))  # the session's decryption key
    with pytest.raises(KeySourceError, match="no RSA private key"):
        PKCS11KeySource(softhsm.uri("core-rs256", token=TOKEN))


def test_threads_signing_and_decrypting_on_one_module_do_not_crash(
    softhsm: Any, signers: dict[str, PKCS11SigningKey]
) -> None:
    """Signing and decrypting threads inside one module at once (OS locking) do not crash it."""
    source = PKCS11KeySource(softhsm.uri("recv-1"))
    public = RequestDecryptor(source).get_well_knowns()
    manager = JWKManager()
    manager.add_key("rx")
    encryptors = [
        RequestEncryptor(manager.get_public_jwks(), sign_with=signers[alg])
        for alg in ("ES256", "RS256", "PS256")
    ]
    verify = {"keys": [key.public_jwk for key in signers.values()]}
    receiver = RequestDecryptor(manager, verify_with=verify)
    hsm_bodies = [RequestEncryptor(public, format="jwe").encrypt("recv-1", i) for i in range(60)]
    errors: list[BaseException] = []
    results: dict[int, Any] = {}

    def work(n: int) -> None:
        try:
            for i in range(n, 120, 12):
                body = encryptors[i % 3].encrypt("rx", {"i": i})
                results[i] = receiver.decrypt_request(body).payload["i"]
                assert RequestDecryptor(source).decrypt(hsm_bodies[i % 60]) == i % 60
        except BaseException as exc:  # reported below, on the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert results == {i: i for i in range(120)}


def test_a_signature_is_made_in_the_session_the_call_took(softhsm: Any) -> None:
    """With one session of the pool busy on another thread, signing takes another session and
    signs in it (python-pkcs11 signs in the session a handle came from: it is looked up there)."""
    uri = softhsm.uri("pool-sign", token=TOKEN)
    generate_signing_key(uri, "ES256")
    key = PKCS11SigningKey(uri)
    token = key._token
    busy, leave = threading.Event(), threading.Event()
    held: list[int] = []

    def hold(session: Any) -> None:
        held.append(session.handle)
        busy.set()
        leave.wait(30)

    holder = threading.Thread(target=token.call, args=(hold,))
    holder.start()
    try:
        assert busy.wait(30)
        signature = key.sign(b"data")
    finally:
        leave.set()
        holder.join(30)
    assert key.verify(b"data", signature)
    assert len(key._handles) == 2 and held[0] in key._handles
