"""Key-set files as a library: create, add, rotate, remove and publish, locked and atomic.

What the `request-crypto keys` commands do, for a deployment script in Python::

    keys = KeySetFile.init("private_jwks.json", "telemetry-2026-11-01")
    new_kid = keys.rotate()             # telemetry-2026-11-23 (today, UTC)
    keys.publish("public_jwks.json")    # what senders ship

Every change is one locked read-modify-write of the file (`keyfile.update_jwks`): concurrent
writers, threads or processes, serialize instead of losing each other's keys, and a crash
leaves the old file or the new one, never half of one. A new key is generated before the lock
is taken (it is the slow part), its kid chosen under it. Entries of the file this module does
not change are written back exactly as they were. Errors are RequestCryptoError subclasses
whose messages name the file.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

from ._b64 import b64url_decode
from .errors import InvalidArgumentError, InvalidJWKSError, KeyFileError
from .keyfile import is_private_set, locked, read_jwks, read_key_set_bytes, update_jwks, write_jwks
from .keys.jwks import DEFAULT_ALG, MIN_KEY_SIZE, JWKManager, public_halves
from .keys.pbes2 import is_encrypted_key_set
from .keys.signing import (
    DIRECT_ALG,
    SIGNING_ALGORITHMS,
    DirectKeySet,
    SigningKey,
    SigningKeySet,
    generate_direct_jwk,
    generate_signing_jwk,
    key_set_kind,
    public_key_set,
)
from .kids import next_kid, thumbprint, validate_kid

__all__ = ["KeySetFile", "parse_key_set"]

_SCRATCH_KID = "new"


def parse_key_set(path: str | os.PathLike[str], document: dict[str, Any]) -> JWKManager:
    """Validate a key-set document read from `path`; errors name the file."""
    try:
        return JWKManager(document)
    except InvalidJWKSError as exc:
        raise InvalidJWKSError(f"{path}: {exc}") from None


def _utc_today() -> date:
    return datetime.now(timezone.utc).date()


def _kind_of_alg(alg: str) -> str:
    return "dir" if alg == DIRECT_ALG else "sig" if alg in SIGNING_ALGORITHMS else "enc"


def _set_kids(path: str | os.PathLike[str], document: dict[str, Any]) -> list[str]:
    """The kids of a set of any kind (encryption, signing, dir), each checked by its loader."""
    try:
        kind = key_set_kind(document)
        if kind == "dir":
            return DirectKeySet(document).kids()
        if kind == "sig":
            return SigningKeySet(document).kids()
    except InvalidJWKSError as exc:
        raise InvalidJWKSError(f"{path}: {exc}") from None
    return parse_key_set(path, public_halves(document)).kids()


def _rsa_bits(jwk: dict[str, Any]) -> int:
    return len(b64url_decode(jwk["n"], "n")) * 8


def _new_private_jwk(size: int, alg: str) -> dict[str, Any]:
    """A new private JWK; its kid is set later, under the lock, once the set is known.

    `alg` picks the kind: RSA-OAEP[-256] an encryption key, ES256/ES384/EdDSA/RS256/PS256/
    HS256 a signing key (`use: "sig"`), `dir` a 256-bit shared secret.
    """
    if alg == DIRECT_ALG:
        return generate_direct_jwk(_SCRATCH_KID)
    if alg in SIGNING_ALGORITHMS:
        return generate_signing_jwk(_SCRATCH_KID, alg, size=size)
    manager = JWKManager()
    manager.add_key(_SCRATCH_KID, size=size, alg=alg)
    jwk = manager.get_private_jwk(_SCRATCH_KID)
    assert jwk is not None
    return jwk


def _holds_private_keys(path: Path) -> bool:
    """Whether the regular file at `path` (no link followed: writing one is refused) is private."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return False
            data = read_key_set_bytes(handle, path)
            if is_encrypted_key_set(data):
                return True  # only private sets are encrypted
            document = json.loads(data)
    except (OSError, ValueError, RecursionError):  # not a key set, so nothing to protect
        return False
    return isinstance(document, dict) and is_private_set(document)


