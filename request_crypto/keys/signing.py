"""Signing key sets (`use: "sig"`) and `dir` shared-secret sets, apart from the RSA sets.

A sender signs its payload as a JWT with a key of a signing set, and a receiver verifies it
with the public half (or, for HS256, the same secret). A `dir` set holds 256-bit secrets that
encrypt a `jwe` body directly (`alg: "dir"`, `enc: "A256GCM"`). The RSA encryption sets of
`keys.jwks` stay strict: `key_set_kind` tells the three kinds apart, and each loader refuses
the others' keys.

Every key's JWS algorithm is fixed when the key is loaded, from its `kty`, `crv` and `alg`
(EC P-256 is ES256, P-384 ES384, Ed25519 EdDSA; RSA and `oct` keys must say RS256, PS256 or
HS256). A token's header never chooses it: `_jws` refuses a header whose `alg` differs.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils

from .._b64 import b64url_decode, b64url_encode
from ..errors import (
    DecryptionError,
    InvalidArgumentError,
    InvalidJWKSError,
    NoKeyFoundError,
    UnknownSignerError,
)
from ..kids import validate_kid
from .jwks import MIN_KEY_SIZE, load_jwks_document, parse_keys

__all__ = [
    "DIRECT_ALG",
    "SECRET_BYTES",
    "SIGNING_ALGORITHMS",
    "DirectKeySet",
    "MergedVerificationKeys",
    "SigningKey",
    "SigningKeySet",
    "VerificationKeys",
    "generate_direct_jwk",
    "generate_signing_jwk",
    "key_set_kind",
    "public_key_set",
]

#: The JWS algorithms a signing key may have; never `none`, never a header's choice.
SIGNING_ALGORITHMS = ("ES256", "ES384", "EdDSA", "RS256", "PS256", "HS256")
#: Direct encryption with a shared secret: the secret is the A256GCM content key.
DIRECT_ALG = "dir"
DIRECT_ENC = "A256GCM"
#: Length of an HS256 or `dir` secret: 256 bits.
SECRET_BYTES = 32
#: The curve of each EC/OKP algorithm, and the byte length of one signature coordinate.
_CURVES: Mapping[str, tuple[str, int]] = {"ES256": ("P-256", 32), "ES384": ("P-384", 48)}
_ALG_OF_CURVE = {"P-256": "ES256", "P-384": "ES384", "Ed25519": "EdDSA"}
_HASHES: Mapping[str, hashes.HashAlgorithm] = {
    "ES256": hashes.SHA256(),
    "ES384": hashes.SHA384(),
    "RS256": hashes.SHA256(),
    "PS256": hashes.SHA256(),
}
#: The ECDSA signature algorithms, built once (not per signature: each is a Python object).
_ECDSA: Mapping[str, ec.ECDSA] = {alg: ec.ECDSA(_HASHES[alg]) for alg in _CURVES}
#: What a public JWK of each key type keeps.
_PUBLIC_MEMBERS: Mapping[str, tuple[str, ...]] = {
    "EC": ("kty", "kid", "use", "alg", "crv", "x", "y"),
    "OKP": ("kty", "kid", "use", "alg", "crv", "x"),
    "RSA": ("kty", "kid", "use", "alg", "e", "n"),
}
_PRIVATE_MEMBER = {"EC": "d", "OKP": "d", "RSA": "d", "oct": "k"}

KeySetKind = Literal["enc", "sig", "dir"]


def _where(jwk: Mapping[str, Any], position: str) -> tuple[str, str]:
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not kid:
        raise InvalidJWKSError(f"{position} has no 'kid'; every key needs a non-empty kid")
    return kid, f"{position} (kid {kid!r})"


def _secret(jwk: Mapping[str, Any], where: str) -> bytes:
    value = jwk.get("k")
    secret = b64url_decode(value, f"{where}'s k") if isinstance(value, str) else b""
    if len(secret) != SECRET_BYTES:
        raise InvalidJWKSError(
            f"{where} has no 256-bit secret 'k' ({len(secret) * 8} bits); "
            "make one with `keys init --alg HS256` or `--alg dir`"
        )
    return secret


def _signing_alg(jwk: Mapping[str, Any], where: str) -> str:
    """The one JWS algorithm the key may verify, from its kty, crv and alg."""
    kty, alg, crv = jwk.get("kty"), jwk.get("alg"), jwk.get("crv")
    implied = _ALG_OF_CURVE.get(crv) if kty in ("EC", "OKP") and isinstance(crv, str) else None
    allowed = {"EC": ("ES256", "ES384"), "OKP": ("EdDSA",), "RSA": ("RS256", "PS256")}
    allowed["oct"] = ("HS256",)
    if kty not in allowed:
        raise InvalidJWKSError(f"{where} has kty {kty!r}; signing keys are EC, OKP, RSA or oct")
    if kty in ("EC", "OKP") and (implied is None or implied not in allowed[str(kty)]):
        raise InvalidJWKSError(
            f"{where} has curve {crv!r}; use P-256 (ES256), P-384 (ES384) or Ed25519 (EdDSA)"
        )
    if alg is None and implied is not None:
        return implied
    if alg not in allowed[str(kty)] or (implied is not None and alg != implied):
        raise InvalidJWKSError(
            f"{where} ({kty}{' ' + str(crv) if crv else ''}) has alg {alg!r}; "
            f"it can only be {' or '.join(allowed[str(kty)] if implied is None else [implied])}"
        )
    return str(alg)


class SigningKey:
    """One signing JWK: its algorithm (fixed at load) and its `cryptography` key objects."""

    __slots__ = ("_private", "_public", "_secret", "alg", "jwk", "kid", "kty")

    def __init__(self, jwk: Mapping[str, Any], position: str = "the key") -> None:
        if not isinstance(jwk, Mapping):
            raise InvalidJWKSError(f"{position} is not a JSON object")
        self.kid, where = _where(jwk, position)
        use = jwk.get("use", "sig")
        if use != "sig":
            raise InvalidJWKSError(f"{where} has use {use!r}; signing keys need use 'sig'")
        self.alg: str = _signing_alg(jwk, where)
        self.kty: str = str(jwk["kty"])
        self._secret: bytes | None = None
        self._private: Any = None
        self._public: Any = None
        if self.kty == "oct":
            self._secret = _secret(jwk, where)
        else:
            self._load_asymmetric(jwk, where)
        kept = _PUBLIC_MEMBERS.get(self.kty, ("kty", "kid"))
        self.jwk: dict[str, Any] = {m: jwk[m] for m in kept if m in jwk}
        self.jwk.update(use="sig", alg=self.alg)
        if self.has_private:
            self.jwk.update({m: jwk[m] for m in jwk if m not in self.jwk and m != "key_ops"})

    def _load_asymmetric(self, jwk: Mapping[str, Any], where: str) -> None:
        # Imported here: jwcrypto (with x509) adds ~40 ms to every command that loads none.
        from jwcrypto.jwk import JWK  # noqa: PLC0415

        members = {m: v for m, v in jwk.items() if m not in ("alg", "use", "key_ops")}
        try:
            loaded = JWK(**members)
            self._public = loaded.get_op_key("verify")
            self._private = loaded.get_op_key("sign") if loaded.has_private else None
        except Exception:
            loaded = None
        if loaded is None:  # outside the handler: nothing of the key rides along as __context__
            raise InvalidJWKSError(f"{where} is not a valid {jwk.get('kty')} key")
        if isinstance(self._public, rsa.RSAPublicKey) and self._public.key_size < MIN_KEY_SIZE:
            raise InvalidJWKSError(
                f"{where} is RSA-{self._public.key_size}; use at least {MIN_KEY_SIZE} bits"
            )

    @property
    def has_private(self) -> bool:
        """Whether this key can sign (a private key, or an HS256 secret)."""
        return self._private is not None or self._secret is not None

    @property
    def is_secret(self) -> bool:
        """An HS256 secret: it has no public half to publish."""
        return self._secret is not None

    @property
    def public_jwk(self) -> dict[str, Any]:
        """The public members (refused for a secret, which has none)."""
        if self.is_secret:
            raise InvalidArgumentError(
                f"key {self.kid!r} is an HS256 secret: it has no public half"
            )
        return {m: self.jwk[m] for m in _PUBLIC_MEMBERS[self.kty] if m in self.jwk}

    def sign(self, data: bytes) -> bytes:
        """The JWS signature of `data` (ECDSA in the fixed-length JOSE form, r || s)."""
        if self._secret is not None:
            return hmac.new(self._secret, data, hashlib.sha256).digest()
        if self._private is None:
            raise InvalidArgumentError(f"key {self.kid!r} is a public key: it cannot sign")
        if self.alg in _CURVES:
            der = self._private.sign(data, _ECDSA[self.alg])
            r, s = utils.decode_dss_signature(der)
            size = _CURVES[self.alg][1]
            return r.to_bytes(size, "big") + s.to_bytes(size, "big")
        if self.alg == "EdDSA":
            return bytes(self._private.sign(data))
        return bytes(self._private.sign(data, self._rsa_padding(), _HASHES[self.alg]))

    def verify(self, data: bytes, signature: bytes) -> bool:
        """Whether `signature` is this key's over `data`; wrong lengths (or DER) are False."""
        if self._secret is not None:
            expected = hmac.new(self._secret, data, hashlib.sha256).digest()
            return hmac.compare_digest(expected, signature)
        try:
            self._verify(data, signature)
        except (InvalidSignature, ValueError):
            return False
        return True

    def _verify(self, data: bytes, signature: bytes) -> None:
        public = self._public
        ecdsa = _ECDSA.get(self.alg)
        if ecdsa is not None:
            size = _CURVES[self.alg][1]
            if len(signature) != 2 * size:
                raise InvalidSignature
            r = int.from_bytes(signature[:size], "big")
            s = int.from_bytes(signature[size:], "big")
            public.verify(utils.encode_dss_signature(r, s), data, ecdsa)
        elif self.alg == "EdDSA":
            if not isinstance(public, ed25519.Ed25519PublicKey) or len(signature) != 64:
                raise InvalidSignature
            public.verify(signature, data)
        else:
            if len(signature) != (public.key_size + 7) // 8:
                raise InvalidSignature
            public.verify(signature, data, self._rsa_padding(), _HASHES[self.alg])

    def _rsa_padding(self) -> padding.AsymmetricPadding:
        if self.alg == "PS256":
            return padding.PSS(padding.MGF1(hashes.SHA256()), 32)  # RFC 7518 3.5: salt = hash
        return padding.PKCS1v15()

    def verification_key(self, kid: str) -> SigningKey | None:
        """This key when `kid` is its kid: one key is a one-key `VerificationKeys`."""
        return self if kid == self.kid else None

    def keys_for_alg(self, alg: str) -> list[SigningKey]:
        """This key when `alg` is its alg."""
        return [self] if alg == self.alg else []

    @property
    def metadata(self) -> dict[str, Any]:
        """kid, kty, alg and use: what a receiver may log about the signer's key."""
        return {"kid": self.kid, "kty": self.kty, "alg": self.alg, "use": "sig"}

    def __repr__(self) -> str:
        kind = "secret" if self.is_secret else "private" if self.has_private else "public"
        return f"<{kind} {self.alg} signing key {self.kid!r}>"


