"""Key sets (RFC 7517): parsed once, looked up by kid, added to, removed from, exported.

Every key is validated and turned into `cryptography` key objects when it enters a manager;
requests only look keys up. Updates replace the kid -> key mapping as a whole (copy on
write), so threads decrypting while an operator adds or removes a key never see half a set.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar, Union

from cryptography.hazmat.primitives.asymmetric import rsa

from .._b64 import b64url_decode, b64url_uint
from .._jose import CONTENT_ENCRYPTION_ALGORITHMS, KEY_MANAGEMENT_ALGORITHMS, encrypt_compact
from ..errors import (
    DecryptionError,
    InvalidArgumentError,
    InvalidJWKSError,
    MalformedBodyError,
    MissingKidError,
    NoKeyFoundError,
    UnsupportedAlgorithmError,
)
from ..kids import thumbprint, validate_kid
from ..limits import DEFAULT_MAX_BODY_SIZE
from .source import JWKDecryptResult, JWKMetadata, open_compact

__all__ = [
    "DECRYPT_OPS",
    "DEFAULT_ALG",
    "ENCRYPT_OPS",
    "MAX_KEY_SIZE",
    "MIN_KEY_SIZE",
    "PRIVATE_MEMBERS",
    "PUBLIC_MEMBERS",
    "JWKDecryptResult",
    "JWKManager",
    "JWKMetadata",
    "JWKSInput",
    "JWKSManager",
    "create_jwk_manager",
    "load_jwks_document",
    "parse_jwks",
    "public_halves",
]

#: What a public JWK keeps; `key_ops` only when the key declares it.
PUBLIC_MEMBERS = ("kty", "kid", "use", "alg", "e", "n", "key_ops")
PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi")
DEFAULT_ALG = "RSA-OAEP"
MIN_KEY_SIZE = 2048
#: OpenSSL's own ceiling: larger moduli load, then fail every operation.
MAX_KEY_SIZE = 16384
#: RFC 7517 `key_ops` values that let a key wrap (sender) or unwrap (receiver) a key.
ENCRYPT_OPS = ("encrypt", "wrapKey")
DECRYPT_OPS = ("decrypt", "unwrapKey")
#: The members that hold an RSA public key's numbers.
RSA_PUBLIC_NUMBERS = ("e", "n")
#: The wrapped-key JWE of the `elastic` format: the original wraps with these, in this order.
ELASTIC_KEY_HEADER = {"zip": "DEF", "enc": "A128CBC-HS256"}
DEFAULT_MAX_TOKEN_SIZE = DEFAULT_MAX_BODY_SIZE

#: What a key set may be given as: a mapping, its JSON text, or another manager.
JWKSInput = Union[Mapping[str, Any], str, bytes, "JWKSManager"]


class _Key:
    """One parsed RSA JWK: its exported members plus ready-to-use `cryptography` objects.

    Refused at load: anything no operation here may use (`use` other than ``enc``, `key_ops`
    with neither an encrypt nor a decrypt operation) and numbers that do not make a sound
    RSA key. A key whose `key_ops` allow one direction only loads, and is skipped for the
    other: `encrypts` and `decrypts` say which it serves.
    """

    __slots__ = (
        "alg",
        "decrypts",
        "encrypts",
        "jwk",
        "kid",
        "length",
        "private_key",
        "public_key",
        "use",
    )

    def __init__(self, jwk: Mapping[str, Any], position: str) -> None:
        if not isinstance(jwk, Mapping):
            raise InvalidJWKSError(f"{position} is not a JSON object")
        kid = jwk.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidJWKSError(f"{position} has no 'kid'; every key needs a non-empty kid")
        where = f"{position} (kid {kid!r})"
        if jwk.get("kty") != "RSA":
            raise InvalidJWKSError(f"{where} has kty {jwk.get('kty')!r}; only RSA keys are used")
        alg = jwk.get("alg", DEFAULT_ALG)
        if not isinstance(alg, str) or alg not in KEY_MANAGEMENT_ALGORITHMS:
            raise InvalidJWKSError(f"{where} has alg {alg!r}; use RSA-OAEP or RSA-OAEP-256")
        use = jwk.get("use", "enc")
        if use != "enc":
            raise InvalidJWKSError(f"{where} has use {use!r}; encryption keys need use 'enc'")
        key_ops = _key_ops(jwk, where)
        present = [m for m in PRIVATE_MEMBERS if m in jwk]
        if present and len(present) != len(PRIVATE_MEMBERS):
            raise InvalidJWKSError(
                f"{where} has only some private members ({', '.join(present)}); "
                "a private key needs all of d, p, q, dp, dq, qi"
            )
        members: dict[str, Any] = {"kty": "RSA", "kid": kid, "use": use, "alg": alg}
        for name in (*RSA_PUBLIC_NUMBERS, *present):
            value = jwk.get(name)
            if not isinstance(value, str):
                raise InvalidJWKSError(f"{where} lacks member {name!r} as a base64url string")
            members[name] = value
        self.public_key, self.private_key = _cryptography_keys(members, where, bool(present))
        self.length: int = self.public_key.key_size
        if key_ops is not None:
            members["key_ops"] = key_ops
        self.encrypts: bool = key_ops is None or any(op in key_ops for op in ENCRYPT_OPS)
        self.decrypts: bool = key_ops is None or any(op in key_ops for op in DECRYPT_OPS)
        self.kid: str = kid
        self.alg: str = alg
        self.use: str = use
        self.jwk: dict[str, Any] = members

    @property
    def public_jwk(self) -> dict[str, Any]:
        return {name: _copy(self.jwk[name]) for name in PUBLIC_MEMBERS if name in self.jwk}

    @property
    def private_jwk(self) -> dict[str, Any]:
        return {name: _copy(value) for name, value in self.jwk.items()}

    @property
    def metadata(self) -> dict[str, Any]:
        return {
            "kid": self.kid,
            "kty": "RSA",
            "use": self.use,
            "alg": self.alg,
            "length": self.length,
        }

    def thumbprint(self) -> str:
        """RFC 7638 SHA-256 thumbprint, base64url (of kty, e and n only)."""
        return thumbprint(self.jwk)

    def __repr__(self) -> str:
        private = "private" if self.private_key else "public"
        return f"<{private} RSA-{self.length} key {self.kid!r} {self.alg}>"


def _copy(value: Any) -> Any:
    """A member as exported: `key_ops` as a fresh list, so no caller can edit the key's own."""
    return list(value) if isinstance(value, list) else value


