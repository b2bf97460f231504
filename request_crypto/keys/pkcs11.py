"""A key source whose RSA private keys stay in a PKCS#11 token (an HSM, SoftHSM2).

Opened from an RFC 7512 URI::

    pkcs11:token=telemetry;object=recv-1?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/rc/pin

Path attributes: `token` (label) and/or `serial` pick the token (never a slot number: SoftHSM
renumbers slots); `object` (label) and/or `id` (percent-encoded bytes) pick the key, and
without them every RSA private key of the token is used. Query attributes: `module-path`
(required), `pin-source` (`file:PATH` or a path; an unreadable or empty file is an error,
never an empty PIN) or `pin-value` (works, with a warning: the PIN is then in a command line
or a config file), and two of ours: `kid` (one key only) and `alg` (`RSA-OAEP`, the default,
or `RSA-OAEP-256`).

The RSA-OAEP decrypt runs in the token (CKM_RSA_PKCS_OAEP); nothing falls back to raw RSA
plus unpadding here, which would make the process a padding oracle. A key whose `alg` the
token cannot do (SoftHSM 2.6.1 has OAEP with SHA-1 only) is refused when the source opens,
with one error naming the token.

python-pkcs11 initialises a module without OS locking and releases the GIL during calls, so
two threads in one module at once can crash the process: every call into a module holds that
module's lock, and each token has one logged-in session per process, shared by the sources
opened on it.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, unquote_to_bytes

import pkcs11
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pkcs11 import MGF, Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11

from .._b64 import b64url_decode
from ..errors import KeySourceError, KeySourceUnavailableError, PinInURIWarning
from .external import ExternalKey, ExternalKeySource, check_alg, choose_kid, parse_attributes
from .jwks import JWKManager

__all__ = [
    "PKCS11URI",
    "PKCS11KeySource",
    "PinInURIWarning",
    "generate_key",
    "import_key",
    "token_for",
]

_T = TypeVar("_T")

_PATH_ATTRIBUTES = frozenset({"token", "serial", "object", "id", "type", "manufacturer", "model"})
_QUERY_ATTRIBUTES = frozenset({"module-path", "pin-source", "pin-value", "kid", "alg"})
_OAEP = {
    "RSA-OAEP": (Mechanism.SHA_1, MGF.SHA1, hashes.SHA1),
    "RSA-OAEP-256": (Mechanism.SHA256, MGF.SHA256, hashes.SHA256),
}
#: What a token answers for a ciphertext its key does not open (SoftHSM: CKR_GENERAL_ERROR).
_REFUSED = (
    p11.EncryptedDataInvalid,
    p11.EncryptedDataLenRange,
    p11.DataInvalid,
    p11.DataLenRange,
    p11.GeneralError,
    p11.FunctionFailed,
)
#: A token that does not do the mechanism's parameters (SoftHSM 2.6.1 with OAEP-SHA256).
_UNSUPPORTED = (p11.ArgumentsBad, p11.MechanismParamInvalid, p11.MechanismInvalid)


@dataclass(frozen=True)
class PKCS11URI:
    """A parsed RFC 7512 URI (only the attributes this source uses)."""

    module_path: str
    token: str | None
    serial: str | None
    object: str | None
    id: bytes | None
    pin: str
    kid: str | None
    alg: str
    #: The URI without any PIN: safe for logs, errors and /healthz.
    name: str

    @classmethod
    def parse(cls, uri: str, *, signing: bool = False) -> PKCS11URI:
        """Parse and check `uri`; read the PIN from `pin-source` (a warning for `pin-value`).

        `signing`: the URI names a signing key, whose `alg` (if given) is a JWS algorithm
        (ES256, RS256, PS256; empty when not given), not an RSA-OAEP one.
        """
        if not uri.startswith("pkcs11:"):
            raise KeySourceError(f"{uri!r} is not a pkcs11: URI")
        path_part, _, query_part = uri[len("pkcs11:") :].partition("?")
        raw_path = parse_attributes(path_part, ";", "the pkcs11 URI")
        path = {name: unquote(value) for name, value in raw_path.items()}
        query = {
            name: unquote(value)
            for name, value in parse_attributes(query_part, "&", "the pkcs11 URI").items()
        }
        unknown = (set(path) - _PATH_ATTRIBUTES) | (set(query) - _QUERY_ATTRIBUTES)
        if unknown:
            raise KeySourceError(
                f"the pkcs11 URI has attribute(s) {', '.join(sorted(unknown))} this source does "
                "not use (tokens are picked by token= or serial=, never by slot)"
            )
        name = "pkcs11:" + path_part + _public_query(query)
        if path.get("type", "private") != "private":
            raise KeySourceError(f"{name}: type= must be 'private' (the key that decrypts)")
        module_path = query.get("module-path")
        if not module_path:
            raise KeySourceError(f"{name}: add module-path=/path/to/the/module.so")
        if "token" not in path and "serial" not in path:
            raise KeySourceError(f"{name}: name the token with token=LABEL or serial=")
        return cls(
            module_path=module_path,
            token=path.get("token"),
            serial=path.get("serial"),
            object=path.get("object"),
            id=unquote_to_bytes(raw_path["id"]) if "id" in raw_path else None,
            pin=_read_pin(query, name),
            kid=query.get("kid"),
            alg=_signing_alg(query.get("alg", ""), name)
            if signing
            else check_alg(query.get("alg", "RSA-OAEP"), name),
            name=name,
        )


#: The JWS algorithms a token key may sign with (CKM_ECDSA, CKM_SHA256_RSA_PKCS[_PSS]).
TOKEN_SIGNING_ALGORITHMS = ("ES256", "RS256", "PS256")


def _signing_alg(alg: str, name: str) -> str:
    if alg and alg not in TOKEN_SIGNING_ALGORITHMS:
        raise KeySourceError(
            f"{name}: alg {alg!r} refused for a signing key; use "
            + ", ".join(TOKEN_SIGNING_ALGORITHMS)
        )
    return alg


def _public_query(query: dict[str, str]) -> str:
    shown = [f"{k}={v}" for k, v in query.items() if k != "pin-value"]
    return "?" + "&".join(shown) if shown else ""


def _read_pin(query: dict[str, str], name: str) -> str:
    if "pin-value" in query and "pin-source" in query:
        raise KeySourceError(f"{name}: give pin-source or pin-value, not both")
    if "pin-value" in query:
        warnings.warn(
            f"{name}: the PIN is in the URI (pin-value); use pin-source=file:PATH so it stays "
            "out of command lines and config files",
            PinInURIWarning,
            stacklevel=3,
        )
        pin = query["pin-value"]
    elif "pin-source" in query:
        source = query["pin-source"]
        path = source[len("file:") :] if source.startswith("file:") else source
        try:
            pin = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeError) as exc:
            raise KeySourceError(f"{name}: cannot read the PIN file {path}: {exc}") from None
        if not pin:
            raise KeySourceError(f"{name}: the PIN file {path} is empty")
    else:
        raise KeySourceError(f"{name}: add pin-source=file:PATH (the token's user PIN)")
    return pin


class _Token:
    """One token's logged-in session, shared by every source on it, behind its module's lock.

    After a session or device error the session is dropped; the next call logs in again, so
    a token that comes back is used again without a restart.
    """

    def __init__(self, uri: PKCS11URI, lock: threading.RLock) -> None:
        self.uri = uri
        self.lock = lock
        self.session: Any = None
        self.generation = 0
        self.description = uri.token or uri.serial or "?"

    def call(self, action: Callable[[Any], _T]) -> _T:
        """Run `action(session)` under the module lock; a gone token is unavailable."""
        with self.lock:
            gone: Exception | None = None
            try:
                if self.session is None:
                    self.session = self._login()
                    self.generation += 1
                return action(self.session)
            except (
                p11.DeviceError,
                p11.DeviceRemoved,
                p11.DeviceMemory,
                p11.SessionClosed,
                p11.SessionHandleInvalid,
                p11.TokenNotPresent,
                p11.TokenNotRecognised,
                p11.UserNotLoggedIn,
                p11.ObjectHandleInvalid,
                p11.KeyHandleInvalid,
                p11.NoSuchToken,
            ) as exc:
                self.session = None
                gone = exc
            raise KeySourceUnavailableError(self.uri.name, f"the token answered {_code(gone)}")

    def _login(self) -> Any:
        uri = self.uri
        try:
            lib = pkcs11.lib(uri.module_path)
        except Exception as exc:  # a missing or broken .so: configuration, not an outage
            raise KeySourceError(f"{uri.name}: cannot load the PKCS#11 module: {exc}") from None
        try:
            token = lib.get_token(token_label=uri.token, token_serial=uri.serial)
        except p11.MultipleTokensReturned:
            raise KeySourceError(
                f"{uri.name}: several tokens match; add serial= to pick one"
            ) from None
        except p11.NoSuchToken:
            raise KeySourceError(
                f"{uri.name}: no token {self.description!r} in the module"
            ) from None
        self.description = (
            f"{token.label!r} ({token.manufacturer_id.strip()} {token.model.strip()} "
            f"firmware {_version(token.firmware_version)})"
        )
        try:
            return token.open(user_pin=uri.pin, rw=True)
        except p11.UserAlreadyLoggedIn:  # another session of this process logged in
            return token.open(rw=True)
        except (p11.PinIncorrect, p11.PinInvalid, p11.PinLenRange):
            raise KeySourceError(f"{uri.name}: the token refused the PIN") from None
        except p11.PinLocked:
            raise KeySourceError(f"{uri.name}: the token's user PIN is locked") from None


def _version(value: Any) -> str:
    return ".".join(str(part) for part in value) if isinstance(value, tuple) else str(value)


def _code(exc: Exception | None) -> str:
    return type(exc).__name__ if exc is not None else "nothing"


_REGISTRY_LOCK = threading.Lock()
_MODULE_LOCKS: dict[str, threading.RLock] = {}
_TOKENS: dict[tuple[str, str | None, str | None], _Token] = {}


def token_for(uri: PKCS11URI) -> _Token:
    """The process's one `_Token` for the URI's token (one login per token per process).

    Its `call(action)` runs `action(session)` under the module's lock: every use of the
    token, decrypt or sign, goes through it.
    """
    module = os.path.realpath(uri.module_path)
    with _REGISTRY_LOCK:
        lock = _MODULE_LOCKS.setdefault(module, threading.RLock())
        key = (module, uri.token, uri.serial)
        if key not in _TOKENS:
            _TOKENS[key] = _Token(uri, lock)
        return _TOKENS[key]


def _template(uri: PKCS11URI, object_class: ObjectClass) -> dict[Attribute, Any]:
    template: dict[Attribute, Any] = {
        Attribute.CLASS: object_class,
        Attribute.KEY_TYPE: KeyType.RSA,
    }
    if uri.object is not None:
        template[Attribute.LABEL] = uri.object
    if uri.id is not None:
        template[Attribute.ID] = uri.id
    return template


class PKCS11KeySource(ExternalKeySource):
    """RSA private keys in a PKCS#11 token, unwrapping inside it (see the module docstring)."""

    def __init__(self, uri: str) -> None:
        """Open the token, find the keys, check each one decrypts in the token under its alg."""
        self.uri = PKCS11URI.parse(uri)
        self.name = self.uri.name
        self._token = token_for(self.uri)
        self._handles: dict[str, Any] = {}
        self._generation = -1
        super().__init__(self.uri.name, self._token.call(self._find))
        for kid in self.kids():
            key = self.key(kid)
            assert key is not None
            self._probe(key)

    def _find(self, session: Any) -> list[ExternalKey]:
        """The token's matching RSA private keys, with kids and public numbers read from it."""
        # DECRYPT: the token's signing keys (keys.pkcs11_signing) are not decryption keys.
        template = {**_template(self.uri, ObjectClass.PRIVATE_KEY), Attribute.DECRYPT: True}
        found = list(session.get_objects(template))
        if not found:
            raise KeySourceError(f"{self.name}: no RSA private key in the token matches")
        if self.uri.kid is not None and len(found) > 1:
            raise KeySourceError(f"{self.name}: kid= names one key, and {len(found)} match")
        keys = []
        for handle in found:
            n = int.from_bytes(handle[Attribute.MODULUS], "big")
            e = int.from_bytes(handle[Attribute.PUBLIC_EXPONENT], "big")
            kid = choose_kid(self.uri.kid, handle.label or None, n, e)
            keys.append(ExternalKey(kid, self.uri.alg, n, e))
            self._handles[kid] = handle
        self._generation = self._token.generation
        return keys

    def _handle(self, session: Any, kid: str) -> Any:
        """The key's object in the current session (found again after a re-login)."""
        if self._generation != self._token.generation:
            self._find(session)
        return self._handles[kid]

    def _probe(self, key: ExternalKey) -> None:
        """Wrap 32 random bytes to the public key and have the token open them."""
        secret = os.urandom(32)
        hash_type = _OAEP[key.alg][2]
        wrapped = (
            rsa.RSAPublicNumbers(key.e, key.n)
            .public_key()
            .encrypt(secret, padding.OAEP(padding.MGF1(hash_type()), hash_type(), None))
        )
        if self._decrypt(key, wrapped) != secret:
            raise KeySourceError(f"{self.name}: key {key.kid!r} does not decrypt in the token")

    def _decrypt(self, key: ExternalKey, encrypted_key: bytes) -> bytes | None:
        """CKM_RSA_PKCS_OAEP in the token; the token's refusal is None (the caller's one error)."""
        mechanism_hash, mgf, _ = _OAEP[key.alg]

        def decrypt(session: Any) -> bytes | None:
            plaintext: bytes | None = None
            unsupported = False
            try:
                plaintext = self._handle(session, key.kid).decrypt(
                    encrypted_key,
                    mechanism=Mechanism.RSA_PKCS_OAEP,
                    mechanism_param=(mechanism_hash, mgf, None),
                )
            except _REFUSED:
                plaintext = None
            except _UNSUPPORTED:
                unsupported = True
            if unsupported:  # raised outside the handler: a configuration error, not a body's
                raise KeySourceError(
                    f"token {self._token.description} cannot do {key.alg} (CKM_RSA_PKCS_OAEP "
                    f"with {mechanism_hash.name}), which key {key.kid!r} is declared for; "
                    "SoftHSM 2.6.1 does OAEP with SHA-1 only: use RSA-OAEP keys in this token"
                )
            return plaintext

        return self._token.call(decrypt)

    def health(self) -> None:
        """Ask the token for a few random bytes: a dead or logged-out session fails here."""
        self._token.call(lambda session: session.generate_random(64))


