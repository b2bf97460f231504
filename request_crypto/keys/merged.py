"""Several key sources seen as one, by kid: `serve --jwks A --jwks B`.

A kid must name one key: two sources holding the same kid are refused when merged, since a
body's kid could otherwise be opened by either. Each call goes to the source holding the kid;
`health` names the first source that fails, so /healthz can say which one is down.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import InvalidArgumentError, InvalidJWKSError, NoKeyFoundError
from .source import KeySource

__all__ = ["MergedKeySource"]


class MergedKeySource:
    """The union of several `KeySource`s by kid (a kid in two sources is refused)."""

    def __init__(self, sources: Sequence[KeySource], names: Sequence[str] | None = None) -> None:
        """`names` (default: each source's `name` or repr) label the sources in errors."""
        if not sources:
            raise InvalidArgumentError("merge at least one key source")
        self.sources = list(sources)
        self.names = list(names) if names is not None else [_name(s) for s in self.sources]
        if len(self.names) != len(self.sources):
            raise InvalidArgumentError("give one name per key source")
        self._by_kid: dict[str, KeySource] = {}
        where: dict[str, str] = {}
        for source, name in zip(self.sources, self.names, strict=True):
            for kid in source.kids():
                if kid in where:
                    raise InvalidJWKSError(
                        f"kid {kid!r} is in both {where[kid]} and {name}; a kid must name one key"
                    )
                where[kid] = name
                self._by_kid[kid] = source

    def kids(self) -> list[str]:
        """Every kid, source by source, in the order the sources were given."""
        return list(self._by_kid)

    def can_decrypt(self, kid: str) -> bool:
        """Whether the source holding `kid` may unwrap with it."""
        source = self._by_kid.get(kid)
        return source is not None and source.can_decrypt(kid)

    def public_jwk(self, kid: str) -> dict[str, Any] | None:
        """The public JWK of `kid` from the source holding it, or None."""
        source = self._by_kid.get(kid)
        return source.public_jwk(kid) if source else None

    def key_metadata(self, kid: str) -> dict[str, Any] | None:
        """The metadata of `kid` from the source holding it, or None."""
        source = self._by_kid.get(kid)
        return source.key_metadata(kid) if source else None

    def unwrap(self, kid: str, alg: str, encrypted_key: bytes) -> bytes:
        """Unwrap with the source holding `kid` (NoKeyFoundError when none does)."""
        source = self._by_kid.get(kid)
        if source is None:
            raise NoKeyFoundError(kid)
        return source.unwrap(kid, alg, encrypted_key)

    def health(self) -> None:
        """Each source's `health`; the first failure (naming its source) is raised."""
        for source in self.sources:
            source.health()

    def close(self) -> None:
        """Close every source."""
        for source in self.sources:
            source.close()

    def __repr__(self) -> str:
        return f"MergedKeySource({', '.join(self.names)})"


def _name(source: KeySource) -> str:
    name = getattr(source, "name", None)
    return name if isinstance(name, str) else repr(source)