def _key_ops(jwk: Mapping[str, Any], where: str) -> list[str] | None:
    """The key's `key_ops` (RFC 7517 4.3), checked; None when it declares none."""
    if "key_ops" not in jwk:
        return None
    key_ops = jwk["key_ops"]
    if not isinstance(key_ops, list) or not all(isinstance(op, str) for op in key_ops):
        raise InvalidJWKSError(f"{where} has key_ops that are not a list of strings")
    if len(set(key_ops)) != len(key_ops):
        raise InvalidJWKSError(f"{where} lists an operation twice in key_ops")
    if not any(op in key_ops for op in (*ENCRYPT_OPS, *DECRYPT_OPS)):
        raise InvalidJWKSError(
            f"{where} has key_ops {key_ops!r}, none of {', '.join(ENCRYPT_OPS + DECRYPT_OPS)}; "
            "request_crypto keys only wrap and unwrap keys"
        )
    return list(key_ops)


def _cryptography_keys(
    members: dict[str, str], where: str, private: bool
) -> tuple[rsa.RSAPublicKey, rsa.RSAPrivateKey | None]:
    """The key objects; the public numbers are checked before any private-key work."""
    names = (*RSA_PUBLIC_NUMBERS, *(PRIVATE_MEMBERS if private else ()))
    numbers = {name: _integer(members, name, where) for name in names}
    public = rsa.RSAPublicNumbers(numbers["e"], numbers["n"])
    _check_public_numbers(public, where)
    try:
        if not private:
            return public.public_key(), None
        # cryptography checks p*q == n, that p and q are prime, and dp, dq, qi against d.
        private_key = rsa.RSAPrivateNumbers(
            numbers["p"],
            numbers["q"],
            numbers["d"],
            numbers["dp"],
            numbers["dq"],
            numbers["qi"],
            public,
        ).private_key()
        return private_key.public_key(), private_key
    except Exception:  # noqa: S110 - cryptography raises several kinds: one error below
        pass
    # Raised outside the handler: the library's exception (as __context__) may quote numbers.
    raise InvalidJWKSError(f"{where} is not a valid RSA key (its numbers do not form a key pair)")


