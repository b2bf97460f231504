"""A signing key that stays in a PKCS#11 token: ES256, RS256 or PS256 signed inside it.

Opened from an RFC 7512 URI naming one private key (`object=` and/or `id=`)::

    pkcs11:token=senders;object=sender-1?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/rc/pin

Query attributes as for `keys.pkcs11` (`module-path`, `pin-source`/`pin-value`, `kid`), and
`alg`: an EC P-256 key is ES256 (alg= may say so); an RSA key needs `alg=RS256` or
`alg=PS256`, because a token records no JWS algorithm for it (python-pkcs11 cannot set
CKA_ALLOWED_MECHANISMS), and the algorithm must never be a guess. The kid is `kid=`, else the
object's label.

Mechanisms: ES256 is CKM_ECDSA over a SHA-256 digest made here (the token's answer is the
fixed-length r || s, which is checked to be 64 bytes: the JOSE form, no DER), RS256
CKM_SHA256_RSA_PKCS, PS256 CKM_SHA256_RSA_PKCS_PSS with MGF1-SHA256 and a 32-byte salt (RFC
7518 3.5). Every call takes a session of the token's pool (`keys.pkcs11.token_for`), the key's
handle looked up once per session (python-pkcs11 signs in the session the handle came from).

Verifying needs only the public key, read from the token when the key opens: a receiver given
the same URI verifies locally, without the token's help.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwcrypto.jwk import JWK
from pkcs11 import MGF, Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11

from ..errors import KeySourceError
from ..kids import validate_kid
from .jwks import MIN_KEY_SIZE
from .pkcs11 import PKCS11URI, token_for
from .signing import SigningKey

__all__ = ["PKCS11SigningKey", "generate_signing_key", "is_signing_uri"]

#: DER of the named curve P-256 (OID 1.2.840.10045.3.1.7): CKA_EC_PARAMS of an ES256 key.
P256_PARAMS = bytes.fromhex("06082a8648ce3d030107")
_COORDINATE = 32
_POINT = 1 + 2 * _COORDINATE  # 04 || x || y
#: alg -> (mechanism, mechanism parameter) signing inside the token.
_MECHANISMS: dict[str, tuple[Mechanism, Any]] = {
    "ES256": (Mechanism.ECDSA, None),
    "RS256": (Mechanism.SHA256_RSA_PKCS, None),
    "PS256": (Mechanism.SHA256_RSA_PKCS_PSS, (Mechanism.SHA256, MGF.SHA256, 32)),
}


def _signing_template(uri: PKCS11URI, object_class: ObjectClass) -> dict[Attribute, Any]:
    template: dict[Attribute, Any] = {Attribute.CLASS: object_class}
    if object_class == ObjectClass.PRIVATE_KEY:
        template[Attribute.SIGN] = True
    if uri.object is not None:
        template[Attribute.LABEL] = uri.object
    if uri.id is not None:
        template[Attribute.ID] = uri.id
    return template


def _ec_point(encoded: bytes, where: str) -> bytes:
    """CKA_EC_POINT: a DER OCTET STRING around 04 || x || y (or, from some tokens, bare)."""
    if len(encoded) == _POINT + 2 and encoded[:2] == bytes([0x04, _POINT]):
        encoded = encoded[2:]
    if len(encoded) != _POINT or encoded[0] != 0x04:
        raise KeySourceError(f"{where}: the token's EC key is not an uncompressed P-256 point")
    return encoded


class PKCS11SigningKey(SigningKey):
    """One signing key in a token with `SigningKey`'s interface (see the module docstring).

    Like any `SigningKey` it is a one-key `VerificationKeys`: a `Verifier` takes it directly.
    """

    def __init__(self, uri: str) -> None:
        """Parse `uri`, find the one private signing key, read its public half from the token."""
        self.uri = PKCS11URI.parse(uri, signing=True)
        self.name = self.uri.name
        if self.uri.object is None and self.uri.id is None:
            raise KeySourceError(f"{self.name}: name the signing key with object=LABEL (or id=)")
        self._token = token_for(self.uri)
        self._generation = -1
        #: The private key's object per session handle (of the current login).
        self._handles: dict[int, Any] = {}
        label, public = self._token.call(self._find)
        self.kid = validate_kid(self.uri.kid or label)
        self.alg = self._alg_of(public)
        self.kty = "EC" if self.alg == "ES256" else "RSA"
        self._secret = None
        self._private = None
        self._public = public
        members = JWK.from_pyca(public).export(as_dict=True)
        kept = ("crv", "x", "y") if self.kty == "EC" else ("e", "n")
        self.jwk = {"kty": self.kty, "kid": self.kid, "use": "sig", "alg": self.alg}
        self.jwk.update({m: members[m] for m in kept})

    def _private_handle(self, session: Any) -> Any:
        """The one matching private signing key's handle in `session`."""
        found = list(session.get_objects(_signing_template(self.uri, ObjectClass.PRIVATE_KEY)))
        if len(found) != 1:
            raise KeySourceError(
                f"{self.name}: {len(found) or 'no'} private signing keys match; name one "
                "with object= (make one with: request-crypto keys init URI --alg ES256)"
            )
        return found[0]

    def _find(self, session: Any) -> tuple[str, Any]:
        """The one matching private signing key (kept as the handle), its label, public key."""
        handle = self._private_handle(session)
        self._handles, self._generation = {session.handle: handle}, self._token.generation
        key_type = handle[Attribute.KEY_TYPE]
        if key_type == KeyType.EC:
            public_objects = list(
                session.get_objects(_signing_template(self.uri, ObjectClass.PUBLIC_KEY))
            )
            if len(public_objects) != 1 or handle[Attribute.EC_PARAMS] != P256_PARAMS:
                raise KeySourceError(
                    f"{self.name}: the EC key must be P-256 (ES256) with its public key in "
                    "the token under the same label"
                )
            point = _ec_point(public_objects[0][Attribute.EC_POINT], self.name)
            public: Any = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
        elif key_type == KeyType.RSA:
            n = int.from_bytes(handle[Attribute.MODULUS], "big")
            e = int.from_bytes(handle[Attribute.PUBLIC_EXPONENT], "big")
            public = rsa.RSAPublicNumbers(e, n).public_key()
        else:
            raise KeySourceError(
                f"{self.name}: a {key_type.name} key cannot sign ES256/RS256/PS256"
            )
        return str(handle.label or ""), public

    def _alg_of(self, public: Any) -> str:
        """ES256 for P-256; RS256 or PS256 as `alg=` says for RSA (never guessed)."""
        alg = self.uri.alg
        if isinstance(public, ec.EllipticCurvePublicKey):
            if alg not in ("", "ES256"):
                raise KeySourceError(
                    f"{self.name}: the key is EC P-256, so alg is ES256, not {alg}"
                )
            return "ES256"
        if alg not in ("RS256", "PS256"):
            raise KeySourceError(
                f"{self.name}: an RSA signing key needs alg=RS256 or alg=PS256 in the URI "
                "(the token records no JWS algorithm for it)"
            )
        if public.key_size < MIN_KEY_SIZE:
            raise KeySourceError(f"{self.name}: the key is RSA-{public.key_size}; use 2048+")
        return alg

    @property
    def has_private(self) -> bool:
        """The token signs (whether this user may is the token's decision)."""
        return True

    @property
    def is_secret(self) -> bool:
        """Never: ES256, RS256 and PS256 keys have a public half."""
        return False

    def sign(self, data: bytes) -> bytes:
        """The JWS signature of `data`, made in the token (ECDSA: checked to be r || s)."""
        mechanism, parameter = _MECHANISMS[self.alg]
        message = hashlib.sha256(data).digest() if self.alg == "ES256" else data

        def sign(session: Any) -> bytes:
            if self._generation != self._token.generation:  # logged in again: find it again
                self._find(session)
            handle = self._handles.get(session.handle)
            if handle is None:  # another session of the pool
                handle = self._handles[session.handle] = self._private_handle(session)
            return bytes(handle.sign(message, mechanism=mechanism, mechanism_param=parameter))

        signature = self._token.call(sign)
        if self.alg == "ES256" and len(signature) != 2 * _COORDINATE:
            raise KeySourceError(
                f"{self.name}: the token answered a {len(signature)}-byte ECDSA signature, not "
                "the 64-byte r || s of PKCS#11"
            )
        return signature

    def __repr__(self) -> str:
        return f"<PKCS#11 {self.alg} signing key {self.kid!r} ({self.name})>"


