"""The receiver's settings: sizes like ``64MiB``, and passing settings to worker processes.

With ``--workers N`` Uvicorn starts N fresh processes that import the application by name, so
`request-crypto serve` puts its settings in environment variables and each worker builds its
app with `request_crypto.receiver.app:app_from_env`. Stdlib only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidArgumentError
from ..limits import DEFAULT_MAX_BODY_SIZE
from .sinks import DEFAULT_SINK

__all__ = [
    "DEFAULT_BODY_TIMEOUT",
    "DEFAULT_HEADER_TIMEOUT",
    "DEFAULT_HOST",
    "DEFAULT_JWKS_MAX_AGE",
    "DEFAULT_KEY_RELOAD_GRACE",
    "DEFAULT_MAX_BODY",
    "DEFAULT_MIN_BODY_RATE",
    "DEFAULT_PORT",
    "DEFAULT_RELOAD_INTERVAL",
    "ENV_PREFIX",
    "ReceiverConfig",
    "format_size",
    "parse_size",
]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8787
DEFAULT_MAX_BODY = DEFAULT_MAX_BODY_SIZE
DEFAULT_RELOAD_INTERVAL = 0.5
DEFAULT_JWKS_MAX_AGE = 300
#: Seconds a request head may take to arrive, from its first byte (or the connection's start).
DEFAULT_HEADER_TIMEOUT = 10.0
#: Seconds a body may take, plus one more second for every `DEFAULT_MIN_BODY_RATE` bytes sent.
DEFAULT_BODY_TIMEOUT = 30.0
DEFAULT_MIN_BODY_RATE = 64 * 1024
#: Seconds the key file may fail to reload before /healthz answers 503.
DEFAULT_KEY_RELOAD_GRACE = 60.0
ENV_PREFIX = "REQUEST_CRYPTO_RECEIVER_"

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1000,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1000**3,
    "gib": 1024**3,
}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*")


def parse_size(text: str) -> int:
    """``1048576``, ``512KiB``, ``10MB`` (10**7), ``64MiB``, ``1G`` (binary) -> bytes (>= 1)."""
    match = _SIZE.fullmatch(text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS:
        raise InvalidArgumentError(
            f"size {text!r} is not understood: write a number of bytes, optionally with a unit "
            "(KiB, MiB, GiB, KB, MB, GB), e.g. 64MiB"
        )
    number = match.group(1)
    size = int(float(number) * _UNITS[unit]) if "." in number else int(number) * _UNITS[unit]
    if size < 1:
        raise InvalidArgumentError(f"size {text!r} is below one byte")
    return size


def format_size(size: int) -> str:
    """64 MiB, 10000000 bytes...: the largest binary unit that divides `size` exactly."""
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size} bytes"


@dataclass(frozen=True)
class ReceiverConfig:
    """Everything `create_app` needs that can travel as text to a worker process."""

    jwks: Path
    sink: str = DEFAULT_SINK
    max_body: int = DEFAULT_MAX_BODY
    reload_interval: float = DEFAULT_RELOAD_INTERVAL
    jwks_max_age: int = DEFAULT_JWKS_MAX_AGE
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    min_body_rate: int = DEFAULT_MIN_BODY_RATE
    key_reload_grace: float = DEFAULT_KEY_RELOAD_GRACE

    def __post_init__(self) -> None:
        for name in ("header_timeout", "body_timeout", "min_body_rate"):
            if not getattr(self, name) > 0:
                raise InvalidArgumentError(f"{name} must be above 0, not {getattr(self, name)!r}")
        if not self.key_reload_grace >= 0:
            raise InvalidArgumentError(
                f"key_reload_grace must be 0 or more, not {self.key_reload_grace!r}"
            )

    def to_env(self) -> dict[str, str]:
        """The environment `from_env` reads this configuration back from."""
        return {
            f"{ENV_PREFIX}JWKS": str(Path(self.jwks).resolve()),
            f"{ENV_PREFIX}SINK": self.sink,
            f"{ENV_PREFIX}MAX_BODY": str(self.max_body),
            f"{ENV_PREFIX}RELOAD_INTERVAL": repr(self.reload_interval),
            f"{ENV_PREFIX}JWKS_MAX_AGE": str(self.jwks_max_age),
            f"{ENV_PREFIX}HEADER_TIMEOUT": repr(self.header_timeout),
            f"{ENV_PREFIX}BODY_TIMEOUT": repr(self.body_timeout),
            f"{ENV_PREFIX}MIN_BODY_RATE": str(self.min_body_rate),
            f"{ENV_PREFIX}KEY_RELOAD_GRACE": repr(self.key_reload_grace),
        }

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ReceiverConfig:
        """The configuration in `environ` (default: os.environ), as `to_env` writes it."""
        env = os.environ if environ is None else environ
        jwks = env.get(f"{ENV_PREFIX}JWKS")
        if not jwks:
            raise InvalidArgumentError(
                f"{ENV_PREFIX}JWKS is not set: it names the private key-set file to serve"
            )

        def number(name: str, default: float) -> float:
            text = env.get(f"{ENV_PREFIX}{name}")
            if text is None:
                return default
            try:
                return float(text)
            except ValueError:
                raise InvalidArgumentError(f"{ENV_PREFIX}{name}={text!r} is not a number") from None

        max_body_text = env.get(f"{ENV_PREFIX}MAX_BODY")
        return cls(
            jwks=Path(jwks),
            sink=env.get(f"{ENV_PREFIX}SINK", DEFAULT_SINK),
            max_body=parse_size(max_body_text) if max_body_text else DEFAULT_MAX_BODY,
            reload_interval=number("RELOAD_INTERVAL", DEFAULT_RELOAD_INTERVAL),
            jwks_max_age=int(number("JWKS_MAX_AGE", DEFAULT_JWKS_MAX_AGE)),
            header_timeout=number("HEADER_TIMEOUT", DEFAULT_HEADER_TIMEOUT),
            body_timeout=number("BODY_TIMEOUT", DEFAULT_BODY_TIMEOUT),
            min_body_rate=int(number("MIN_BODY_RATE", DEFAULT_MIN_BODY_RATE)),
            key_reload_grace=number("KEY_RELOAD_GRACE", DEFAULT_KEY_RELOAD_GRACE),
        )
