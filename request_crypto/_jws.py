"""Compact JWS (RFC 7515) signing and verifying, with the algorithm fixed by the key (private).

Only the compact serialization, only the six algorithms of `keys.signing`, and never the
header's word about which key or algorithm to use: the verifying key is looked up by `kid`
(or, without one, is the only key of the set for the header's `alg`), and the header's `alg`
must equal that key's own. Refused outright: `alg: none`, `crit`, `b64` (RFC 7797 unencoded
payloads) and the header-supplied keys `jwk`, `jku`, `x5u`, `x5c` (a token may not bring the
key it is checked with).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from ._b64 import ascii_bytes, b64url_decode, b64url_decode_parts, b64url_encode
from ._jose import MAX_PROTECTED_HEADER, parse_json_header, shown
from ._json import dumps_utf8
from .errors import MalformedBodyError, SignatureError, UnknownSignerError

if TYPE_CHECKING:
    from .keys.signing import SigningKey, VerificationKeys

__all__ = [
    "REFUSED_HEADER_MEMBERS",
    "VerifiedJWS",
    "read_unverified",
    "sign_compact",
    "verify_compact",
]

#: Header members a token may not carry: extensions, unencoded payloads, keys of its own.
REFUSED_HEADER_MEMBERS = ("crit", "b64", "jwk", "jku", "x5u", "x5c")


class VerifiedJWS(NamedTuple):
    """A JWS whose signature verified: its header, payload bytes and the key that checked it."""

    header: dict[str, Any]
    payload: bytes
    key: SigningKey


def sign_compact(key: SigningKey, payload: bytes, *, typ: str | None = "JWT") -> str:
    """A compact JWS of `payload` signed by `key` (header: alg, kid, typ)."""
    header: dict[str, str] = {"alg": key.alg, "kid": key.kid}
    if typ is not None:
        header["typ"] = typ
    signing_input = b64url_encode(dumps_utf8(header)) + "." + b64url_encode(payload)
    return signing_input + "." + b64url_encode(key.sign(signing_input.encode("ascii")))


def _split(token: str | bytes) -> list[bytes]:
    raw = token if type(token) is bytes else ascii_bytes(token, "the signed JWT")
    parts = raw.split(b".")  # one pass: three parts exactly when there are two dots
    if len(parts) != 3:
        raise MalformedBodyError(
            "the signed body is not a compact JWS (3 dot-separated parts): "
            "the JWT inside the jwe must be header.payload.signature"
        )
    return parts


def read_unverified(token: str | bytes) -> tuple[dict[str, Any], bytes]:
    """The checked header and the payload bytes, NOT verified: for `inspect` only."""
    protected, payload, _ = _split(token)
    return _checked_header(protected)[0], b64url_decode(payload, "the JWS payload")


def verify_compact(token: str | bytes, keys: VerificationKeys) -> VerifiedJWS:
    """Check the header, pick the key (see the module docstring), verify the signature."""
    raw = token if type(token) is bytes else ascii_bytes(token, "the signed JWT")
    protected, payload, signature = _split(raw)
    header, alg = _checked_header(protected)
    key = _verifying_key(header, alg, keys)
    if key.alg != alg:
        raise SignatureError(
            f"the JWT is signed with {shown(alg)}, but key {key.kid!r} verifies {key.alg} only; "
            "the algorithm is fixed by the key, never by the token"
        )
    # Both parts in one call when canonical (what signers write); else one at a time, in the
    # order whose errors callers see: the signature's before verifying, the payload's after.
    decoded = b64url_decode_parts(raw, [payload, signature])
    signature_bytes = decoded[1] if decoded else b64url_decode(signature, "the JWS signature")
    if not key.verify(b".".join((protected, payload)), signature_bytes):  # one copy, not two
        raise SignatureError(
            f"the signature does not verify with key {key.kid!r}: the body was not signed "
            "by that sender, or it was altered in transit"
        )
    payload_bytes = decoded[0] if decoded else b64url_decode(payload, "the JWS payload")
    return VerifiedJWS(header, payload_bytes, key)


#: Checked headers by their base64url text: one sender signs every body with the same header,
#: so its decode, parse and checks run once per text (bounded; emptied when full). Each caller
#: gets its own copy.
_HEADER_CACHE: dict[bytes, tuple[dict[str, Any], str]] = {}
_HEADER_CACHE_SIZE = 256


def _checked_header(protected: bytes) -> tuple[dict[str, Any], str]:
    cached = _HEADER_CACHE.get(protected)
    if cached is not None:
        return dict(cached[0]), cached[1]
    if len(protected) > MAX_PROTECTED_HEADER:
        raise MalformedBodyError("the JWS protected header is too long; it is refused unread")
    header = parse_json_header(
        b64url_decode(protected, "the JWS protected header"), "the JWS protected header"
    )
    alg = _check_header(header)
    if not any(isinstance(value, (dict, list)) for value in header.values()):
        if len(_HEADER_CACHE) >= _HEADER_CACHE_SIZE:
            _HEADER_CACHE.clear()
        _HEADER_CACHE[protected] = (dict(header), alg)
    return header, alg


def _check_header(header: dict[str, Any]) -> str:
    for name in REFUSED_HEADER_MEMBERS:
        if name in header:
            raise SignatureError(
                f"the JWS header carries {name!r}, which is refused: sign with a plain "
                "header (alg, kid, typ)"
            )
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise MalformedBodyError("the JWS header has no 'alg' string")
    if alg.lower() == "none":
        raise SignatureError("the JWT is unsigned (alg 'none'), which is never accepted")
    if "kid" in header and not isinstance(header["kid"], str):
        raise MalformedBodyError("the JWS header's 'kid' is not a string")
    if str(header.get("cty", "")).upper() == "JWT":
        raise SignatureError("the signed JWT nests another JWT; nesting stops at one level")
    return alg


def _verifying_key(header: dict[str, Any], alg: str, keys: VerificationKeys) -> SigningKey:
    kid = header.get("kid")
    if isinstance(kid, str):
        key = keys.verification_key(kid)
        if key is None:
            raise UnknownSignerError(
                f"the JWT is signed with kid {shown(kid)}, which the verification key set "
                "does not hold: add the sender's public key, or check the sender's set"
            )
        return key
    fitting = keys.keys_for_alg(alg)
    if len(fitting) != 1:
        count = "no key" if not fitting else f"{len(fitting)} keys"
        raise UnknownSignerError(
            f"the JWT names no kid and {count} of the verification set fit its alg "
            f"{shown(alg)}; senders must set the kid header"
        )
    return fitting[0]