class VerificationKeys(Protocol):
    """Where a verifier finds the signer's key: a set in memory, a file, or a remote JWKS."""

    def verification_key(self, kid: str) -> SigningKey | None:
        """The key named `kid`, or None (a remote set may refetch once per cooldown)."""
        ...

    def keys_for_alg(self, alg: str) -> list[SigningKey]:
        """Every key whose fixed algorithm is `alg` (for a token that names no kid)."""
        ...


class MergedVerificationKeys:
    """Several senders' sets (files, URLs, keys in a token or KMS) as one, merged by kid.

    Each lookup asks every set, so a reloaded file or a refetched URL is seen at once. A kid
    found in two sets with two different keys is refused (UnknownSignerError naming both):
    which sender signed must never depend on the order of the options.
    """

    def __init__(self, sets: Sequence[VerificationKeys], names: Sequence[str]) -> None:
        self._sets = list(zip(names, sets, strict=True))

    def verification_key(self, kid: str) -> SigningKey | None:
        """The key named `kid` in the one set holding it, or None."""
        found = [(name, key) for name, keys in self._sets if (key := keys.verification_key(kid))]
        if len({_identity(key) for _, key in found}) > 1:
            raise UnknownSignerError(
                f"kid {kid!r} names different keys in {found[0][0]} and {found[1][0]}: "
                "give each sender's key its own kid"
            )
        return found[0][1] if found else None

    def keys_for_alg(self, alg: str) -> list[SigningKey]:
        """Every key of every set whose algorithm is `alg`."""
        return [key for _, keys in self._sets for key in keys.keys_for_alg(alg)]

    def __repr__(self) -> str:
        return f"MergedVerificationKeys({[name for name, _ in self._sets]!r})"


