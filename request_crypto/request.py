"""RequestEncryptor and RequestDecryptor: the sender's and the receiver's whole job.

Both dispatch through `formats.REGISTRY` (`elastic`, JavaScript-compatible; `jwe`, one
standard compact JWE). The decryptor applies the `Limits` here, once for every format: the
body's size before the format sees it, the JSON budget to the plaintext it returns.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, cast, overload

from ._jose import decrypt_compact, encrypt_direct
from ._json import dumps_utf8, loads_payload
from ._workers import Workers, in_thread, run_batch
from .errors import (
    InvalidArgumentError,
    MissingKidError,
    NoKeyFoundError,
    PayloadTooLargeError,
    RequestCryptoError,
    SignatureError,
    UnsignedBodyError,
)
from .formats import REGISTRY, Format, Opened, detect_format
from .formats.elastic import ELASTIC
from .formats.jwe import JWE
from .keyfile import read_jwks
from .keys.jwks import JWKManager, JWKSInput, JWKSManager, load_jwks_document, public_halves
from .keys.signing import (
    DIRECT_ALG,
    DIRECT_ENC,
    DirectKeySet,
    SigningKey,
    SigningKeySet,
    VerificationKeys,
    key_set_kind,
)
from .keys.source import JWKMetadata, KeySource, is_key_source, public_set
from .limits import (
    DEFAULT_LIMITS,
    DEFAULT_MAX_BODY_SIZE,
    DEFAULT_MAX_INFLATED_SIZE,
    DEFAULT_MAX_JSON_DEPTH,
    DEFAULT_MAX_JSON_VALUES,
    DEFAULT_MAX_WRAPPED_KEY_SIZE,
    Limits,
)
from .nested import (
    DEFAULT_EXPIRES_IN,
    JWT_CONTENT_TYPE,
    Signer,
    SignerInfo,
    Verifier,
    describe_unverified,
    is_signed_header,
    signer_info,
)

__all__ = [
    "DEFAULT_MAX_BODY_SIZE",
    "DEFAULT_MAX_INFLATED_SIZE",
    "DEFAULT_MAX_JSON_DEPTH",
    "DEFAULT_MAX_JSON_VALUES",
    "DEFAULT_MAX_WRAPPED_KEY_SIZE",
    "DecryptedRequest",
    "RequestDecryptor",
    "RequestEncryptor",
    "create_request_decryptor",
    "create_request_encryptor",
]


#: What `sign_with=` and `verify_with=` take: a signing set as a document, or as an object,
#: or one key kept outside (`aws-kms:...`, `AWSKMSSigningKey`).
SigningKeysInput = Mapping[str, Any] | str | bytes | SigningKeySet | SigningKey
VerifyKeysInput = Mapping[str, Any] | str | bytes | VerificationKeys


def _direct_set(jwks: object) -> DirectKeySet | None:
    """The `dir` secrets when `jwks` is a set of them (never for an RSA set)."""
    if isinstance(jwks, DirectKeySet):
        return jwks
    if isinstance(jwks, (Mapping, str, bytes)) and key_set_kind(jwks) == "dir":
        return DirectKeySet(jwks)
    return None


def _as_format(value: Format | str) -> Format:
    try:
        return Format(value)
    except ValueError:
        raise InvalidArgumentError(f"format {value!r} is unknown: use 'elastic' or 'jwe'") from None


def _limits(limits: Limits | None, **changes: int | None) -> Limits:
    """`limits` (default: DEFAULT_LIMITS) with the keywords given; validated by Limits."""
    if limits is not None and not isinstance(limits, Limits):
        raise InvalidArgumentError(f"limits must be a Limits object, not {type(limits).__name__}")
    given = {name: value for name, value in changes.items() if value is not None}
    return replace(limits or DEFAULT_LIMITS, **given) if given else limits or DEFAULT_LIMITS


def _as_source(jwks: JWKSInput | KeySource) -> KeySource:
    """A KeySource as given (a JWKManager is one); a set given as data becomes a JWKManager."""
    if isinstance(jwks, (JWKManager, Mapping, str, bytes, JWKSManager)):
        return jwks if isinstance(jwks, JWKManager) else JWKManager(jwks)
    if is_key_source(jwks):
        return jwks
    return JWKManager(cast(JWKSInput, jwks))  # refuses it with the message for a bad key set


def _path_given(jwks: object) -> bool:
    """A path where a key set was expected: a PathLike, or text that cannot be JSON."""
    if isinstance(jwks, os.PathLike):
        return True
    return isinstance(jwks, str) and not jwks.lstrip().startswith(("{", "["))


def _public_only(jwks: JWKSInput) -> dict[str, Any]:
    """Drop private members before parsing: a sender never needs them, nor their validation."""
    if isinstance(jwks, JWKSManager):
        return jwks.get_public_jwks()
    return public_halves(load_jwks_document(jwks))


@dataclass(frozen=True)
class DecryptedRequest:
    """A decrypted body with what a receiver logs and stores beside it."""

    payload: Any = field(repr=False)
    format: Format
    metadata: JWKMetadata
    #: Who signed the body, once its signature and claims verified; None if unsigned.
    signer: SignerInfo | None = None

    @property
    def kid(self) -> str:
        """The kid of the key that opened the body."""
        return str(self.metadata.key["kid"])


class RequestEncryptor:
    """The sender's side: encrypts JSON payloads to a kid of a public key set."""

    def __init__(
        self,
        jwks: JWKSInput | DirectKeySet,
        *,
        format: Format | str | None = None,
        sign_with: SigningKeysInput | None = None,
        sign_kid: str | None = None,
        issuer: str | None = None,
        audience: str | None = None,
        expires_in: int = DEFAULT_EXPIRES_IN,
    ) -> None:
        """`format` defaults to `elastic`, or `jwe` when signing or given a `dir` set.

        With `sign_with` (the sender's private signing set) each payload, a JSON object,
        is signed as a JWT (`iat`, `exp` `expires_in` seconds later, a random `jti`, and
        `iss`/`aud` from `issuer`/`audience`) and sent inside the `jwe` body (`cty: JWT`).
        `jwks` may be a set of `dir` secrets: the body is then encrypted with the secret.
        """
        if _path_given(jwks):
            raise InvalidArgumentError(
                f"{str(jwks)[:80]!r} is not a key set: to read one from a file, use "
                "RequestEncryptor.from_file(path)"
            )
        self._direct = _direct_set(jwks)
        self._signer = (
            None
            if sign_with is None
            else Signer(
                sign_with, kid=sign_kid, issuer=issuer, audience=audience, expires_in=expires_in
            )
        )
        wanted = None if format is None else _as_format(format)
        if wanted is Format.ELASTIC and (self._signer or self._direct):
            raise InvalidArgumentError(
                "the elastic format has no signatures and no dir secrets: use format='jwe'"
            )
        self.format = wanted or (Format.JWE if self._signer or self._direct else Format.ELASTIC)
        self._keys = JWKManager(None if self._direct else _public_only(jwks))  # type: ignore[arg-type]
        self._workers = Workers()
        self._async_workers = Workers()

    @classmethod
    def from_file(
        cls, path: str | os.PathLike[str], *, format: Format | str | None = None, **signing: Any
    ) -> RequestEncryptor:
        """An encryptor for the public halves of the key-set file at `path`.

        `signing`: the constructor's sign_with, sign_kid, issuer, audience and expires_in.
        """
        return cls(read_jwks(path), format=format, **signing)

    @property
    def signer(self) -> Signer | None:
        """The sender's signing key and claims, or None when bodies are not signed."""
        return self._signer

    @property
    def keys(self) -> JWKManager:
        """The public halves only: a private set given here leaves no private member behind."""
        return self._keys

    def kids(self) -> list[str]:
        """The kids this encryptor can encrypt to."""
        return self._direct.kids() if self._direct else self._keys.kids()

    def encrypt(self, kid: str, payload: Any) -> str:
        """Encrypt any JSON value to `kid` (signed first, with a signer); returns the body."""
        if kid not in (self._direct or self._keys):
            raise MissingKidError(kid)
        cty = None if self._signer is None else JWT_CONTENT_TYPE
        data = dumps_utf8(payload) if self._signer is None else self._signer.sign(payload).encode()
        if self._direct is not None:
            header = {"alg": DIRECT_ALG, "enc": DIRECT_ENC, "kid": kid}
            header.update({"cty": cty} if cty else {})
            return encrypt_direct(self._direct.content_key(kid), header, data)
        if cty is not None:
            return self._keys.encrypt_jwe(kid, data, cty=cty)
        return REGISTRY[self.format].seal(self._keys, kid, data)

    @overload
    def encrypt_many(
        self,
        items: Iterable[tuple[str, Any]],
        *,
        workers: int | None = ...,
        return_exceptions: Literal[False] = ...,
    ) -> list[str]: ...
    @overload
    def encrypt_many(
        self,
        items: Iterable[tuple[str, Any]],
        *,
        workers: int | None = ...,
        return_exceptions: Literal[True],
    ) -> list[str | RequestCryptoError]: ...
    def encrypt_many(
        self,
        items: Iterable[tuple[str, Any]],
        *,
        workers: int | None = None,
        return_exceptions: bool = False,
    ) -> list[Any]:
        """Encrypt `(kid, payload)` pairs on `workers` threads (default: one per core).

        Results come back in order. If any item fails, BatchError is raised carrying every
        result (`.results`) and the failures by index (`.failures`); with
        `return_exceptions=True` the failed positions hold their exception instead.
        """
        return run_batch(
            self._workers, lambda item: self.encrypt(*item), items, workers, return_exceptions
        )

    async def encrypt_async(self, kid: str, payload: Any) -> str:
        """`encrypt` on a worker thread, so an event loop is never blocked by PBKDF2 or RSA."""
        return await in_thread(self._async_workers, self.encrypt, kid, payload)

    def __repr__(self) -> str:
        return f"RequestEncryptor(kids={self.kids()!r}, format={self.format.value!r})"


