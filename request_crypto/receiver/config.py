"""The receiver's settings, one object: `ReceiverConfig`, and sizes like ``64MiB``.

`request-crypto serve` builds one ReceiverConfig from its options and uses it twice: in its own
process (the server's settings, and the app when it runs one worker) and, through `to_env`, in
every worker process, because with ``--workers N`` Uvicorn starts fresh processes that import
the app by name (`request_crypto.receiver.app:app_from_env`, which is
``create_app(ReceiverConfig.from_env())``). `create_app` takes the same object. So a setting
is defined once, here, and no path can drop it: the round trip through the environment is
tested field by field. Stdlib only.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, Union

from ..errors import InvalidArgumentError
from ..keys.uri import is_key_source_uri, is_signing_scheme
from ..limits import DEFAULT_MAX_BODY_SIZE, format_size, parse_size
from .sinks import DEFAULT_SINK, parse_sink_url

if TYPE_CHECKING:
    from ..keys.jwks import JWKSManager
    from ..keys.source import KeySource
    from ..request import RequestDecryptor
    from .sinks import Sink

__all__ = [
    "DEFAULT_BODY_TIMEOUT",
    "DEFAULT_HEADER_TIMEOUT",
    "DEFAULT_HOST",
    "DEFAULT_JWKS_MAX_AGE",
    "DEFAULT_KEY_RELOAD_GRACE",
    "DEFAULT_LIMIT_CONCURRENCY",
    "DEFAULT_MAX_BATCH",
    "DEFAULT_MAX_BODY",
    "DEFAULT_MIN_BODY_RATE",
    "DEFAULT_PORT",
    "DEFAULT_RELOAD_INTERVAL",
    "ENV_PREFIX",
    "HTTP_IMPLEMENTATIONS",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "KeySetSource",
    "ReceiverConfig",
    "ReceiverSettings",
    "env_name",
    "format_size",
    "parse_size",
    "replay_warning",
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
#: The most records one `Sink.write_batch` call gets.
DEFAULT_MAX_BATCH = 256
#: Connections and requests one worker serves at once; Uvicorn answers 503 to more. With the
#: app's own bound on large bodies (see `request_crypto.receiver.app`), this bounds memory.
DEFAULT_LIMIT_CONCURRENCY = 1000
LOG_LEVELS = ("debug", "info", "warning", "error")
#: ``text``: logfmt-style lines; ``json``: one JSON object per line (`JSONLogFormatter`).
LOG_FORMATS = ("text", "json")
#: The HTTP parser `serve` runs: ``auto`` is httptools when it is installed, else h11.
HTTP_IMPLEMENTATIONS = ("auto", "httptools", "h11")
ENV_PREFIX = "REQUEST_CRYPTO_RECEIVER_"

#: What the app accepts as keys: a key-set file (watched), a key-source URI (pkcs11:...,
#: aws-kms:...), several of those merged by kid (a tuple; its files watched), or an already
#: loaded set or source.
KeySetSource = Union[
    str,
    os.PathLike[str],
    tuple[str | os.PathLike[str], ...],
    Mapping[str, Any],
    "JWKSManager",
    "RequestDecryptor",
    "KeySource",
]

# ---------------------------------------------------------------------------------------------
# How each setting travels as text: (parse, format, what a valid value is)


@dataclass(frozen=True)
class _Codec:
    parse: Callable[[str], Any]
    format: Callable[[Any], str]
    expected: str


def _path_text(value: Any) -> str:
    if not isinstance(value, (str, os.PathLike)):
        raise InvalidArgumentError(
            "jwks is a loaded key set, which cannot travel to worker processes; "
            "give ReceiverConfig the key-set file's path"
        )
    return str(Path(value).resolve())


def _location(value: str | os.PathLike[str]) -> str | Path:
    """A key-source URI stays text; anything else is a key-set file's path."""
    text = os.fspath(value)
    return text if is_key_source_uri(text) else Path(text)


def key_locations(value: Any) -> str | Path | tuple[str | Path, ...] | None:
    """`jwks` as locations (a path, a URI, or several of them), or None for a loaded set."""
    if isinstance(value, (str, os.PathLike)):
        return _location(value)
    if isinstance(value, (tuple, list)) and all(isinstance(v, (str, os.PathLike)) for v in value):
        locations = tuple(_location(v) for v in value)
        if not locations:
            raise InvalidArgumentError("jwks names no key set: give at least one")
        return locations[0] if len(locations) == 1 else locations
    return None