def _identity(key: SigningKey) -> str:
    """The same key read from two places compares equal: its public JWK (or the object)."""
    return repr(sorted(key.public_jwk.items())) if not key.is_secret else str(id(key))


class SigningKeySet:
    """A signing set by kid: signs with its private keys, verifies with any of its keys.

    The kid -> key mapping is replaced whole on change, so readers never see half a set.
    """

    def __init__(self, jwks: Mapping[str, Any] | str | bytes | None = None) -> None:
        self._lock = threading.Lock()
        self._keys: dict[str, SigningKey] = {}
        if jwks is not None:
            self._keys = parse_keys(jwks, SigningKey)

    def kids(self) -> list[str]:
        """Every kid, in set order (the last one is the newest)."""
        return list(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, kid: object) -> bool:
        return kid in self._keys

    def add(self, jwk: Mapping[str, Any]) -> SigningKey:
        """Add one key (its kid must be new); returns it."""
        key = SigningKey(jwk)
        with self._lock:
            if key.kid in self._keys:
                raise InvalidArgumentError(f"kid {key.kid!r} is already in the set")
            self._keys = {**self._keys, key.kid: key}
        return key

    def verification_key(self, kid: str) -> SigningKey | None:
        """The key named `kid`, or None."""
        return self._keys.get(kid)

    def keys_for_alg(self, alg: str) -> list[SigningKey]:
        """Every key whose algorithm is `alg`."""
        return [key for key in self._keys.values() if key.alg == alg]

    def signing_key(self, kid: str | None = None) -> SigningKey:
        """The key to sign with: `kid`, or else the newest key that can sign."""
        if kid is not None:
            key = self._keys.get(kid)
            if key is None:
                raise InvalidArgumentError(f"the signing set has no kid {kid!r}: see its kids")
            if not key.has_private:
                raise InvalidArgumentError(
                    f"key {kid!r} of the signing set is public: sign with the private set"
                )
            return key
        signers = [key for key in self._keys.values() if key.has_private]
        if not signers:
            raise InvalidArgumentError(
                "the signing set holds no private key: sign with the sender's private set, "
                "not its public half"
            )
        return signers[-1]

    def get_public_jwks(self) -> dict[str, list[dict[str, Any]]]:
        """The public set to publish; refused when it holds HS256 secrets."""
        return {"keys": [key.public_jwk for key in self._keys.values()]}

    def __repr__(self) -> str:
        return f"SigningKeySet({list(self._keys.values())!r})"


