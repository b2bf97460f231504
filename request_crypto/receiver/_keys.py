"""The receiver's keys: one immutable generation, and the key-set file followed by polling.

A generation (decryptor, the public set served at ``/.well-known/jwks.json``, its ETag) is
swapped as a whole, in one reference assignment: requests in flight finish with the keys
they started with. A file that does not parse, or holds no private key, is logged and
ignored; the old keys stay in use, and after `grace` seconds of that the replica reports
itself unhealthy until a reload succeeds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from ..errors import InvalidArgumentError, RequestCryptoError
from ..keyfile import read_jwks, require_private_keys
from ..keys.jwks import JWKSManager
from ..keys.pbes2 import read_password_file
from ..keys.signing import SigningKey, SigningKeySet
from ..keys.source import KeySource
from ..keys.uri import open_key_sources, open_verification_keys
from ..limits import Limits
from ..request import RequestDecryptor
from .observability import ReceiverMetrics

__all__ = [
    "KeyFile",
    "KeyGeneration",
    "SenderKeyFile",
    "file_keys",
    "loaded_keys",
    "opened_keys",
    "verification_options",
]

logger = logging.getLogger("request_crypto.receiver")

#: Who needs the private set, in the "holds no private keys" error.
_NEEDED_BY = "a receiver"


@dataclass(frozen=True)
class KeyGeneration:
    """The keys one request uses from start to end, and what ``/.well-known`` serves for them."""

    decryptor: RequestDecryptor
    well_known: bytes
    etag: str
    count: int


def _generation(decryptor: RequestDecryptor) -> KeyGeneration:
    body = json.dumps(decryptor.get_well_knowns(), separators=(",", ":")).encode("utf-8")
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    return KeyGeneration(decryptor, body, etag, len(decryptor.source.kids()))


def _decryptor(
    jwks: Mapping[str, Any] | JWKSManager | KeySource,
    max_body: int,
    verify: Mapping[str, Any] | None = None,
) -> RequestDecryptor:
    # Only the body size is the receiver's own; every other limit is the library's default.
    return RequestDecryptor(jwks, limits=Limits(max_body_size=max_body), **(verify or {}))


def _password(password_file: Path | None) -> bytes | None:
    return None if password_file is None else read_password_file(password_file)


def _load_decryptor(
    path: Path, max_body: int, password_file: Path | None, verify: Mapping[str, Any]
) -> RequestDecryptor:
    decryptor = _decryptor(read_jwks(path, password=_password(password_file)), max_body, verify)
    return _usable(decryptor, path)


def _usable(decryptor: RequestDecryptor, where: object) -> RequestDecryptor:
    """`decryptor`, refused when it could open nothing: an RSA set must hold private keys
    (a public set is the likeliest mistake); a `dir` set or a key source, any key at all."""
    if isinstance(decryptor.source, JWKSManager):
        require_private_keys(decryptor.source, where, _NEEDED_BY)
    elif not decryptor.source.kids():
        raise InvalidArgumentError(f"{where} holds no keys; {_NEEDED_BY} needs one")
    return decryptor


def loaded_keys(
    jwks: Mapping[str, Any] | JWKSManager | RequestDecryptor | KeySource,
    max_body: int,
    verify: Mapping[str, Any] | None = None,
) -> KeyGeneration:
    """The one generation of a set or key source given already loaded (never reloaded)."""
    decryptor = jwks if isinstance(jwks, RequestDecryptor) else _decryptor(jwks, max_body, verify)
    where = "the key set" if isinstance(decryptor.source, JWKSManager) else repr(decryptor.source)
    return _generation(_usable(decryptor, where))


def file_keys(path: Path, max_body: int, password_file: Path | None) -> KeyGeneration:
    """The key-set file at `path` (RSA private keys or `dir` secrets), opened once to check it."""
    return _generation(_load_decryptor(path, max_body, password_file, {}))


def opened_keys(
    locations: Sequence[str | os.PathLike[str]],
    max_body: int,
    password_file: Path | None,
    verify: Mapping[str, Any] | None = None,
) -> KeyGeneration:
    """Key-set files and key-source URIs, opened now and merged by kid (never reloaded)."""
    sources = open_key_sources(locations, password=_password(password_file))
    return loaded_keys(sources, max_body, verify)


class SenderKeyFile:
    """The senders' public signing set in a file, reloaded when it changes (`VerificationKeys`).

    Looked at (inode, size, mtime) at most every `interval` seconds, on the thread that
    verifies; a file that stops parsing is logged and the old keys are kept.
    """

    def __init__(self, path: Path, interval: float = 1.0) -> None:
        self.path = path
        self.interval = interval
        self._signature = _file_signature(path)
        self._keys = SigningKeySet(read_jwks(path))
        self._checked = time.monotonic()

    def _current(self) -> SigningKeySet:
        now = time.monotonic()
        if now - self._checked >= self.interval:
            self._checked = now
            signature = _file_signature(self.path)
            if signature != self._signature and signature is not None:
                self._signature = signature
                try:
                    self._keys = SigningKeySet(read_jwks(self.path))
                    logger.info("senders' key file %s reloaded", self.path)
                except RequestCryptoError as exc:
                    logger.error(
                        "senders' key file %s changed but cannot be used (%s); keeping the "
                        "old keys",
                        self.path,
                        exc,
                    )
        return self._keys

    def verification_key(self, kid: str) -> SigningKey | None:
        """The sender's key named `kid`, or None."""
        return self._current().verification_key(kid)

    def keys_for_alg(self, alg: str) -> list[SigningKey]:
        """Every sender key for `alg`."""
        return self._current().keys_for_alg(alg)