class RequestDecryptor:
    """The receiver's side: decrypts bodies of either format with a private key set."""

    def __init__(
        self,
        jwks: JWKSInput | KeySource,
        *,
        limits: Limits | None = None,
        max_body_size: int | None = None,
        max_wrapped_key_size: int | None = None,
        max_inflated_size: int | None = None,
        max_json_values: int | None = None,
        max_json_depth: int | None = None,
        verify_with: VerifyKeysInput | None = None,
        issuer: str | None = None,
        audience: str | None = None,
        leeway: float = 0,
        require_signature: bool | None = None,
    ) -> None:
        """`jwks`: a private set (as data or a JWKManager) or any `KeySource` (an HSM, a KMS,
        merged sources), or a set of `dir` secrets (then only `dir` bodies open); `limits`
        (default: DEFAULT_LIMITS); a `max_*` keyword replaces a field.

        `verify_with` (the senders' public signing set, or a `RemoteJWKS`) verifies signed
        bodies and checks `iss`/`aud` against `issuer`/`audience` with `leeway` seconds of
        clock skew; `require_signature` (default: whether `verify_with` is given) refuses
        unsigned bodies with UnsignedBodyError.
        """
        self._direct = _direct_set(jwks)
        self._keys: KeySource = self._direct if self._direct is not None else _as_source(jwks)
        self._verifier = (
            None
            if verify_with is None
            else Verifier(verify_with, issuer=issuer, audience=audience, leeway=leeway)
        )
        if (issuer or audience) and self._verifier is None:
            raise InvalidArgumentError(
                "issuer and audience are checked on signed bodies: give verify_with"
            )
        self.require_signature = (
            self._verifier is not None if require_signature is None else require_signature
        )
        self._workers = Workers()
        self._async_workers = Workers()
        #: What one body may cost (see `Limits`).
        self.limits = _limits(
            limits,
            max_body_size=max_body_size,
            max_wrapped_key_size=max_wrapped_key_size,
            max_inflated_size=max_inflated_size,
            max_json_values=max_json_values,
            max_json_depth=max_json_depth,
        )

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        *,
        password: bytes | None = None,
        limits: Limits | None = None,
        max_body_size: int | None = None,
        max_wrapped_key_size: int | None = None,
        max_inflated_size: int | None = None,
        max_json_values: int | None = None,
        max_json_depth: int | None = None,
        verify_with: VerifyKeysInput | None = None,
        issuer: str | None = None,
        audience: str | None = None,
        leeway: float = 0,
        require_signature: bool | None = None,
    ) -> RequestDecryptor:
        """A decryptor for the key-set file at `path` (`password` if it is encrypted at rest);
        other keywords as for the constructor."""
        return cls(
            read_jwks(path, password=password),
            limits=limits,
            max_body_size=max_body_size,
            max_wrapped_key_size=max_wrapped_key_size,
            max_inflated_size=max_inflated_size,
            max_json_values=max_json_values,
            max_json_depth=max_json_depth,
            verify_with=verify_with,
            issuer=issuer,
            audience=audience,
            leeway=leeway,
            require_signature=require_signature,
        )

    @property
    def keys(self) -> JWKManager:
        """The in-memory key set this decryptor opens bodies with (see `source` otherwise)."""
        if not isinstance(self._keys, JWKManager):
            raise InvalidArgumentError(
                f"this decryptor's keys live in {self._keys!r}, not in memory; use .source"
            )
        return self._keys

    @property
    def source(self) -> KeySource:
        """Whatever holds the private keys: a JWKManager, an HSM or KMS source, merged ones."""
        return self._keys

    @property
    def verifier(self) -> Verifier | None:
        """How signed bodies are verified, or None when this decryptor has no senders' keys."""
        return self._verifier

    def decrypt(self, body: str | bytes) -> Any:
        """Decrypt a body of either format and return the JSON value it carries."""
        keys, limits = self._keys, self.limits
        common = JWE.parse_common(keys, body, limits)
        if common is None:
            # The canonical `elastic` body, as `_open_general` opens it, without the result
            # objects; an `elastic` payload is never signed, so `_payload` would only parse it.
            opened = None if self.require_signature else ELASTIC.decrypt_common(keys, body, limits)
            if opened is not None:
                return loads_payload(
                    opened.plaintext,
                    max_values=limits.max_json_values,
                    max_depth=limits.max_json_depth,
                )
            format, general = self._open_general(body, elastic_tried=True)
            return self._payload(format, general.result.header, general.plaintext)[0]
        # The common `jwe` body, as `_open` opens it, without the result objects `decrypt`
        # would throw away (Opened, JWKDecryptResult, SignerInfo: ~0.5 us each) or the key's
        # metadata dict.
        header = common.header
        kid = header["kid"]  # a common body names its key (a string: see `parse_common`)
        if not keys.can_decrypt(kid):  # as `decrypt_parsed` refuses it
            raise NoKeyFoundError(kid)
        plaintext = decrypt_compact(common, keys, kid, max_plaintext=limits.max_inflated_size)
        if "cty" in header or self.require_signature:  # maybe signed: `_payload` decides
            return self._payload(Format.JWE, header, plaintext)[0]
        return loads_payload(
            plaintext, max_values=limits.max_json_values, max_depth=limits.max_json_depth
        )

    def decrypt_request(self, body: str | bytes) -> DecryptedRequest:
        """Decrypt and also report the format and the key metadata (for logs and storage)."""
        format, opened = self._open(body)
        payload, key = self._payload(format, opened.result.header, opened.plaintext)
        signer = None if key is None else signer_info(key, payload)
        return DecryptedRequest(payload, format, opened.metadata, signer)

    def _open(self, body: str | bytes) -> tuple[Format, Opened]:
        """Size, detect and open (authenticated decryption): nothing verified yet.

        A common `jwe` body (see `JweFormat.open_common`) is opened in one straight line:
        it is within the size limit and has five parts, so it has answered the size and
        format steps; everything after the opening is the same for every body.
        """
        opened = JWE.open_common(self._keys, body, self.limits)
        if opened is not None:
            return Format.JWE, opened
        return self._open_general(body)

    def _open_general(
        self, body: str | bytes, *, elastic_tried: bool = False
    ) -> tuple[Format, Opened]:
        """`_open` of a body the `jwe` common path declined: the canonical `elastic` body in
        one straight line (unless `elastic_tried`: it declined), else size, detect, then the
        format's open."""
        if not self.require_signature and not elastic_tried:  # else refused below
            opened = ELASTIC.open_common(self._keys, body, self.limits)
            if opened is not None:
                return Format.ELASTIC, opened
        format = self._check(body)
        if self.require_signature and format is Format.ELASTIC:
            raise UnsignedBodyError("the elastic format has no signatures")  # before its PBKDF2
        return format, REGISTRY[format].open(self._keys, body, self.limits)

    def _payload(
        self, format: Format, header: Mapping[str, Any], plaintext: bytes | bytearray
    ) -> tuple[Any, SigningKey | None]:
        """Verify a signed body (or refuse an unsigned one if required), then parse it.

        Returns the payload (a signed body's claims set) and the key that verified it.
        """
        if format is Format.JWE and is_signed_header(header):
            if self._verifier is None:
                raise SignatureError(
                    "the body is a signed JWT (cty JWT) and this decryptor has no verification "
                    "keys: give verify_with (the sender's public signing set)"
                )
            return self._verifier.verified_claims(bytes(plaintext), self.limits)
        if self.require_signature:
            raise UnsignedBodyError(f"{format.value} format")
        limits = self.limits
        payload = loads_payload(
            plaintext, max_values=limits.max_json_values, max_depth=limits.max_json_depth
        )
        return payload, None

    def get_jwk_metadata(self, body: str | bytes) -> JWKMetadata:
        """Which key a body is for, once the whole body is authenticated and decrypted.

        The JavaScript original authenticates only the wrapped key, so a body with an altered
        payload would still report its key; here it fails as `decrypt` does, at the cost of
        a decrypt (the payload is discarded). A signed body is verified as in `decrypt` when
        this decryptor has verification keys; without, only decrypted: the metadata is the
        receiver's key's, not the sender's (see `describe_signer`).
        """
        format, opened = self._open(body)
        unverifiable = self._verifier is None and format is Format.JWE
        if unverifiable and is_signed_header(opened.metadata.header):
            return opened.metadata
        self._payload(format, opened.result.header, opened.plaintext)
        return opened.metadata

    def describe_signer(self, body: str | bytes) -> dict[str, Any] | None:
        """A signed body's signer (kid, alg) and registered claims; None for an unsigned body.

        With verification keys the signature and claims are checked (failures raise) and
        `verified` is true; without, they are only read, and `verified` is false.
        """
        format, opened = self._open(body)
        if format is not Format.JWE or not is_signed_header(opened.metadata.header):
            return None
        if self._verifier is None:
            return describe_unverified(bytes(opened.plaintext), self.limits)
        signer = self._verifier.verify(bytes(opened.plaintext), self.limits)[1]
        return {"kid": signer.kid, "alg": signer.alg, "verified": True, "claims": signer.claims}

    def _check(self, body: str | bytes) -> Format:
        limit = self.limits.max_body_size
        if isinstance(body, (str, bytes, bytearray)) and len(body) > limit:
            raise PayloadTooLargeError("the body", len(body), limit)
        return detect_format(body)  # also refuses anything that is not str or bytes

    def get_public_component(self, kid: str) -> dict[str, str] | None:
        """The public JWK of `kid` (the original's `getPublicComponent`), or None."""
        return self._keys.public_jwk(kid)

    def get_well_knowns(self) -> dict[str, list[dict[str, str]]]:
        """The public set, for publishing at /.well-known/jwks.json."""
        return public_set(self._keys)

    def decrypt_many(
        self,
        bodies: Iterable[str | bytes],
        *,
        workers: int | None = None,
        return_exceptions: bool = False,
    ) -> list[Any]:
        """Decrypt many bodies on `workers` threads (default: one per core), in order.

        PBKDF2, RSA and AES release the GIL, so threads scale across cores. If any body fails,
        BatchError is raised carrying every result (`.results`) and the failures by index
        (`.failures`); with `return_exceptions=True` failed positions hold their exception.
        """
        return run_batch(self._workers, self.decrypt, bodies, workers, return_exceptions)

    async def decrypt_async(self, body: str | bytes) -> Any:
        """`decrypt` on a worker thread (one per core), so an event loop is never blocked."""
        return await in_thread(self._async_workers, self.decrypt, body)

    def __repr__(self) -> str:
        return f"RequestDecryptor(kids={self._keys.kids()!r})"


def create_request_encryptor(
    jwks: JWKSInput, *, format: Format | str | None = None
) -> RequestEncryptor:
    """The original's factory name (`createRequestEncryptor`)."""
    return RequestEncryptor(jwks, format=format)


def create_request_decryptor(
    jwks: JWKSInput,
    *,
    limits: Limits | None = None,
    max_body_size: int | None = None,
    max_wrapped_key_size: int | None = None,
    max_inflated_size: int | None = None,
    max_json_values: int | None = None,
    max_json_depth: int | None = None,
) -> RequestDecryptor:
    """The original's factory name (`createRequestDecryptor`); keywords as for the class."""
    return RequestDecryptor(
        jwks,
        limits=limits,
        max_body_size=max_body_size,
        max_wrapped_key_size=max_wrapped_key_size,
        max_inflated_size=max_inflated_size,
        max_json_values=max_json_values,
        max_json_depth=max_json_depth,
    )
