"""The receiver's keys: one immutable generation, and the key files followed by polling.

A generation (decryptor, the public set served at ``/.well-known/jwks.json``, its ETag) is
swapped as a whole, in one reference assignment: requests in flight finish with the keys
they started with. The keys come from files and key-source URIs merged by kid
(`WatchedKeys`): every file is watched, the HSM and KMS sources are opened once and kept. A
file that does not parse, holds no private key, or changed kind (RSA keys, `dir` secrets,
signing keys) is logged and ignored; the old keys stay in use, and after `grace` seconds of
that the replica reports itself unhealthy until a reload succeeds.
"""

from __future__ import annotations

import dataclasses
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
from ..keys.jwks import JWKManager, JWKSManager
from ..keys.merged import MergedKeySource
from ..keys.pbes2 import read_password_file
from ..keys.signing import DirectKeySet, SigningKey, SigningKeySet, key_set_kind
from ..keys.source import KeySource
from ..keys.uri import (
    is_key_source_uri,
    open_key_source,
    open_verification_keys,
    refuse_unknown_scheme,
    shown_location,
)
from ..limits import Limits
from ..request import RequestDecryptor
from .observability import ReceiverMetrics

__all__ = [
    "KIND_NAMES",
    "KeyGeneration",
    "KeySetKindChangedError",
    "SenderKeyFile",
    "WatchedKeys",
    "checked_kids",
    "file_keys",
    "loaded_keys",
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
    return WatchedKeys([path], max_body, 0.0, password_file=password_file).keys


def checked_kids(
    locations: Sequence[str | os.PathLike[str]], max_body: int, password_file: Path | None
) -> list[str]:
    """The kids of key-set files and key-source URIs opened and merged as `serve` opens them
    (`WatchedKeys`), then closed again: `serve` only checks them, and each worker process
    opens its own (one PKCS#11 login per process)."""
    source = WatchedKeys(list(locations), max_body, 0.0, password_file=password_file)
    try:
        return source.keys.decryptor.source.kids()
    finally:
        source.keys.decryptor.source.close()


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


#: A key set's kind (`key_set_kind`), as logs name it.
KIND_NAMES = {"enc": "RSA encryption keys", "dir": "dir secrets", "sig": "signing keys"}


@dataclass(frozen=True)
class _Member:
    """One location of the receiver's keys: a file (watched: `signature` is its last look)
    or a key-source URI (opened once, kept across reloads)."""

    location: str | Path
    name: str
    source: KeySource
    kind: str
    signature: tuple[int, int, int, int] | None = None

    @property
    def path(self) -> Path | None:
        return self.location if isinstance(self.location, Path) else None


def _open_file(path: Path, password_file: Path | None, kind: str | None = None) -> _Member:
    """The key-set file at `path` as a member; `kind`: the kind it must still have (a reload).

    A file whose kind changed is refused: a receiver must never start accepting `dir` bodies,
    or stop accepting RSA ones, because a file was replaced.
    """
    signature = _file_signature(path)
    document = read_jwks(path, password=_password(password_file))
    found = key_set_kind(document)
    if kind is not None and found != kind:
        raise KeySetKindChangedError(
            f"it now holds {KIND_NAMES[found]} where it held {KIND_NAMES[kind]}; a key file "
            "keeps its kind (serve another receiver for the new kind)"
        )
    source: KeySource
    if found == "dir":
        source = DirectKeySet(document)
    elif found == "enc":
        source = JWKManager(document)
        require_private_keys(source, path, _NEEDED_BY)
    else:
        raise InvalidArgumentError(
            f"{path} holds {KIND_NAMES[found]}; {_NEEDED_BY} needs RSA encryption keys or dir "
            "secrets"
        )
    return _Member(path, str(path), source, found, signature)


def _open_member(location: str | os.PathLike[str], password_file: Path | None) -> _Member:
    """A file (watched) or a key-source URI (opened now, kept)."""
    if isinstance(location, os.PathLike) or not is_key_source_uri(location):
        refuse_unknown_scheme(os.fspath(location))
        return _open_file(Path(location), password_file)
    source = open_key_source(location)
    return _Member(location, shown_location(location), source, "enc")


def _merged(members: Sequence[_Member]) -> KeySource:
    """The members' sources as one (a single member as itself); `dir` secrets stand alone,
    since a decryptor opens either `dir` bodies or RSA ones, never both."""
    if len(members) == 1:
        return members[0].source
    for member in members:
        if member.kind != "enc":
            raise InvalidArgumentError(
                f"{member.name} holds {KIND_NAMES[member.kind]}, which cannot be merged with "
                "other key sets: serve it alone"
            )
    return MergedKeySource([m.source for m in members], [m.name for m in members])


class KeySetKindChangedError(InvalidArgumentError):
    """A watched key file now holds another kind of keys than when it was first read."""


class WatchedKeys:
    """The receiver's keys from files and key-source URIs, every file reloaded on change.

    Every location is opened now (a missing or invalid one fails here); several are merged
    by kid. `keys` is the current generation. `check()` looks at each file (inode, size,
    mtime) and, when one changed, reads it on a worker thread and builds a new generation
    from it and the members kept (HSM and KMS sources stay open); `watch()` does that every
    few seconds. A file that cannot be used, or changed kind, is logged and the last good
    set stays in use; past `grace` seconds of that, `unhealthy()` says why.
    """

    def __init__(
        self,
        locations: Sequence[str | os.PathLike[str]],
        max_body: int,
        grace: float,
        *,
        metrics: ReceiverMetrics | None = None,
        password_file: Path | None = None,
        verify: Mapping[str, Any] | None = None,
    ) -> None:
        self.metrics = metrics
        self.max_body = max_body
        self.verify = verify or {}
        self.grace = grace
        self.password_file = password_file
        #: Per failing file: since when (monotonic) it has failed to reload, and why.
        self.failing: dict[Path, tuple[float, str]] = {}
        self._members = [_open_member(location, password_file) for location in locations]
        self.keys = self._generation(self._members)
        if metrics is not None:
            metrics.keys_reloaded(self.keys.count)

    @property
    def files(self) -> list[Path]:
        """The watched files."""
        return [m.path for m in self._members if m.path is not None]

    def _generation(self, members: Sequence[_Member]) -> KeyGeneration:
        decryptor = _decryptor(_merged(members), self.max_body, self.verify)
        return _generation(_usable(decryptor, ", ".join(m.name for m in members)))

    async def watch(self, interval: float) -> None:
        """Check the files every `interval` seconds, until cancelled; never dies of an error."""
        while True:
            await anyio.sleep(interval)
            try:
                await self.check()
            except Exception as exc:  # the watcher must outlive any surprise
                logger.error("watching key files failed (%s)", type(exc).__name__)

    async def check(self) -> bool:
        """Reload the files that changed since the last look; True if new keys are in use."""
        members = list(self._members)
        changed = []
        for index, before in enumerate(members):
            path = before.path
            if path is None:
                continue
            signature = _file_signature(path)
            if signature == before.signature:
                continue
            member = dataclasses.replace(before, signature=signature)
            members[index] = self._members[index] = member  # a bad file is logged once
            if signature is None:
                logger.error(
                    "key file %s is gone; keeping the %d keys in use", path, self.keys.count
                )
                self._failed(path, "the key file is gone")
                continue
            reloaded = await self._reload(member)
            if reloaded is not None:
                members[index] = reloaded
                changed.append(reloaded)
        if not changed:
            return False
        try:
            keys = self._generation(members)
        except RequestCryptoError as exc:
            names = ", ".join(m.name for m in changed)
            logger.error(
                "key file(s) %s changed but the keys cannot be used together (%s); "
                "keeping the %d keys in use",
                names,
                exc,
                self.keys.count,
            )
            for member in changed:
                assert member.path is not None
                self._failed(member.path, "the key file changed but cannot be used")
            return False
        self._members = members
        self.keys = keys  # one assignment: requests see old or new, whole
        for member in changed:
            assert member.path is not None
            self.failing.pop(member.path, None)
            merged = f"; {keys.count} keys in use" if len(members) > 1 else ""
            logger.info(
                "key file %s reloaded: %d keys (%s)%s",
                member.path,
                len(member.source.kids()),
                ", ".join(member.source.kids()),
                merged,
            )
        if self.metrics is not None:
            self.metrics.keys_reloaded(keys.count)
        return True

    async def _reload(self, member: _Member) -> _Member | None:
        """`member`'s file read again (on a thread), or None after logging why it is refused."""
        path = member.path
        assert path is not None
        try:
            return await anyio.to_thread.run_sync(_open_file, path, self.password_file, member.kind)
        except KeySetKindChangedError as exc:
            logger.error(
                "key file %s changed kind and is refused: %s; keeping the %d keys in use",
                path,
                exc,
                self.keys.count,
            )
            self._failed(path, "the key file changed kind")
        except RequestCryptoError as exc:
            logger.error(
                "key file %s changed but cannot be used (%s); keeping the %d keys in use",
                path,
                exc,
                self.keys.count,
            )
            self._failed(path, "the key file changed but cannot be used")
        except Exception as exc:  # never let the watcher die
            logger.error(
                "key file %s changed but loading it failed (%s); keeping the old keys",
                path,
                type(exc).__name__,
            )
            self._failed(path, "the key file changed but loading it failed")
        return None

    def _failed(self, path: Path, reason: str) -> None:
        # The failure's start stays the first one's: a second bad write does not reset it.
        since = self.failing[path][0] if path in self.failing else time.monotonic()
        self.failing[path] = (since, reason)
        if self.metrics is not None:
            self.metrics.key_reload_failed()

    def unhealthy(self) -> str | None:
        """Why the keys make this replica unfit to serve (a file failing past `grace`), or
        None."""
        if not self.failing:
            return None
        path, (since, reason) = min(self.failing.items(), key=lambda item: item[1][0])
        elapsed = time.monotonic() - since
        if elapsed <= self.grace:
            return None
        return (
            f"{reason}: {path} (for {elapsed:.0f} s); serving the {self.keys.count} keys "
            "loaded before"
        )