def _integer(members: dict[str, str], name: str, where: str) -> int:
    try:
        raw = b64url_decode(members[name], name)
    except MalformedBodyError:
        raw = b""
    if not raw:  # raised here: no __context__ quoting the member
        raise InvalidJWKSError(f"{where} has member {name!r} that is not a base64url integer")
    return int.from_bytes(raw, "big")


def _check_public_numbers(numbers: rsa.RSAPublicNumbers, where: str) -> None:
    """Refuse a modulus or exponent that would load but fail (or be weak) when used."""
    bits = numbers.n.bit_length()
    if bits < MIN_KEY_SIZE or bits > MAX_KEY_SIZE:
        raise InvalidJWKSError(
            f"{where} is {bits} bits; keys must be {MIN_KEY_SIZE} to {MAX_KEY_SIZE} bits"
        )
    if numbers.n % 2 == 0:
        raise InvalidJWKSError(f"{where} has an even modulus n; an RSA modulus is odd")
    if numbers.e < 3 or numbers.e % 2 == 0 or numbers.e >= numbers.n:
        raise InvalidJWKSError(
            f"{where} has an unusable public exponent e; use an odd e >= 3 (usually 65537)"
        )


def load_jwks_document(
    jwks: Mapping[str, Any] | str | bytes, *, source: str = "the key set"
) -> Mapping[str, Any]:
    """The key-set document, from JSON text or as given, checked to be ``{"keys": [...]}``.

    `source` names it in errors (a file path, say). Nothing is chained to the error: a
    JSONDecodeError (as __context__) would hold the whole text, private members included.
    """
    document: Any = jwks
    if isinstance(jwks, (str, bytes, bytearray)):
        try:
            document = json.loads(jwks)
        except (ValueError, RecursionError):
            document = None
        if document is None:
            raise InvalidJWKSError(f"{source} is not valid JSON; is it a key set?")
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise InvalidJWKSError(f'{source} is not a key set: a JSON object {{"keys": [...]}}')
    return document


def public_halves(document: Mapping[str, Any]) -> dict[str, Any]:
    """A checked key-set document without private members: what a sender needs.

    Building an RSA private key validates it (~20-50 ms each), so code that only encrypts,
    or only reads kids, should not pay for it; nor keep the private numbers in memory.
    """
    return {
        "keys": [
            {m: jwk[m] for m in PUBLIC_MEMBERS if m in jwk} if isinstance(jwk, Mapping) else jwk
            for jwk in document["keys"]
        ]
    }


class _HasKid(Protocol):
    kid: str


_ParsedKey = TypeVar("_ParsedKey", bound=_HasKid)


def parse_keys(
    jwks: Mapping[str, Any] | str | bytes, make: Callable[[Mapping[str, Any], str], _ParsedKey]
) -> dict[str, _ParsedKey]:
    """Every key of a set, each built by `make(jwk, position)`, by kid; kids must be unique.

    One loop for every kind of set (encryption here, signing in `keys.signing`), so each
    refuses a repeated kid the same way.
    """
    document = load_jwks_document(jwks)
    keys: dict[str, _ParsedKey] = {}
    for index, jwk in enumerate(document["keys"]):
        key = make(jwk, f"key #{index}")
        if key.kid in keys:
            raise InvalidJWKSError(f"kid {key.kid!r} appears twice in the key set")
        keys[key.kid] = key
    return keys


def parse_jwks(jwks: Mapping[str, Any] | str | bytes) -> dict[str, _Key]:
    """Validate an encryption key set and parse every key; kids must be unique."""
    return parse_keys(jwks, _Key)


def _generate(kid: str, size: int, alg: str, use: str) -> dict[str, str]:
    validate_kid(kid)
    if not isinstance(size, int) or size < MIN_KEY_SIZE:
        raise InvalidArgumentError(f"key size {size!r} refused: use at least {MIN_KEY_SIZE} bits")
    if not isinstance(alg, str) or alg not in KEY_MANAGEMENT_ALGORITHMS:
        raise InvalidArgumentError(f"alg {alg!r} refused: use RSA-OAEP or RSA-OAEP-256")
    key = rsa.generate_private_key(65537, size).private_numbers()
    public = key.public_numbers
    numbers = {"e": public.e, "n": public.n, "d": key.d, "p": key.p, "q": key.q}
    numbers.update(dp=key.dmp1, dq=key.dmq1, qi=key.iqmp)
    members = {"kty": "RSA", "kid": kid, "use": use, "alg": alg}
    members.update(
        (name, b64url_uint(numbers[name])) for name in (*RSA_PUBLIC_NUMBERS, *PRIVATE_MEMBERS)
    )
    return members