def is_signing_uri(uri: str) -> bool:
    """Whether the token holds a private key for `uri` that may sign (not one that decrypts).

    `keys public` and `keys list` ask it to tell a signing key from a decryption key.
    """
    parsed = PKCS11URI.parse(uri, signing=True)
    if parsed.alg:
        return True
    template = _signing_template(parsed, ObjectClass.PRIVATE_KEY)
    return bool(token_for(parsed).call(lambda session: list(session.get_objects(template))))


def generate_signing_key(uri: str, alg: str, *, size: int = MIN_KEY_SIZE) -> dict[str, Any]:
    """Generate a non-extractable signing key pair in the token under `object=`; its public
    JWK (with `alg`). A label already in use is refused."""
    parsed = PKCS11URI.parse(uri, signing=True)
    if alg not in _MECHANISMS:
        raise KeySourceError(
            f"alg {alg!r} refused for a token signing key; use ES256, RS256, PS256"
        )
    if not parsed.object:
        raise KeySourceError(f"{parsed.name}: name the new key with object=LABEL")
    if parsed.alg and parsed.alg != alg:
        raise KeySourceError(f"{parsed.name}: the URI says alg={parsed.alg}, --alg says {alg}")
    key_id = os.urandom(16)
    private = {
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False,
        Attribute.PRIVATE: True,
        Attribute.SIGN: True,
        Attribute.DECRYPT: False,
        Attribute.UNWRAP: False,
    }
    public = {Attribute.VERIFY: True, Attribute.ENCRYPT: False, Attribute.WRAP: False}

    def generate(session: Any) -> None:
        taken = {Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.LABEL: parsed.object}
        if list(session.get_objects(taken)):
            raise KeySourceError(f"{parsed.name}: the token already holds a key {parsed.object!r}")
        common = {"id": key_id, "label": parsed.object, "store": True}
        try:
            if alg == "ES256":
                parameters = session.create_domain_parameters(
                    KeyType.EC, {Attribute.EC_PARAMS: P256_PARAMS}, local=True
                )
                parameters.generate_keypair(
                    public_template=public, private_template=private, **common
                )
            else:
                session.generate_keypair(
                    KeyType.RSA, size, public_template=public, private_template=private, **common
                )
        except (p11.MechanismInvalid, p11.AttributeValueInvalid, p11.TemplateInconsistent) as exc:
            raise KeySourceError(
                f"{parsed.name}: the token cannot generate a {alg} key ({type(exc).__name__})"
            ) from None

    token_for(parsed).call(generate)
    named = uri if "alg=" in uri.partition("?")[2] or alg == "ES256" else f"{uri}&alg={alg}"
    return PKCS11SigningKey(named).public_jwk