def _locations_text(value: Any) -> str:
    """Paths (resolved) and URIs, one per line: what `_locations` parses back."""
    locations = key_locations(value)
    if locations is None:
        return _path_text(value)  # refuses a loaded set with its message
    each = locations if isinstance(locations, tuple) else (locations,)
    return "\n".join(v if isinstance(v, str) else _path_text(v) for v in each)


def _locations(text: str) -> str | Path | tuple[str | Path, ...]:
    locations = key_locations(tuple(text.split("\n")))
    assert locations is not None
    return locations


def _sink_text(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidArgumentError(
            "sink is a Sink object, which cannot travel to worker processes; "
            "give ReceiverConfig a sink URL"
        )
    return value


def _optional(codec: _Codec) -> _Codec:
    """The same codec with None as the empty string (a setting left to its automatic value)."""
    return _Codec(
        lambda text: None if text == "" else codec.parse(text),
        lambda value: "" if value is None else codec.format(value),
        f"{codec.expected}, or empty",
    )


def _sink_url(text: str) -> str:
    parse_sink_url(text)
    return text


def _log_level(text: str) -> str:
    if text.lower() not in LOG_LEVELS:
        raise ValueError(text)
    return text


def _one_of(choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(text)
        return text

    return parse


_PATH = _Codec(Path, _path_text, "a path")
_LOCATIONS = _Codec(_locations, _locations_text, "key-set paths or key-source URIs, one a line")
_SINK = _Codec(
    _sink_url,
    _sink_text,
    "a sink URL: sqlite:///PATH.db, jsonl:///PATH.jsonl, jsonl:///DIR/?seal=PUBLIC_SET, "
    "postgresql://USER@HOST/DB or -",
)
_LOG_LEVEL = _Codec(_log_level, str, f"one of {', '.join(LOG_LEVELS)}")
_LOG_FORMAT = _Codec(_one_of(LOG_FORMATS), str, f"one of {', '.join(LOG_FORMATS)}")
_HTTP = _Codec(_one_of(HTTP_IMPLEMENTATIONS), str, f"one of {', '.join(HTTP_IMPLEMENTATIONS)}")
_TEXT = _Codec(str, str, "text")
_INT = _Codec(int, str, "an integer")
_FLOAT = _Codec(float, repr, "a number")
_BYTES = _Codec(parse_size, str, "a size such as 1048576 or 64MiB")


def _bool(text: str) -> bool:
    if text not in ("0", "1"):
        raise ValueError(text)
    return text == "1"


def _key_source_text(value: Any) -> str:
    """URLs and key URIs as given, paths made absolute (workers may start elsewhere), one a
    line: what `_key_sources` parses back."""
    each = [value] if isinstance(value, (str, os.PathLike)) else list(value)
    return "\n".join(_one_key_source(os.fspath(v)) for v in each)


def _one_key_source(text: str) -> str:
    if text == "" or text.startswith(("https://", "http://")) or is_signing_scheme(text):
        return text
    return str(Path(text).resolve())


def _verify_locations(value: Any) -> str | tuple[str, ...] | None:
    """`verify_with` as one location, a tuple of several, or None (an empty list)."""
    if not isinstance(value, (list, tuple)):
        return None if value is None else os.fspath(value)
    many = tuple(os.fspath(v) for v in value)
    return many[0] if len(many) == 1 else many or None


def _key_sources(text: str) -> str | tuple[str, ...]:
    lines = tuple(text.split("\n"))
    return lines[0] if len(lines) == 1 else lines


_KEY_SOURCE = _Codec(
    _key_sources,
    _key_source_text,
    "paths, https:// or http:// URLs, or pkcs11:/aws-kms: URIs, one a line",
)
_BOOL = _Codec(_bool, lambda value: "1" if value else "0", "1 or 0")


def _env(codec: _Codec) -> dict[str, _Codec]:
    """A field's metadata: its environment codec (every field needs one: `to_env` reads all)."""
    return {"env": codec}


@dataclass(frozen=True, kw_only=True)
class ReceiverConfig:
    """Every setting of the receiver: the app's (`create_app`) and the server's (`serve`).

    App: `jwks` (a key-set file, watched every `reload_interval` seconds, None or 0: not
    watched; a key-source URI, pkcs11:... or aws-kms:...; a tuple of files and URIs, merged
    by kid, each file watched; or a loaded set: a mapping, a `JWKSManager`, a `KeySource`, a
    `RequestDecryptor`), `password_file` (the password of key-set files encrypted at rest,
    read at every load), `sink` (a
    URL, or a `Sink` object the caller keeps and closes), `max_body` (bytes; larger bodies get
    413), `jwks_max_age` (seconds of ``Cache-Control`` on the well-known set),
    `decrypt_threads` (bodies decrypted at once; None: the cores, at least 2; one thread more
    runs, for the one writing a batch to the sink), `large_bodies`
    (bodies over 256 KiB read at once; None: twice `decrypt_threads`), `max_batch` (records
    per sink write), `body_timeout` + 1 s per `min_body_rate` bytes (else 408),
    `key_reload_grace` (seconds a failing key file is tolerated before /healthz says 503).
    Signed bodies: `verify_with` (the senders' public signing set: a file, reloaded when it
    changes, an ``https://``/``http://`` JWKS URL, or a ``pkcs11:``/``aws-kms:`` signing key;
    a tuple of them is merged by kid), `require_signature` (unsigned bodies get
    401), `issuer`/`audience` (checked claims), `leeway` (seconds of clock skew).
    Server (ignored by `create_app`): `host`, `port`, `workers`, `log_level`, `log_format`,
    `limit_concurrency`, `header_timeout` (seconds for a request head), `http` (the HTTP
    parser: ``auto``, ``httptools`` or ``h11``).

    Only a config whose `jwks` is a path and `sink` a URL can go to worker processes
    (`to_env`). Values are checked when the object is made (InvalidArgumentError).
    """

    jwks: KeySetSource = field(metadata=_env(_LOCATIONS))
    sink: str | Sink = field(default=DEFAULT_SINK, metadata=_env(_SINK))
    max_body: int = field(default=DEFAULT_MAX_BODY, metadata=_env(_BYTES))
    reload_interval: float | None = field(
        default=DEFAULT_RELOAD_INTERVAL, metadata=_env(_optional(_FLOAT))
    )
    jwks_max_age: int = field(default=DEFAULT_JWKS_MAX_AGE, metadata=_env(_INT))
    decrypt_threads: int | None = field(default=None, metadata=_env(_optional(_INT)))
    large_bodies: int | None = field(default=None, metadata=_env(_optional(_INT)))
    max_batch: int = field(default=DEFAULT_MAX_BATCH, metadata=_env(_INT))
    header_timeout: float = field(default=DEFAULT_HEADER_TIMEOUT, metadata=_env(_FLOAT))
    body_timeout: float = field(default=DEFAULT_BODY_TIMEOUT, metadata=_env(_FLOAT))
    min_body_rate: int = field(default=DEFAULT_MIN_BODY_RATE, metadata=_env(_BYTES))
    key_reload_grace: float = field(default=DEFAULT_KEY_RELOAD_GRACE, metadata=_env(_FLOAT))
    host: str = field(default=DEFAULT_HOST, metadata=_env(_TEXT))
    port: int = field(default=DEFAULT_PORT, metadata=_env(_INT))
    workers: int = field(default=1, metadata=_env(_INT))
    log_level: str = field(default="info", metadata=_env(_LOG_LEVEL))
    log_format: str = field(default="text", metadata=_env(_LOG_FORMAT))
    limit_concurrency: int = field(default=DEFAULT_LIMIT_CONCURRENCY, metadata=_env(_INT))
    http: str = field(default="auto", metadata=_env(_HTTP))
    password_file: Path | None = field(default=None, metadata=_env(_optional(_PATH)))
    verify_with: str | tuple[str, ...] | None = field(
        default=None, metadata=_env(_optional(_KEY_SOURCE))
    )
    require_signature: bool = field(default=False, metadata=_env(_BOOL))
    issuer: str | None = field(default=None, metadata=_env(_optional(_TEXT)))
    audience: str | None = field(default=None, metadata=_env(_optional(_TEXT)))
    leeway: float = field(default=0.0, metadata=_env(_FLOAT))

    def __post_init__(self) -> None:
        locations = key_locations(self.jwks)
        if locations is not None:
            object.__setattr__(self, "jwks", locations)
        if self.password_file is not None:
            object.__setattr__(self, "password_file", Path(self.password_file))
        object.__setattr__(self, "verify_with", _verify_locations(self.verify_with))
        if isinstance(self.sink, str):
            parse_sink_url(self.sink)  # a bad URL fails here, not when the app starts
        for name, value, choices in (
            ("log_level", self.log_level.lower(), LOG_LEVELS),
            ("log_format", self.log_format, LOG_FORMATS),
            ("http", self.http, HTTP_IMPLEMENTATIONS),
        ):
            if value not in choices:
                raise InvalidArgumentError(
                    f"{name} {getattr(self, name)!r} refused: use one of {', '.join(choices)}"
                )
        if not 0 <= self.port <= 65535:
            raise InvalidArgumentError(f"port must be 0 to 65535, not {self.port!r}")
        at_least_one = ("max_body", "max_batch", "workers", "limit_concurrency", "min_body_rate")
        for name in (*at_least_one, "decrypt_threads", "large_bodies"):
            value = getattr(self, name)
            if value is not None and not value >= 1:
                raise InvalidArgumentError(f"{name} must be at least 1, not {value!r}")
        for name in ("header_timeout", "body_timeout"):
            if not getattr(self, name) > 0:
                raise InvalidArgumentError(f"{name} must be above 0, not {getattr(self, name)!r}")
        _check_signature_settings(self)
        for name in ("key_reload_grace", "jwks_max_age", "reload_interval", "leeway"):
            value = getattr(self, name)
            if value is not None and not value >= 0:
                raise InvalidArgumentError(f"{name} must be 0 or more, not {value!r}")

    def to_env(self) -> dict[str, str]:
        """Every setting as ``REQUEST_CRYPTO_RECEIVER_<NAME>`` variables, for `from_env`."""
        return {
            env_name(setting.name): _codec(setting).format(getattr(self, setting.name))
            for setting in dataclasses.fields(self)
        }

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ReceiverConfig:
        """The config `to_env` wrote (`os.environ` by default); unset variables: defaults.

        A value that does not parse is refused with an error naming its variable.
        """
        env = os.environ if environ is None else environ
        if not env.get(env_name("jwks")):
            raise InvalidArgumentError(
                f"{env_name('jwks')} is not set: it names the private key-set file to serve"
            )
        values: dict[str, Any] = {}
        for setting in dataclasses.fields(cls):
            name = env_name(setting.name)
            text = env.get(name)
            if text is None:
                continue
            codec = _codec(setting)
            try:
                values[setting.name] = codec.parse(text)
            except (ValueError, InvalidArgumentError):
                raise InvalidArgumentError(
                    f"{name}={text!r} is not understood: write {codec.expected}"
                ) from None
        return cls(**values)


def _check_signature_settings(config: ReceiverConfig) -> None:
    if config.verify_with is None and (
        config.require_signature or config.issuer is not None or config.audience is not None
    ):
        raise InvalidArgumentError(
            "require_signature, issuer and audience need verify_with: the senders' public "
            "signing set (a file or an https:// URL)"
        )


def replay_warning(config: ReceiverConfig) -> str | None:
    """What `serve` warns of when signed bodies go to stdout: their jtis live in memory only."""
    if config.verify_with is None or config.sink != "-":
        return None
    workers = config.workers
    shared = (
        f"; each of the {workers} workers has its own, so a replay reaching another worker is "
        "not refused"
        if workers > 1
        else ""
    )
    return (
        "warning: the stdout sink remembers signed bodies' jtis in memory only: a restart "
        f"forgets them{shared}; for replay refusal that holds, use a jsonl://, sqlite:// or "
        "postgresql:// sink"
    )


class ReceiverSettings(TypedDict, total=False):
    """`ReceiverConfig`'s fields but `jwks`, as keywords: `create_app(jwks, sink=..., ...)`."""

    sink: str | Sink
    max_body: int
    reload_interval: float | None
    jwks_max_age: int
    decrypt_threads: int | None
    large_bodies: int | None
    max_batch: int
    header_timeout: float
    body_timeout: float
    min_body_rate: int
    key_reload_grace: float
    host: str
    port: int
    workers: int
    log_level: str
    log_format: str
    limit_concurrency: int
    http: str
    password_file: Path | None
    verify_with: str | tuple[str, ...] | None
    require_signature: bool
    issuer: str | None
    audience: str | None
    leeway: float


def env_name(setting: str) -> str:
    """The environment variable that carries `setting` to worker processes."""
    return f"{ENV_PREFIX}{setting.upper()}"


def _codec(setting: dataclasses.Field[Any]) -> _Codec:
    codec = setting.metadata.get("env")
    if not isinstance(codec, _Codec):
        raise TypeError(f"ReceiverConfig.{setting.name} has no environment codec")
    return codec