class KeySetFile:
    """A private key-set file on disk (0600), changed only under its lock and atomically.

    The object holds the path only: every call reads the file afresh, so several processes
    (or a person with the CLI) may change the same file meanwhile.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        password: bytes | None = None,
        wrap_with: str | None = None,
    ) -> None:
        """`password`: the file is (or becomes, at the next change) encrypted at rest with it;
        `wrap_with` (`aws-kms:KEY`): it becomes wrapped by that KMS key (`keys.kms_wrap`). A
        wrapped file opens without either and stays wrapped by its key."""
        self.path = Path(path)
        self._password = password
        self._wrap_with = wrap_with

    def __repr__(self) -> str:  # never the password
        return f"KeySetFile({str(self.path)!r})"

    def _protection(self) -> dict[str, Any]:
        return {"password": self._password, "wrap_with": self._wrap_with}

    @classmethod
    def init(
        cls,
        path: str | os.PathLike[str],
        kid: str,
        *,
        size: int = MIN_KEY_SIZE,
        alg: str = DEFAULT_ALG,
        force: bool = False,
        password: bytes | None = None,
        wrap_with: str | None = None,
    ) -> KeySetFile:
        """Create the file holding one new key under `kid`; an existing file only if `force`.

        With `password` the file is encrypted at rest (PBES2, see `keys.pbes2`); with
        `wrap_with` (`aws-kms:KEY`) it is wrapped by that KMS key (`keys.kms_wrap`).
        """
        keys = cls(path, password=password, wrap_with=wrap_with)
        validate_kid(kid)
        jwk = {**_new_private_jwk(size, alg), "kid": kid}
        with locked(keys.path):
            if keys.path.exists() and not force:
                raise KeyFileError(
                    f"{keys.path} already exists; replacing it (force) loses its keys, and "
                    "bodies encrypted to them can no longer be decrypted"
                )
            write_jwks(keys.path, {"keys": [jwk]}, password=password, wrap_with=wrap_with)
        return keys

    def add(self, kid: str, *, size: int = MIN_KEY_SIZE, alg: str = DEFAULT_ALG) -> dict[str, Any]:
        """Add a new key under `kid` as the newest; returns its public JWK."""
        validate_kid(kid)
        return self._append(lambda _kids: kid, size, alg)

    def rotate(
        self,
        *,
        kid: str | None = None,
        size: int = MIN_KEY_SIZE,
        alg: str = DEFAULT_ALG,
        today: date | None = None,
    ) -> str:
        """Add a new newest key and return its kid; older keys stay, so old bodies decrypt.

        Without `kid`, it is named by `kids.next_kid`: the existing kids' common prefix (a
        trailing date or version stripped: `kibana_8.14.0` gives `kibana`) and `today` (UTC
        by default), e.g. ``kibana-2026-11-23``, then ``...-2`` for a second one that day.
        """
        if kid is not None:
            validate_kid(kid)
        day = _utc_today() if today is None else today
        jwk = self._append(lambda kids: next_kid(kids, day) if kid is None else kid, size, alg)
        return str(jwk["kid"])

    def _append(
        self, choose_kid: Callable[[list[str]], str], size: int, alg: str
    ) -> dict[str, Any]:
        jwk = _new_private_jwk(size, alg)
        with update_jwks(self.path, **self._protection()) as document:
            kids = _set_kids(self.path, document)
            if kids and not is_private_set(document):
                raise InvalidArgumentError(
                    f"{self.path} is a public set; add keys to the private set, then publish "
                    "its public half"
                )
            if kids and key_set_kind(document) != _kind_of_alg(alg):
                raise InvalidArgumentError(
                    f"{self.path} is a {key_set_kind(document)} set; a {alg} key belongs in "
                    "a set of its own kind"
                )
            jwk["kid"] = validate_kid(choose_kid(kids))
            if jwk["kid"] in kids:
                raise InvalidArgumentError(
                    f"{self.path} already has a key {jwk['kid']!r}; pick another kid"
                )
            document["keys"].append(jwk)
        if jwk["kty"] == "oct":  # a secret: its description, never the secret itself
            return {m: jwk[m] for m in ("kty", "kid", "use", "alg")}
        if alg in SIGNING_ALGORITHMS:
            return SigningKey(jwk).public_jwk
        public = JWKManager({"keys": [jwk]}).get_public_jwk(jwk["kid"])
        assert public is not None
        return public

    def remove(self, kid: str) -> list[str]:
        """Remove the key `kid`; returns the kids left. Bodies encrypted to it no longer decrypt."""
        with update_jwks(self.path, **self._protection()) as document:
            kids = _set_kids(self.path, document)
            if kid not in kids:
                raise InvalidArgumentError(f"{self.path} has no key {kid!r}; its kids are {kids}")
            document["keys"] = [jwk for jwk in document["keys"] if jwk.get("kid") != kid]
        return [k for k in kids if k != kid]

    def publish(self, output: str | os.PathLike[str] | None = None) -> dict[str, Any]:
        """The public set others ship (the public members of each key), written to `output`.

        A signing set publishes `crv`/`x`/`y` (EC, OKP) or `e`/`n` (RSA) per key; a set of
        secrets (HS256, dir) has no public half and is refused.

        `output` (mode 0644, replaced atomically, no link followed) is refused when it holds
        private keys: overwriting the private set with its public half would lose every key.
        """
        document = read_jwks(self.path, password=self._password)
        kind = key_set_kind(document) if document.get("keys") else "enc"
        if kind == "dir":
            raise InvalidArgumentError(
                f"{self.path} holds dir shared secrets: they have no public half to publish; "
                "give the sender the secret set over a trusted channel instead"
            )
        public: dict[str, Any] = (
            public_key_set(document)
            if kind == "sig"
            else parse_key_set(self.path, public_halves(document)).get_public_jwks()
        )
        if not public["keys"]:
            raise InvalidJWKSError(f"{self.path} holds no keys; add one before publishing")
        if output is not None:
            if _holds_private_keys(Path(output)):
                raise KeyFileError(
                    f"{output} holds private keys (is it the private set?); "
                    "write the public set to another file"
                )
            write_jwks(output, public)
        return public

    def load(self, *, private: bool = True) -> JWKManager:
        """The set as a manager; with `private=False` only its public halves are parsed."""
        document = read_jwks(self.path, password=self._password)
        return parse_key_set(self.path, document if private else public_halves(document))

    def kids(self) -> list[str]:
        """The kids in file order; the last one is the newest (a set of any kind)."""
        return _set_kids(self.path, read_jwks(self.path, password=self._password))

    def describe(self) -> list[dict[str, Any]]:
        """What `keys list` shows of a signing or dir set: never a private member or secret."""
        document = read_jwks(self.path, password=self._password)
        kids = _set_kids(self.path, document)
        rows = []
        for jwk in document["keys"]:
            secret = jwk.get("kty") == "oct"
            public = None if secret else SigningKey(jwk).public_jwk
            rows.append(
                {
                    "kid": jwk["kid"],
                    "kty": jwk["kty"],
                    "alg": jwk.get("alg"),
                    "use": jwk.get("use", "sig"),
                    "size": 256 if secret else jwk.get("crv") or _rsa_bits(jwk),
                    "private": secret or "d" in jwk,
                    "thumbprint": "-" if public is None else thumbprint(public),
                    "newest": jwk["kid"] == kids[-1],
                }
            )
        return rows

    def kind(self) -> str:
        """`enc` (RSA encryption keys), `sig` (signing keys) or `dir` (shared secrets)."""
        return key_set_kind(read_jwks(self.path, password=self._password))