class JWKSManager:
    """A key set held by kid: the general store `JWKManager` builds on, as in the original.

    Built from another manager, it starts from a snapshot of that manager's keys: later
    `add_key`/`remove_key` on either one do not show in the other. (`RequestDecryptor` given
    a `JWKManager` uses that very manager, so it does see later changes.)
    """

    def __init__(self, jwks: JWKSInput | None = None) -> None:
        self._lock = threading.Lock()
        if isinstance(jwks, JWKSManager):
            self._keys: dict[str, _Key] = jwks._keys
        else:
            self._keys = parse_jwks(jwks) if jwks is not None else {}

    def add_key(
        self, kid: str, *, size: int = MIN_KEY_SIZE, alg: str = DEFAULT_ALG, use: str = "enc"
    ) -> dict[str, str]:
        """Generate a new RSA key under `kid`; returns its public JWK.

        `kid` must meet `kids.validate_kid` (keys loaded or inserted need only a non-empty
        kid, so sets made elsewhere keep loading). `use` is kept for parity with the
        original's ``addKey(kid, modulus, use)``, but these keys only encrypt: anything but
        ``"enc"`` is refused before a key is generated.
        """
        if use != "enc":
            raise InvalidArgumentError(
                f"use must be 'enc': request_crypto keys only encrypt (got {use!r})"
            )
        if kid in self:
            raise InvalidArgumentError(f"kid {kid!r} is already in the key set; pick a new kid")
        key = _Key(_generate(kid, size, alg, use), "the new key")
        self._store(key)
        return key.public_jwk

    def insert_key(self, jwk: Mapping[str, Any]) -> None:
        """Add an existing JWK (public or private) to the set."""
        self._store(_Key(jwk, "the inserted key"))

    def _store(self, key: _Key) -> None:
        with self._lock:
            if key.kid in self._keys:
                raise InvalidArgumentError(f"kid {key.kid!r} is already in the key set")
            self._keys = {**self._keys, key.kid: key}

    def remove_key(self, kid: str) -> None:
        """Drop `kid` from the set; MissingKidError if it is not there."""
        with self._lock:
            if kid not in self:
                raise MissingKidError(kid)
            self._keys = {k: v for k, v in self._keys.items() if k != kid}

    def kids(self) -> list[str]:
        """Kids in set order; the last one is the newest."""
        return list(self._keys)

    def has_private_key(self, kid: str) -> bool:
        """Whether `kid` is present with its private half."""
        key = self._get(kid)
        return key is not None and key.private_key is not None

    def can_encrypt(self, kid: str) -> bool:
        """Whether `kid` may wrap a key: present, and its `key_ops` (if any) allow it."""
        key = self._get(kid)
        return key is not None and key.encrypts

    def can_decrypt(self, kid: str) -> bool:
        """Whether `kid` may unwrap: a private key whose `key_ops` (if any) allow it."""
        key = self._keys.get(kid) if isinstance(kid, str) else None  # `_get`, on every body
        return key is not None and key.private_key is not None and key.decrypts

    def public_jwk(self, kid: str) -> dict[str, Any] | None:
        """The public half of `kid` as a JWK, or None if absent."""
        key = self._get(kid)
        return key.public_jwk if key else None

    def get_public_jwk(self, kid: str) -> dict[str, Any] | None:
        """`public_jwk`, under the original's name (`getPublicJWK`)."""
        return self.public_jwk(kid)

    def get_private_jwk(self, kid: str) -> dict[str, Any] | None:
        """The whole JWK of `kid`, private members included, or None if absent."""
        key = self._get(kid)
        return key.private_jwk if key else None

    def get_public_jwks(self) -> dict[str, list[dict[str, Any]]]:
        """The public halves of the whole set: what /.well-known/jwks.json publishes."""
        return {"keys": [key.public_jwk for key in self._keys.values()]}

    def get_private_jwks(self) -> dict[str, list[dict[str, Any]]]:
        """The whole set, private members included: what a private key-set file holds."""
        return {"keys": [key.private_jwk for key in self._keys.values()]}

    def thumbprint(self, kid: str) -> str | None:
        """The RFC 7638 SHA-256 thumbprint of `kid`, base64url, or None if absent."""
        key = self._get(kid)
        return key.thumbprint() if key else None

    def key_metadata(self, kid: str) -> dict[str, Any] | None:
        """The `key` part of JWK metadata (kid, kty, use, alg, length) for one kid."""
        key = self._get(kid)
        return key.metadata if key else None

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, kid: object) -> bool:
        return self._get(kid) is not None

    def _get(self, kid: object) -> _Key | None:
        """The key for `kid`; None for an absent kid or one that is not even a string."""
        return self._keys.get(kid) if isinstance(kid, str) else None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list(self._keys.values())!r})"


