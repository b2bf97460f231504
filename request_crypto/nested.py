"""Signed bodies: a JWT signed by the sender, inside the `jwe` format (a nested JWT).

Encryption to the receiver's public key says nothing about the sender: the public key ships
with every sender. So the sender signs the payload as a JWT (`Signer`), the JWT is encrypted as
the `jwe` body with `cty: "JWT"`, and the receiver, once the body is decrypted, verifies the
signature with the sender's key and checks the claims (`Verifier`). A body that only decrypts
is never called verified.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ._b64 import b64url_encode
from ._json import dumps_utf8, loads_payload
from ._jws import read_unverified, sign_compact, verify_compact
from .errors import ClaimsError, InvalidArgumentError, MalformedBodyError, TokenExpiredError
from .keys.signing import SigningKey, SigningKeySet, VerificationKeys
from .keys.uri import open_signing_key
from .limits import Limits

__all__ = [
    "DEFAULT_EXPIRES_IN",
    "JWT_CONTENT_TYPE",
    "SIGNER_CLAIMS",
    "Signer",
    "SignerInfo",
    "Verifier",
    "describe_unverified",
    "is_signed_header",
    "signer_info",
]

#: A signed body's lifetime unless the sender says otherwise: one hour.
DEFAULT_EXPIRES_IN = 3600
#: The JWE `cty` of a signed body (RFC 7519 §5.2).
JWT_CONTENT_TYPE = "JWT"
#: Claims the signer sets itself; a payload carrying one is refused (say issuer=, ...).
SIGNER_CLAIMS = ("iat", "exp", "jti", "iss", "aud")
#: Registered claims reported beside the signer (RFC 7519 §4.1).
_REGISTERED = ("iss", "sub", "aud", "exp", "nbf", "iat", "jti")


def is_signed_header(header: Mapping[str, Any]) -> bool:
    """Whether a JWE header announces a signed JWT inside (`cty: "JWT"`, any case)."""
    cty = header.get("cty")
    return isinstance(cty, str) and cty.upper() == JWT_CONTENT_TYPE


@dataclass(frozen=True)
class SignerInfo:
    """Who signed a verified body: the key's kid and alg, and the registered claims."""

    kid: str
    alg: str
    iss: str | None
    jti: str | None
    claims: dict[str, Any] = field(default_factory=dict)

    @property
    def exp(self) -> float | None:
        """When the token expires (seconds since the epoch), if it says."""
        value = self.claims.get("exp")
        return float(value) if isinstance(value, (int, float)) else None

    def to_dict(self) -> dict[str, Any]:
        """A plain-JSON copy, for logs and storage."""
        return {
            "kid": self.kid,
            "alg": self.alg,
            "iss": self.iss,
            "jti": self.jti,
            "claims": dict(self.claims),
        }


def _registered(claims: Mapping[str, Any]) -> dict[str, Any]:
    return {name: claims[name] for name in _REGISTERED if name in claims}


def signer_info(key: SigningKey, claims: Mapping[str, Any]) -> SignerInfo:
    """The `SignerInfo` of verified `claims`, signed by `key` (see `Verifier.verified_claims`)."""
    return SignerInfo(key.kid, key.alg, claims.get("iss"), claims.get("jti"), _registered(claims))


def describe_unverified(token: bytes | str, limits: Limits) -> dict[str, Any]:
    """The signer's kid and alg and the registered claims, read WITHOUT verifying.

    For `inspect` when no verification keys are given: labelled `"verified": false`, so no
    one mistakes it for a checked sender.
    """
    header, payload = read_unverified(token)
    claims = loads_payload(
        payload, max_values=limits.max_json_values, max_depth=limits.max_json_depth
    )
    return {
        "kid": header.get("kid"),
        "alg": header.get("alg"),
        "verified": False,
        "claims": _registered(claims) if isinstance(claims, dict) else {},
    }


