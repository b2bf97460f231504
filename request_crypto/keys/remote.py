"""A remote JWKS of senders' public signing keys, fetched over HTTP(S) and cached.

What senders publish at a URL, as `VerificationKeys` for a `Verifier`. The set is fetched with
httpx (imported on first fetch: the core never needs it) and kept for the response's
`Cache-Control: max-age`, clamped between `min_max_age` and `max_max_age`; a stale set is
revalidated with `If-None-Match` (a `304` keeps it). A token naming an unknown kid refetches at
most once per `cooldown`, so forged kids cannot make the receiver hammer the sender's server.
A failed fetch keeps the last good set (and is retried after the cooldown); only when no set
was ever fetched does a lookup fail, with KeySetUnavailableError (retryable). One fetch at a
time: callers arriving during a fetch wait for it and share its result. Redirects are not
followed, and a response over `max_size` bytes is refused.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import (
    InternalSignal,
    InvalidArgumentError,
    InvalidJWKSError,
    KeySetUnavailableError,
)
from .jwks import load_jwks_document
from .signing import SigningKey, SigningKeySet

__all__ = ["DEFAULT_COOLDOWN", "RemoteJWKS"]

log = logging.getLogger("request_crypto.remote_jwks")

#: Seconds between two fetches caused by unknown kids (or after a failure).
DEFAULT_COOLDOWN = 30.0
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)\"?\s*(?:,|$)", re.IGNORECASE)
_NO_CACHE = re.compile(r"(?:^|,)\s*(no-cache|no-store)\s*(?:,|$)", re.IGNORECASE)


class _Fetched(InternalSignal):
    """Why one fetch failed (logged; the message never holds the response body)."""


class RemoteJWKS:
    """Senders' public signing keys at `url` (see the module docstring for the caching)."""

    def __init__(
        self,
        url: str,
        *,
        cooldown: float = DEFAULT_COOLDOWN,
        min_max_age: float = 60.0,
        max_max_age: float = 3600.0,
        default_max_age: float = 600.0,
        timeout: float = 5.0,
        max_size: int = 512 * 1024,
        clock: Callable[[], float] = time.monotonic,
        transport: Any = None,
    ) -> None:
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise InvalidArgumentError(
                f"a remote key set URL must start with https:// or http://, not {str(url)[:40]!r}"
            )
        if not 0 <= min_max_age <= default_max_age <= max_max_age:
            raise InvalidArgumentError("give min_max_age <= default_max_age <= max_max_age")
        self.url = url
        self.cooldown = cooldown
        self.min_max_age, self.max_max_age = min_max_age, max_max_age
        self.default_max_age = default_max_age
        self.timeout = timeout
        self.max_size = max_size
        self._clock = clock
        self._transport = transport  # an httpx transport, for tests that swap the network
        self._keys: SigningKeySet | None = None
        self._etag: str | None = None
        self._expires = 0.0
        self._last_attempt: float | None = None
        self._fetch_lock = threading.Lock()
        self._generation = 0
        #: How many HTTP requests were made (for logs and tests).
        self.fetches = 0

    def verification_key(self, kid: str) -> SigningKey | None:
        """The key named `kid`; an unknown kid refetches the set at most once per cooldown."""
        key = self._current().verification_key(kid)
        if key is None and self._cooled_down():
            key = self._refresh(self._generation).verification_key(kid)
        return key

    def keys_for_alg(self, alg: str) -> list[SigningKey]:
        """Every key of the current set whose algorithm is `alg`."""
        return self._current().keys_for_alg(alg)

    def kids(self) -> list[str]:
        """The kids of the current set (fetching it if none is held yet)."""
        return self._current().kids()

    def _cooled_down(self) -> bool:
        last = self._last_attempt
        return last is None or self._clock() - last >= self.cooldown

    def _current(self) -> SigningKeySet:
        keys = self._keys
        if keys is not None and (self._clock() < self._expires or not self._cooled_down()):
            return keys
        return self._refresh(self._generation)

    def _refresh(self, seen: int) -> SigningKeySet:
        """Fetch once; callers that waited while another fetch ran take its result."""
        with self._fetch_lock:
            if self._generation != seen and self._keys is not None:
                return self._keys
            self._last_attempt = self._clock()
            failure: _Fetched | None = None
            try:
                self._fetch()
            except _Fetched as exc:
                failure = exc
            self._generation += 1
            if failure is not None:
                if self._keys is None:
                    raise KeySetUnavailableError(
                        f"the senders' key set at {self.url} could not be fetched ({failure}); "
                        "check the URL and that the server answers, then retry"
                    )
                log.warning("fetching %s failed (%s); keeping the last good set", self.url, failure)
            assert self._keys is not None  # set by _fetch, or the raise above
            return self._keys

    def _fetch(self) -> None:
        import httpx  # noqa: PLC0415 - the core imports no HTTP client until a URL is used

        headers = {"Accept": "application/json"}
        if self._etag is not None and self._keys is not None:
            headers["If-None-Match"] = self._etag
        self.fetches += 1
        try:
            with (
                httpx.Client(
                    follow_redirects=False, timeout=self.timeout, transport=self._transport
                ) as client,
                client.stream("GET", self.url, headers=headers) as response,
            ):
                body = self._read(response) if response.status_code == 200 else b""
                status, response_headers = response.status_code, response.headers
        except httpx.HTTPError as exc:
            raise _Fetched(type(exc).__name__) from None
        if status == 304 and self._keys is not None:
            self._expires = self._clock() + self._max_age(response_headers)
            return
        if status != 200:
            raise _Fetched(f"HTTP {status}; redirects are not followed")
        self._keys = self._parse(body)
        self._etag = response_headers.get("etag")
        self._expires = self._clock() + self._max_age(response_headers)

    def _read(self, response: Any) -> bytes:
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_size:
            raise _Fetched(f"the response is over {self.max_size} bytes")
        chunks, total = [], 0
        for chunk in response.iter_bytes():
            total += len(chunk)
            if total > self.max_size:
                raise _Fetched(f"the response is over {self.max_size} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def _parse(self, body: bytes) -> SigningKeySet:
        try:
            document = load_jwks_document(body, source="the response")
            _refuse_private(document)
            return SigningKeySet(document)
        except InvalidJWKSError as exc:
            raise _Fetched(str(exc)) from None

    def _max_age(self, headers: Mapping[str, str]) -> float:
        control = headers.get("cache-control", "")
        if _NO_CACHE.search(control):
            return self.min_max_age
        match = _MAX_AGE.search(control)
        age = float(match.group(1)) if match else self.default_max_age
        return min(max(age, self.min_max_age), self.max_max_age)

    def __repr__(self) -> str:
        return f"RemoteJWKS({self.url!r}, fetches={self.fetches})"


def _refuse_private(document: Mapping[str, Any]) -> None:
    """A published set holds public keys only: secrets and private members are refused."""
    for jwk in document["keys"]:
        if isinstance(jwk, Mapping) and ("d" in jwk or "k" in jwk):
            raise InvalidJWKSError(
                "the published set holds a private key or a secret; a sender publishes "
                "only its public keys"
            )