class JWKManager(JWKSManager):
    """Encryption keys for request_crypto: wraps and unwraps data in a compact JWE by kid."""

    def add_key(  # type: ignore[override]
        self, kid: str, *, size: int = MIN_KEY_SIZE, alg: str = DEFAULT_ALG
    ) -> dict[str, str]:
        """Generate a new RSA key under `kid`; returns its public JWK."""
        return super().add_key(kid, size=size, alg=alg, use="enc")

    def encrypt(self, kid: str, data: bytes) -> str:
        """The `elastic` wrapped key: a compact JWE of `data` (DEFLATE, A128CBC-HS256)."""
        key = self._key_to_encrypt_to(kid, data)
        header = {**ELASTIC_KEY_HEADER, "alg": key.alg, "kid": kid}
        return encrypt_compact(key.public_key, header, bytes(data))

    def encrypt_jwe(
        self, kid: str, data: bytes, *, enc: str = "A256GCM", cty: str | None = None
    ) -> str:
        """A standard compact JWE without compression: the `jwe` wire format.

        `cty` (`JWT` for a signed body) is written last in the header, as jose writes it.
        """
        if enc not in CONTENT_ENCRYPTION_ALGORITHMS:
            raise InvalidArgumentError(
                f"enc {enc!r} refused: use one of {', '.join(CONTENT_ENCRYPTION_ALGORITHMS)}"
            )
        key = self._key_to_encrypt_to(kid, data)
        header = {"alg": key.alg, "enc": enc, "kid": kid}
        if cty is not None:
            header["cty"] = cty
        return encrypt_compact(key.public_key, header, bytes(data))

    def _key_to_encrypt_to(self, kid: str, data: bytes) -> _Key:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidArgumentError(f"data to encrypt must be bytes, not {type(data).__name__}")
        key = self._get(kid)
        if key is None:
            raise MissingKidError(kid)
        if not key.encrypts:
            raise InvalidArgumentError(
                f"key {kid!r} is not for encryption: its key_ops {key.jwk['key_ops']!r} "
                f"include neither {' nor '.join(ENCRYPT_OPS)}; encrypt to another kid"
            )
        return key

    def decrypt(
        self,
        token: str | bytes,
        *,
        max_token_size: int = DEFAULT_MAX_TOKEN_SIZE,
        max_plaintext: int = DEFAULT_MAX_TOKEN_SIZE,
    ) -> JWKDecryptResult:
        """Decrypt a compact JWE with the private key its `kid` names.

        A JWE without a kid is opened with the one private key that fits its `alg`.
        """
        return open_compact(
            self,
            token,
            what="the JWE",
            max_token_size=max_token_size,
            max_plaintext=max_plaintext,
            kid_optional=True,
        )

    def unwrap(self, kid: str, alg: str, encrypted_key: bytes) -> bytes:
        """RSA-OAEP decrypt a wrapped content key with `kid` (see `KeySource.unwrap`)."""
        key = self._keys.get(kid) if isinstance(kid, str) else None  # `_get`, on every body
        if key is None or key.private_key is None or not key.decrypts:
            raise NoKeyFoundError(kid)
        if alg != key.alg:
            raise UnsupportedAlgorithmError(
                f"the body uses {alg} but key {key.kid!r} is declared for {key.alg}"
            )
        try:
            return key.private_key.decrypt(encrypted_key, KEY_MANAGEMENT_ALGORITHMS[alg])
        except Exception:  # noqa: S110 - any RSA failure is the one error below
            pass
        raise DecryptionError()  # outside the handler: no __context__ naming the step

    def health(self) -> None:
        """Keys in memory are always available."""

    def close(self) -> None:
        """Nothing to release: the keys are plain memory."""


def create_jwk_manager(jwks: JWKSInput | None = None) -> JWKManager:
    """The original's factory name (`createJWKManager`)."""
    return JWKManager(jwks)