class DirectKeySet:
    """`dir` secrets by kid: a `KeySource` whose "unwrap" hands back the shared content key.

    Only a decryptor configured with this set opens `alg: "dir"` bodies; an RSA set refuses
    them. The secret never leaves except as the AES-GCM key of one body.
    """

    def __init__(self, jwks: Mapping[str, Any] | str | bytes) -> None:
        document = load_jwks_document(jwks)
        secrets: dict[str, bytes] = {}
        for index, jwk in enumerate(document["keys"]):
            if not isinstance(jwk, Mapping):
                raise InvalidJWKSError(f"key #{index} is not a JSON object")
            kid, where = _where(jwk, f"key #{index}")
            if jwk.get("kty") != "oct" or jwk.get("alg") != DIRECT_ALG:
                raise InvalidJWKSError(f"{where} is not a dir secret (kty 'oct', alg 'dir')")
            if kid in secrets:
                raise InvalidJWKSError(f"kid {kid!r} appears twice in the key set")
            secrets[kid] = _secret(jwk, where)
        self._secrets = secrets

    def kids(self) -> list[str]:
        """Every kid, in set order (the last one is the newest)."""
        return list(self._secrets)

    def __contains__(self, kid: object) -> bool:
        return kid in self._secrets

    def can_decrypt(self, kid: str) -> bool:
        """Whether `kid` names a secret of this set."""
        return kid in self._secrets

    def public_jwk(self, kid: str) -> dict[str, Any] | None:
        """None: a shared secret has no public half."""
        return None

    def key_metadata(self, kid: str) -> dict[str, Any] | None:
        """kid, kty, use, alg and length (bits) of `kid`, or None if absent."""
        if kid not in self._secrets:
            return None
        return {"kid": kid, "kty": "oct", "use": "enc", "alg": DIRECT_ALG, "length": 256}

    def unwrap(self, kid: str, alg: str, encrypted_key: bytes) -> bytes:
        """The secret itself: under `dir` the content key is the shared key (no wrapped key)."""
        secret = self._secrets.get(kid)
        if secret is None:
            raise NoKeyFoundError(kid)
        if alg != DIRECT_ALG or encrypted_key:
            raise DecryptionError()
        return secret

    def health(self) -> None:
        """Secrets in memory are always available."""

    def close(self) -> None:
        """Nothing to release."""

    def content_key(self, kid: str) -> bytes:
        """The A256GCM key to seal a body to `kid` with."""
        secret = self._secrets.get(kid)
        if secret is None:
            raise InvalidArgumentError(f"the dir set has no kid {kid!r}")
        return secret

    def __repr__(self) -> str:
        return f"DirectKeySet(kids={self.kids()!r})"