class Signer:
    """The sender's key: makes the JWT claims set of a payload and signs it.

    `sign_with` is a signing set (document or `SigningKeySet`) holding a private key (or an
    HS256 secret), or one key kept outside (`aws-kms:...`, or a `SigningKey` such as
    `AWSKMSSigningKey`); `kid` picks one of a set (default: the newest). Each token gets
    `iat`, `exp` (`expires_in` seconds later), a random 128-bit `jti`, and `iss`/`aud` when
    given.
    """

    def __init__(
        self,
        sign_with: Mapping[str, Any] | str | bytes | SigningKeySet | SigningKey,
        *,
        kid: str | None = None,
        issuer: str | None = None,
        audience: str | None = None,
        expires_in: int = DEFAULT_EXPIRES_IN,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(expires_in, int) or isinstance(expires_in, bool) or expires_in < 1:
            raise InvalidArgumentError(f"expires_in {expires_in!r} refused: give seconds >= 1")
        for name, value in (("issuer", issuer), ("audience", audience)):
            if value is not None and (not isinstance(value, str) or not value):
                raise InvalidArgumentError(f"{name} must be a non-empty string")
        self.key: SigningKey = _signing_key(sign_with, kid)
        self.issuer = issuer
        self.audience = audience
        self.expires_in = expires_in
        self._clock = clock

    @property
    def kid(self) -> str:
        """The kid the tokens are signed with."""
        return self.key.kid

    def claims(self, payload: Any) -> dict[str, Any]:
        """The JWT claims set of `payload` (a JSON object) plus the signer's own claims."""
        if not isinstance(payload, Mapping):
            raise InvalidArgumentError(
                f"a signed payload must be a JSON object (it becomes the JWT claims set), "
                f"not {type(payload).__name__}"
            )
        taken = [name for name in SIGNER_CLAIMS if name in payload]
        if taken:
            raise InvalidArgumentError(
                f"the payload carries {', '.join(taken)}, which the signer sets: pass "
                "issuer=, audience= or expires_in= instead"
            )
        now = int(self._clock())
        claims = dict(payload)
        claims.update(iat=now, exp=now + self.expires_in, jti=b64url_encode(os.urandom(16)))
        if self.issuer is not None:
            claims["iss"] = self.issuer
        if self.audience is not None:
            claims["aud"] = self.audience
        return claims

    def sign(self, payload: Any) -> str:
        """The compact JWS (a JWT) of `payload`'s claims set."""
        return sign_compact(self.key, dumps_utf8(self.claims(payload)))

    def __repr__(self) -> str:
        return f"Signer(kid={self.kid!r}, alg={self.key.alg!r}, issuer={self.issuer!r})"


def _signing_key(
    sign_with: Mapping[str, Any] | str | bytes | SigningKeySet | SigningKey, kid: str | None
) -> SigningKey:
    """The one key given (an object, or `aws-kms:...`), else `kid` (or the newest) of a set."""
    if isinstance(sign_with, SigningKey):
        return sign_with
    outside = open_signing_key(sign_with)
    if outside is not None:
        return outside
    keys = sign_with if isinstance(sign_with, SigningKeySet) else SigningKeySet(sign_with)
    return keys.signing_key(kid)


class Verifier:
    """The receiver's check of a signed body: the signature, then the claims.

    `keys` is a signing set (document, `SigningKeySet`), any `VerificationKeys` (a
    `RemoteJWKS`, an `AWSKMSSigningKey`) or an `aws-kms:...` URI. `exp` is required; `nbf`
    and `exp` are checked with `leeway` seconds of clock skew; `iss` and `aud` must match when
    `issuer`/`audience` are given.
    """

    def __init__(
        self,
        keys: Mapping[str, Any] | str | bytes | VerificationKeys,
        *,
        issuer: str | None = None,
        audience: str | None = None,
        leeway: float = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if isinstance(leeway, bool) or not isinstance(leeway, (int, float)) or leeway < 0:
            raise InvalidArgumentError(f"leeway {leeway!r} refused: give seconds >= 0")
        outside = open_signing_key(keys)
        if outside is not None:  # aws-kms:...: a one-key set
            self.keys: VerificationKeys = outside
        elif isinstance(keys, (Mapping, str, bytes)):
            self.keys = SigningKeySet(keys)
        else:
            self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self.leeway = float(leeway)
        self._clock = clock

    def verify(self, token: bytes | str, limits: Limits) -> tuple[dict[str, Any], SignerInfo]:
        """Verify `token` and check its claims; returns the claims set and the signer."""
        claims, key = self.verified_claims(token, limits)
        return claims, signer_info(key, claims)

    def verified_claims(
        self, token: bytes | str, limits: Limits
    ) -> tuple[dict[str, Any], SigningKey]:
        """`verify` without building the `SignerInfo`: the claims set and the key that
        verified it, for callers that keep only the claims (`RequestDecryptor.decrypt`)."""
        verified = verify_compact(token, self.keys)
        claims = loads_payload(
            verified.payload, max_values=limits.max_json_values, max_depth=limits.max_json_depth
        )
        if not isinstance(claims, dict):
            raise MalformedBodyError("the signed JWT's payload is not a JSON object")
        self.check_claims(claims)
        return claims, verified.key

    def check_claims(self, claims: Mapping[str, Any]) -> None:
        """exp (required), nbf, iat, iss, aud and jti, each with an actionable message."""
        for name in ("exp", "nbf", "iat"):
            value = claims.get(name)
            if name in claims and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ClaimsError(f"the JWT's {name!r} is not a number of seconds", name)
        for name in ("iss", "jti", "sub"):
            if name in claims and not isinstance(claims[name], str):
                raise ClaimsError(f"the JWT's {name!r} is not a string", name)
        if "exp" not in claims:
            raise ClaimsError("the JWT has no 'exp'; senders must set an expiry", "exp")
        now = self._clock()
        if claims["exp"] <= now - self.leeway:
            raise TokenExpiredError(
                "the JWT has expired (its 'exp' has passed): the sender must make a new body; "
                "check both clocks, or allow some leeway",
                "exp",
            )
        if "nbf" in claims and claims["nbf"] > now + self.leeway:
            raise ClaimsError(
                "the JWT is not valid yet (its 'nbf' is in the future): check both clocks, "
                "or allow some leeway",
                "nbf",
            )
        if self.issuer is not None and claims.get("iss") != self.issuer:
            raise ClaimsError(
                f"the JWT's issuer is not {self.issuer!r}: the body comes from another sender",
                "iss",
            )
        if self.audience is not None:
            aud = claims.get("aud")
            audiences = aud if isinstance(aud, list) else [aud]
            if self.audience not in audiences:
                raise ClaimsError(
                    f"the JWT is not for audience {self.audience!r}: it was made for another "
                    "receiver",
                    "aud",
                )

    def __repr__(self) -> str:
        return f"Verifier(issuer={self.issuer!r}, audience={self.audience!r})"
