"""Key ids: the one rule a new kid must meet, the names `rotate` gives new keys, and the
RFC 7638 thumbprint that names a key when nothing else does.

`validate_kid` is the single rule for kids this library *creates* (`JWKSManager.add_key`,
`KeySetFile`, every `keys` command). Sets loaded from elsewhere (the JavaScript library,
another tool) are not held to it: their kids only need to be non-empty strings, so every
existing set keeps loading.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

from ._b64 import b64url_encode
from .errors import InvalidArgumentError, InvalidJWKSError

__all__ = [
    "DEFAULT_KID_PREFIX",
    "MAX_KID_LENGTH",
    "kid_prefix",
    "next_kid",
    "thumbprint",
    "validate_kid",
]

#: The longest kid `validate_kid` accepts: kids travel in every body's header and in logs.
MAX_KID_LENGTH = 256
#: The prefix `next_kid` uses when the existing kids share none.
DEFAULT_KID_PREFIX = "key"
_SEPARATORS = "-_.:/ "
#: A dated kid, as `next_kid` makes them: STEM-YYYY-MM-DD, maybe followed by -2, -3...
_DATED_KID = re.compile(r"(?P<stem>.*?)[-_.]?\d{4}-\d{2}-\d{2}(?:-\d+)?")
#: A versioned kid: STEM, maybe a separator, then a number or dotted version (`kibana_8.14.0`).
_VERSIONED_KID = re.compile(r"(?P<stem>.*?)[-_.]?\d+(?:\.\d+)*")
#: RFC 7638 §3.2: the members a thumbprint covers, per key type (sorted, as hashed).
_THUMBPRINT_MEMBERS = {
    "RSA": ("e", "kty", "n"),
    "EC": ("crv", "kty", "x", "y"),
    "OKP": ("crv", "kty", "x"),
    "oct": ("k", "kty"),
}


def thumbprint(jwk: Mapping[str, Any]) -> str:
    """The RFC 7638 SHA-256 thumbprint of `jwk`, base64url: its required members only, as
    compact JSON with sorted keys. Computed here, not by jwcrypto, whose import costs a
    command ~40 ms of start-up (tests compare the two for every key type)."""
    members = _THUMBPRINT_MEMBERS.get(jwk.get("kty"))  # type: ignore[arg-type]
    if members is None or not all(isinstance(jwk.get(m), str) for m in members):
        raise InvalidJWKSError(
            f"a {jwk.get('kty')!r} key has no RFC 7638 thumbprint: it needs string members "
            + ", ".join(members or ("kty in RSA, EC, OKP, oct",))
        )
    text = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), ensure_ascii=False)
    return b64url_encode(hashlib.sha256(text.encode("utf-8")).digest())


def validate_kid(kid: object) -> str:
    """Return `kid` if a new key may take it; InvalidArgumentError saying why not otherwise.

    A kid must be a non-empty string of at most MAX_KID_LENGTH printable characters: no
    control, format or separator characters other than the space, which could break a log
    line or a terminal, or hide that two kids differ.
    """
    if not isinstance(kid, str) or not kid or len(kid) > MAX_KID_LENGTH or not kid.isprintable():
        shown = repr(kid) if len(repr(kid)) <= 80 else f"{repr(kid)[:77]}..."
        raise InvalidArgumentError(
            f"kid {shown} refused: use a non-empty kid without control characters, "
            f"at most {MAX_KID_LENGTH} characters"
        )
    return kid


def next_kid(kids: Sequence[str], today: date) -> str:
    """A new kid: the existing kids' common prefix and `today`, e.g. `telemetry-2026-11-23`.

    When that kid (or a later one the same day) exists, `-2`, `-3`... follow, so within a
    prefix kids sort by age (up to nine rotations a day; `-10` would sort before `-2`).
    """
    base = f"{kid_prefix(kids)}-{today.isoformat()}"
    taken = [_day_number(kid, base) for kid in kids]
    numbers = [number for number in taken if number is not None]
    return f"{base}-{max(numbers) + 1}" if numbers else base


def kid_prefix(kids: Sequence[str]) -> str:
    """The longest prefix the kids share, suffixes stripped, cut at a word or number boundary.

    One trailing date (`-2026-11-01`, `-2026-11-01-2`) or, failing that, one version
    (`_8.14.0`, `-2`, `1`) is stripped from each kid first: `telemetry-2026-11-01` gives
    `telemetry`, `kibana_8.14.0` gives `kibana`, `prod1` gives `prod`; `alpha` and `alps`
    share no whole word, so (like an empty set, or `8.14.0`) they give DEFAULT_KID_PREFIX.
    """
    stems = [_stem(kid) for kid in kids]
    prefix = os.path.commonprefix(stems)  # noqa: RUF071 - a string prefix is what is meant
    while prefix and not all(_is_boundary(stem, len(prefix)) for stem in stems):
        prefix = prefix[:-1]
    return prefix.rstrip(_SEPARATORS) or DEFAULT_KID_PREFIX


def _stem(kid: str) -> str:
    """`kid` without one trailing date, or else one trailing version (never both)."""
    match = _DATED_KID.fullmatch(kid) or _VERSIONED_KID.fullmatch(kid)
    return match.group("stem") if match else kid


def _is_boundary(stem: str, at: int) -> bool:
    """Whether cutting `stem` before index `at` splits no word and no number."""
    if at >= len(stem):
        return True
    before, after = stem[at - 1], stem[at]
    return before in _SEPARATORS or after in _SEPARATORS or before.isdigit() != after.isdigit()


def _day_number(kid: str, base: str) -> int | None:
    """1 for `base` itself, N for `base-N`, None for any other kid."""
    if kid == base:
        return 1
    rest = kid[len(base) + 1 :] if kid.startswith(f"{base}-") else ""
    return int(rest) if rest.isascii() and rest.isdigit() and len(rest) < 10 else None