def generate_key(uri: str, *, size: int = 2048) -> dict[str, Any]:
    """Generate a non-extractable RSA key pair in the token under `object=`; its public JWK.

    The URI must name the new key (`object=`); a key already under that label is refused.
    """
    parsed = PKCS11URI.parse(uri)
    if not parsed.object:
        raise KeySourceError(f"{parsed.name}: name the new key with object=LABEL")
    key_id = os.urandom(16)

    def generate(session: Any) -> None:
        if list(session.get_objects(_template(parsed, ObjectClass.PRIVATE_KEY))):
            raise KeySourceError(f"{parsed.name}: the token already holds a key {parsed.object!r}")
        session.generate_keypair(
            KeyType.RSA,
            size,
            id=key_id,
            label=parsed.object,
            store=True,
            public_template={Attribute.ENCRYPT: True, Attribute.WRAP: True},
            private_template=_PRIVATE_TEMPLATE,
        )

    token_for(parsed).call(generate)
    return _public_of(uri)


_PRIVATE_TEMPLATE = {
    Attribute.SENSITIVE: True,
    Attribute.EXTRACTABLE: False,
    Attribute.PRIVATE: True,
    Attribute.DECRYPT: True,
    Attribute.UNWRAP: True,
    Attribute.SIGN: False,
}


