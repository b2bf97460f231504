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

Sessions (`_pkcs11_session`): one login per token per process and a pool of sessions the
decrypt threads share, the module initialised with OS locking (where it refuses, every call
holds its module's lock instead: python-pkcs11 initialises modules without locking, and two
threads in one crash it); a token that is gone is logged into again by itself; a forked child
logs in itself. An answer
that may mean a bad body or a failing device (CKR_GENERAL_ERROR) is judged by a known-good
probe (`PKCS11KeySource`).
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, unquote_to_bytes

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pkcs11 import MGF, Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11

from .._b64 import b64url_decode
from ..errors import KeySourceError, PinInURIWarning
from ._pkcs11_direct import oaep_mechanism
from ._pkcs11_session import AMBIGUOUS, TokenFault, token_for
from .external import ExternalKey, ExternalKeySource, check_alg, choose_kid, parse_attributes
from .jwks import JWKManager

__all__ = [
    "PKCS11URI",
    "PROBE_TTL",
    "PKCS11KeySource",
    "PinInURIWarning",
    "generate_key",
    "import_key",
    "token_for",
]


_PATH_ATTRIBUTES = frozenset({"token", "serial", "object", "id", "type", "manufacturer", "model"})
_QUERY_ATTRIBUTES = frozenset({"module-path", "pin-source", "pin-value", "kid", "alg"})
_OAEP = {
    "RSA-OAEP": (Mechanism.SHA_1, MGF.SHA1, hashes.SHA1),
    "RSA-OAEP-256": (Mechanism.SHA256, MGF.SHA256, hashes.SHA256),
}
#: The same, as the structures `_pkcs11_direct` passes to C_DecryptInit (built once).
_DIRECT_OAEP = {alg: oaep_mechanism(h, m) for alg, (h, m, _) in _OAEP.items()}
#: What a token answers for a ciphertext its key does not open, and only for that.
_REFUSED = (
    p11.EncryptedDataInvalid,
    p11.EncryptedDataLenRange,
    p11.DataInvalid,
    p11.DataLenRange,
)
#: Seconds a probe's verdict (or a successful decrypt) stands: at most one probe per source
#: per PROBE_TTL, however many hostile bodies arrive.
PROBE_TTL = 1.0
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
    """RSA private keys in a PKCS#11 token, unwrapping inside it (see the module docstring).

    A token answering CKR_GENERAL_ERROR or CKR_FUNCTION_FAILED to a decrypt may mean a bad
    body (SoftHSM's answer to bad OAEP padding) or a failing device. The source then has the
    token open a known-good ciphertext (the one made when it opened): if that works, the
    body was bad (DecryptionError, 400); if not, the token is failing
    (KeySourceUnavailableError, 503, and `health` fails until a probe works again). A verdict
    stands PROBE_TTL seconds, and a successful decrypt counts as a working probe, so hostile
    bodies cost at most one extra decrypt per source per PROBE_TTL.
    """

    def __init__(self, uri: str) -> None:
        """Open the token, find the keys, check each one decrypts in the token under its alg."""
        self.uri = PKCS11URI.parse(uri)
        self.name = self.uri.name
        self._token = token_for(self.uri)
        self._direct = self._token.module.direct
        #: One known-good probe at a time, whichever threads meet an ambiguous answer.
        self._probing = threading.Lock()
        self._handles: dict[str, Any] = {}
        self._generation = -1
        #: Per kid: a ciphertext made to its public key, and what it must open to.
        self._known_good: dict[str, tuple[bytes, bytes]] = {}
        #: When the token was last seen to decrypt (or fail to), and which it was.
        self._verdict: tuple[float, bool] | None = None
        #: Known-good probes run after ambiguous answers (what hostile bodies cost).
        self.probes = 0
        super().__init__(self.uri.name, self._token.opening(self._find))
        for kid in self.kids():
            key = self.key(kid)
            assert key is not None
            self._probe(key)
        self._token.use()
        self._open = True

    @property
    def logins(self) -> int:
        """How often this process logged into the source's token (one per process, more
        only after the token was lost)."""
        return self._token.logins

    def close(self) -> None:
        """Forget the keys; the last source open on the token logs out of it."""
        if getattr(self, "_open", False):
            self._open = False
            self._token.release()
        super().close()

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
            try:
                found = {key.kid for key in self._find(session)}
            except KeySourceError:
                found = set()
            if set(self.kids()) - found:  # the token came back without our keys
                raise TokenFault("the token no longer holds the source's keys")
        return self._handles[kid]

    def _probe(self, key: ExternalKey) -> None:
        """Wrap 32 random bytes to the public key and have the token open them; the ciphertext
        is kept as the known-good probe."""
        secret = os.urandom(32)
        hash_type = _OAEP[key.alg][2]
        wrapped = (
            rsa.RSAPublicNumbers(key.e, key.n)
            .public_key()
            .encrypt(secret, padding.OAEP(padding.MGF1(hash_type()), hash_type(), None))
        )
        if self._decrypt(key, wrapped) != secret:
            raise KeySourceError(f"{self.name}: key {key.kid!r} does not decrypt in the token")
        self._known_good[key.kid] = (wrapped, secret)

    def _oaep(self, session: Any, key: ExternalKey, encrypted_key: bytes) -> bytes:
        mechanism_hash, mgf, _ = _OAEP[key.alg]
        try:
            handle = self._handle(session, key.kid)
            if self._direct is not None:  # one GIL hand-over, inside C_Decrypt
                plaintext = self._direct.decrypt(
                    session.handle,
                    handle.handle,
                    _DIRECT_OAEP[key.alg],
                    encrypted_key,
                    len(encrypted_key),  # one modulus: room for any OAEP plaintext
                )
            else:
                plaintext = handle.decrypt(
                    encrypted_key,
                    mechanism=Mechanism.RSA_PKCS_OAEP,
                    mechanism_param=(mechanism_hash, mgf, None),
                )
        except _UNSUPPORTED:
            pass
        else:
            return plaintext
        # Raised outside the handler: a configuration error, not a body's.
        raise KeySourceError(
            f"token {self._token.description} cannot do {key.alg} (CKM_RSA_PKCS_OAEP "
            f"with {mechanism_hash.name}), which key {key.kid!r} is declared for; "
            "SoftHSM 2.6.1 does OAEP with SHA-1 only: use RSA-OAEP keys in this token"
        )

    def _decrypt(self, key: ExternalKey, encrypted_key: bytes) -> bytes | None:
        """CKM_RSA_PKCS_OAEP in the token; a refusal the probe blames on the body is None."""

        def decrypt(session: Any) -> bytes | None:
            try:
                plaintext = self._oaep(session, key, encrypted_key)
            except _REFUSED:
                return None
            except AMBIGUOUS:
                if self._token_decrypts(session, key):
                    return None
                raise TokenFault("the token fails a known-good decrypt") from None
            self._verdict = (time.monotonic(), True)
            return plaintext

        return self._token.call(decrypt)

    def _token_decrypts(self, session: Any, key: ExternalKey) -> bool:
        """Whether the token opens the known-good ciphertext of `key` (the last verdict if it
        is under PROBE_TTL old); one probe at a time."""
        with self._probing:
            return self._probed_verdict(session, key)

    def _probed_verdict(self, session: Any, key: ExternalKey) -> bool:
        now = time.monotonic()
        if self._verdict is not None and now - self._verdict[0] < PROBE_TTL:
            return self._verdict[1]
        known = self._known_good.get(key.kid)
        if known is None:  # the open-time check itself: no verdict to lean on
            return True
        self.probes += 1
        try:
            works = self._oaep(session, key, known[0]) == known[1]
        except p11.PKCS11Error:
            works = False
        self._verdict = (time.monotonic(), works)
        return works

    def health(self) -> None:
        """Ask the token for a few random bytes: a dead or logged-out session fails here; after
        a failed probe, the probe again (at most once per PROBE_TTL) until it works."""

        def check(session: Any) -> None:
            session.generate_random(64)
            if self._verdict is not None and not self._verdict[1]:
                key = self.key(self.kids()[0])
                assert key is not None
                if not self._token_decrypts(session, key):
                    raise TokenFault("the token fails a known-good decrypt")

        self._token.call(check)


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
    try:
        jwk = source.public_jwk(source.kids()[0])
    finally:
        source.close()
    assert jwk is not None
    return jwk