def verification_options(
    verify_with: str | tuple[str, ...] | None,
    *,
    require_signature: bool,
    issuer: str | None,
    audience: str | None,
    leeway: float,
) -> dict[str, Any]:
    """RequestDecryptor's keywords for the receiver's signature settings (empty: none).

    Files are reloaded when they change (`SenderKeyFile`); URLs and key URIs as in
    `keys.uri.open_verification_keys`; several are merged by kid.
    """
    if verify_with is None:
        return {}
    keys = open_verification_keys(verify_with, lambda location: SenderKeyFile(Path(location)))
    return {
        "verify_with": keys,
        "require_signature": require_signature,
        "issuer": issuer,
        "audience": audience,
        "leeway": leeway,
    }


def _file_signature(path: Path) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class KeyFile:
    """A key-set file, read now (a missing or invalid set fails here) and reloaded on change.

    `keys` is the current generation. `check()` looks at the file (inode, size, mtime) and,
    when it changed, parses it on a worker thread; `watch()` does that every few seconds.
    """

    def __init__(
        self,
        path: Path,
        max_body: int,
        grace: float,
        *,
        metrics: ReceiverMetrics | None = None,
        password_file: Path | None = None,
        verify: Mapping[str, Any] | None = None,
    ) -> None:
        self.path = path
        self.metrics = metrics
        self.max_body = max_body
        self.verify = verify or {}
        self.grace = grace
        self.password_file = password_file
        #: Since when (monotonic) the key file has failed to load, and why; None while it loads.
        self.failing: tuple[float, str] | None = None
        self._signature = _file_signature(path)
        self.keys = _generation(_load_decryptor(path, max_body, password_file, self.verify))
        if metrics is not None:
            metrics.keys_reloaded(self.keys.count)

    async def watch(self, interval: float) -> None:
        """Check the file every `interval` seconds, until cancelled; never dies of an error."""
        while True:
            await anyio.sleep(interval)
            try:
                await self.check()
            except Exception as exc:  # the watcher must outlive any surprise
                logger.error("watching key file %s failed (%s)", self.path, type(exc).__name__)

    async def check(self) -> bool:
        """Reload the key file if it changed since the last look; True if new keys are in use."""
        signature = _file_signature(self.path)
        if signature == self._signature:
            return False
        self._signature = signature
        if signature is None:
            logger.error(
                "key file %s is gone; keeping the %d keys in use", self.path, self.keys.count
            )
            self._failed("the key file is gone")
            return False
        try:
            decryptor = await anyio.to_thread.run_sync(
                _load_decryptor, self.path, self.max_body, self.password_file, self.verify
            )
        except RequestCryptoError as exc:
            logger.error(
                "key file %s changed but cannot be used (%s); keeping the %d keys in use",
                self.path,
                exc,
                self.keys.count,
            )
            self._failed("the key file changed but cannot be used")
            return False
        except Exception as exc:  # never let the watcher die
            logger.error(
                "key file %s changed but loading it failed (%s); keeping the old keys",
                self.path,
                type(exc).__name__,
            )
            self._failed("the key file changed but loading it failed")
            return False
        self.failing = None
        self.keys = _generation(decryptor)  # one assignment: requests see old or new, whole
        if self.metrics is not None:
            self.metrics.keys_reloaded(self.keys.count)
        logger.info(
            "key file %s reloaded: %d keys (%s)",
            self.path,
            self.keys.count,
            ", ".join(decryptor.source.kids()),
        )
        return True

    def _failed(self, reason: str) -> None:
        # The failure's start stays the first one's: a second bad write does not reset it.
        since = self.failing[0] if self.failing else time.monotonic()
        self.failing = (since, reason)
        if self.metrics is not None:
            self.metrics.key_reload_failed()

    def unhealthy(self) -> str | None:
        """Why the keys make this replica unfit to serve (failing past `grace`), or None."""
        if self.failing is None:
            return None
        since, reason = self.failing
        elapsed = time.monotonic() - since
        if elapsed <= self.grace:
            return None
        return f"{reason} (for {elapsed:.0f} s); serving the {self.keys.count} keys loaded before"