def import_key(uri: str, private_jwk: dict[str, Any]) -> dict[str, Any]:
    """Put an RSA private JWK into the token, non-extractable there, under `object=` (default:
    its kid); returns the public JWK as the token now reports it."""
    manager = JWKManager({"keys": [private_jwk]})
    kid = manager.kids()[0]
    jwk = manager.get_private_jwk(kid) or {}
    if "d" not in jwk:
        raise KeySourceError(f"key {kid!r} has no private half to import")
    number = {m: _bytes(int.from_bytes(b64url_decode(jwk[m], m), "big")) for m in _RSA_MEMBERS}
    parsed = PKCS11URI.parse(uri)
    label = parsed.object or kid

    def create(session: Any) -> None:
        named = {**_template(parsed, ObjectClass.PRIVATE_KEY), Attribute.LABEL: label}
        if list(session.get_objects(named)):
            raise KeySourceError(f"{parsed.name}: the token already holds a key {label!r}")
        common = {Attribute.KEY_TYPE: KeyType.RSA, Attribute.LABEL: label, Attribute.TOKEN: True}
        session.create_object(
            {
                **common,
                **_PRIVATE_TEMPLATE,
                Attribute.CLASS: ObjectClass.PRIVATE_KEY,
                **{attribute: number[member] for member, attribute in _RSA_MEMBERS.items()},
            }
        )
        session.create_object(
            {
                **common,
                Attribute.CLASS: ObjectClass.PUBLIC_KEY,
                Attribute.MODULUS: number["n"],
                Attribute.PUBLIC_EXPONENT: number["e"],
                Attribute.ENCRYPT: True,
            }
        )

    token_for(parsed).call(create)
    named_uri = uri if parsed.object else _with_object(uri, label)
    return _public_of(named_uri)


#: JWK member -> PKCS#11 attribute of an RSA private key.
_RSA_MEMBERS = {
    "n": Attribute.MODULUS,
    "e": Attribute.PUBLIC_EXPONENT,
    "d": Attribute.PRIVATE_EXPONENT,
    "p": Attribute.PRIME_1,
    "q": Attribute.PRIME_2,
    "dp": Attribute.EXPONENT_1,
    "dq": Attribute.EXPONENT_2,
    "qi": Attribute.COEFFICIENT,
}


def _bytes(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def _with_object(uri: str, label: str) -> str:
    path, _, query = uri.partition("?")
    return f"{path};object={label}?{query}"


def _public_of(uri: str) -> dict[str, Any]:
    source = PKCS11KeySource(uri)
    jwk = source.public_jwk(source.kids()[0])
    assert jwk is not None
    return jwk