def key_set_kind(jwks: Mapping[str, Any] | str | bytes) -> KeySetKind:
    """`enc` (RSA encryption keys), `sig` (signing keys) or `dir` (shared secrets).

    Decided by the keys' `use`, `kty` and `alg`; a set mixing kinds is refused, so an
    encryption set can never be taken for a verification set or the other way round.
    """
    document = load_jwks_document(jwks)
    kinds = set()
    for jwk in document["keys"]:
        if not isinstance(jwk, Mapping):
            continue  # the kind's own loader says what is wrong with it
        if jwk.get("alg") == DIRECT_ALG:
            kinds.add("dir")
        elif jwk.get("use") == "sig" or jwk.get("alg") in SIGNING_ALGORITHMS:
            kinds.add("sig")
        else:
            kinds.add("enc")
    if len(kinds) > 1:
        raise InvalidJWKSError(
            "the key set mixes " + ", ".join(sorted(kinds)) + " keys; keep encryption keys, "
            "signing keys and dir secrets in separate sets"
        )
    kind: KeySetKind = kinds.pop() if kinds else "enc"  # type: ignore[assignment]
    return kind


def public_key_set(jwks: Mapping[str, Any] | str | bytes) -> dict[str, Any]:
    """The public members of every key of a signing set; a set of secrets is refused."""
    document = load_jwks_document(jwks)
    for jwk in document["keys"]:
        if isinstance(jwk, Mapping) and jwk.get("kty") == "oct":
            raise InvalidArgumentError(
                "the set holds shared secrets (HS256 or dir): they have no public half to "
                "publish; give the other party the secret over a trusted channel instead"
            )
    return SigningKeySet(document).get_public_jwks()


def generate_signing_jwk(kid: str, alg: str, *, size: int = MIN_KEY_SIZE) -> dict[str, Any]:
    """A new private signing JWK (`use: "sig"`) for `alg`; `size` is for RSA only."""
    validate_kid(kid)
    if alg not in SIGNING_ALGORITHMS:
        raise InvalidArgumentError(
            f"alg {alg!r} refused: use one of {', '.join(SIGNING_ALGORITHMS)}"
        )
    if alg == "HS256":
        members: dict[str, Any] = {"kty": "oct", "k": b64url_encode(os.urandom(SECRET_BYTES))}
    else:
        if alg in ("RS256", "PS256") and (not isinstance(size, int) or size < MIN_KEY_SIZE):
            raise InvalidArgumentError(f"key size {size!r} refused: use at least {MIN_KEY_SIZE}")
        private: Any
        if alg in _CURVES:
            curve = ec.SECP256R1() if alg == "ES256" else ec.SECP384R1()
            private = ec.generate_private_key(curve)
        elif alg == "EdDSA":
            private = ed25519.Ed25519PrivateKey.generate()
        else:
            private = rsa.generate_private_key(65537, size)
        from jwcrypto.jwk import JWK  # noqa: PLC0415 - see _load_asymmetric

        members = dict(JWK.from_pyca(private).export(as_dict=True))
        members.pop("kid", None)
    return {**members, "kid": kid, "use": "sig", "alg": alg}


def generate_direct_jwk(kid: str) -> dict[str, Any]:
    """A new 256-bit `dir` secret (`alg: "dir"`, for `enc: "A256GCM"`)."""
    validate_kid(kid)
    return {
        "kty": "oct",
        "kid": kid,
        "use": "enc",
        "alg": DIRECT_ALG,
        "k": b64url_encode(os.urandom(SECRET_BYTES)),
    }
