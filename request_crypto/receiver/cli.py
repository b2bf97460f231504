"""`request-crypto serve` and `request-crypto send`: the receiver and the sending side.

`register(app)` adds both commands to the main Typer app. Only typer, the standard library and
the core package are imported here; Starlette, Uvicorn and httpx (the ``server`` extra) are
imported when a command runs, with a clear message when they are missing. Reading INPUT,
loading key sets and reporting errors are shared with the other commands
(`request_crypto.cli._common`).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import resource
import signal
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast
from urllib.parse import urlsplit, urlunsplit

import typer

from ..cli._common import (
    PasswordFile,
    encrypt_document,
    fail,
    is_direct_set,
    is_uri,
    password_of,
    read_json_input,
    reported,
    with_keys,
)
from ..cli.signing import (
    Audience,
    ExpiresIn,
    Issuer,
    Leeway,
    SignKid,
    SignWith,
    VerifyWithMany,
    signing_options,
    verification_keys,
)
from ..errors import RequestCryptoError
from ..formats import Format, detect_format
from ..keyfile import require_private_keys
from ..keys.uri import refuse_unknown_scheme
from ..nested import DEFAULT_EXPIRES_IN
from ._keys import checked_kids, file_keys
from .config import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_HOST,
    DEFAULT_JWKS_MAX_AGE,
    DEFAULT_KEY_RELOAD_GRACE,
    DEFAULT_LIMIT_CONCURRENCY,
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_BODY,
    DEFAULT_MIN_BODY_RATE,
    DEFAULT_PORT,
    DEFAULT_RELOAD_INTERVAL,
    LOG_LEVELS,
    ReceiverConfig,
    format_size,
    parse_size,
    replay_warning,
)
from .sinks import DEFAULT_SINK, describe_sink, open_sink

if TYPE_CHECKING:
    import uvicorn

__all__ = ["DEFAULT_LIMIT_CONCURRENCY", "register", "send", "serve"]

APP_FACTORY = "request_crypto.receiver.app:app_from_env"
PAYLOADS_PATH = "/v1/payloads"
_EXTRA_HINT = "install it with: pip install 'request_crypto[server]'"
#: The signals `serve` (or Uvicorn's multi-worker supervisor) handles; restored afterwards.
_SIGNALS = tuple(
    getattr(signal, f"SIG{name}")
    for name in ("INT", "TERM", "HUP", "QUIT", "TTIN", "TTOU", "USR1", "USR2", "WINCH")
    if hasattr(signal, f"SIG{name}")
)


def _require_server_extra(*modules: str) -> None:
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            fail(f"this command needs {name}, part of the server extra; {_EXTRA_HINT}")


def _size(text: str, option: str) -> int:
    try:
        return parse_size(text)
    except RequestCryptoError as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from None


# ---------------------------------------------------------------------------------------------
# serve: validate everything, then bind, then run


@dataclass(frozen=True)
class _Plan:
    """What `serve` was asked for, checked: nothing is listening or changed yet."""

    config: ReceiverConfig
    kids: list[str]
    sink_description: str


def _validate(config: ReceiverConfig) -> _Plan:
    """Check the key set and the sink; the sink's file is created last.

    The keys come first, so a wrong key set leaves no payload database behind.
    """
    _require_server_extra("starlette", "uvicorn")
    jwks = config.jwks
    password = config.password_file
    if isinstance(jwks, Path) and is_direct_set(jwks, password_of(password)):
        kids = file_keys(jwks, config.max_body, password).decryptor.source.kids()
    elif isinstance(jwks, Path):
        kids = require_private_keys(with_keys(jwks, password=password_of(password)), jwks, "serve")
    else:  # key-source URIs or several sets: opened now, so a bad one fails before binding
        each = cast(tuple[str, ...], jwks if isinstance(jwks, tuple) else (jwks,))
        kids = checked_kids(each, config.max_body, password)
    if config.verify_with is not None:
        verification_keys(config.verify_with)  # a bad senders' set fails here, not per body
    sink = cast(str, config.sink)
    sink_description = describe_sink(sink)  # a bad URL fails here, before any file exists
    open_sink(sink).close()  # creates the file / table now, so a bad path fails here
    return _Plan(config=config, kids=kids, sink_description=sink_description)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP (and
    # accepted sockets inherit it). The protocol sets it too, whatever made the socket.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        # Listening now: a client connecting right after the startup line waits in the backlog.
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        fail(f"cannot listen on {host}:{port} ({exc.strerror or exc}); pick another --port")
    sock.set_inheritable(True)
    return sock


def _raise_fd_limit(needed: int) -> str | None:
    """Raise the soft open-file limit to the hard one; a warning if `needed` does not fit.

    Each connection is a file descriptor: 1,000 of them (``--limit-concurrency``) do not fit
    in the usual soft limit of 1,024.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):  # e.g. a hard limit of "unlimited"
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY and soft < needed:
        return (
            f"warning: only {soft} open files allowed (ulimit -n), fewer than the "
            f"{needed} that --limit-concurrency needs; raise the limit or lower the option"
        )
    return None


class _GracefulStop:
    """SIGTERM or Ctrl-C while `serve` has the signals: stop gracefully, exit code 0.

    Until Uvicorn installs its own handlers (and after it restores these and re-raises the
    signal it caught) this asks the server to stop, so a signal at any moment gives the same
    graceful shutdown: requests in flight finish, the sink is drained, `serve` returns.
    """

    def __init__(self) -> None:
        self.requested = False
        self.server: uvicorn.Server | None = None

    def __call__(self, signum: int, frame: object) -> None:
        self.requested = True
        if self.server is not None:
            self.server.should_exit = True


@contextlib.contextmanager
def _serving_settings(config: ReceiverConfig) -> Iterator[_GracefulStop]:
    """The process-wide settings serving needs, undone afterwards, also after a failure.

    Every worker (a fresh process with --workers) builds its app from environment variables;
    the signal handlers are `_GracefulStop`'s, and Uvicorn's supervisor installs its own.
    """
    environment = config.to_env()
    saved_environment = {name: os.environ.get(name) for name in environment}
    main_thread = threading.current_thread() is threading.main_thread()
    saved_signals = {sig: signal.getsignal(sig) for sig in _SIGNALS} if main_thread else {}
    stop = _GracefulStop()
    os.environ.update(environment)
    try:
        if main_thread:
            signal.signal(signal.SIGTERM, stop)
            signal.signal(signal.SIGINT, stop)
        yield stop
    finally:
        for sig, handler in saved_signals.items():
            if handler is not None:
                signal.signal(sig, handler)
        for name, value in saved_environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _run(plan: _Plan, sock: socket.socket) -> None:
    """Serve on the bound socket until stopped; Uvicorn exits 3 itself on a startup failure."""
    import uvicorn  # noqa: PLC0415 (the server extra)
    from uvicorn.supervisors import Multiprocess  # noqa: PLC0415 (the server extra)

    from .observability import log_config  # noqa: PLC0415 (the server extra)
    from .protocol import protocol_for  # noqa: PLC0415 (the server extra)

    with _serving_settings(plan.config) as stop:
        uvicorn_config = uvicorn.Config(
            APP_FACTORY,
            factory=True,
            http=cast(Any, protocol_for(plan.config)),  # a protocol factory, as Uvicorn calls it
            host=plan.config.host,
            port=plan.config.port,
            workers=plan.config.workers,
            lifespan="on",
            log_config=log_config(plan.config.log_level, plan.config.log_format),
            log_level="warning",
            access_log=False,  # the receiver logs its own line per request
            timeout_graceful_shutdown=30,
            limit_concurrency=plan.config.limit_concurrency,
        )
        server = uvicorn.Server(uvicorn_config) if plan.config.workers == 1 else None
        stop.server = server
        _announce(plan, sock)
        if server is not None:
            server.run(sockets=[sock])
            return
        supervisor = Multiprocess(uvicorn_config, sockets=[sock])  # takes over the signals
        if not stop.requested:
            supervisor.run()


def _announce(plan: _Plan, sock: socket.socket) -> None:
    """The startup line: where it listens, which keys, where payloads go, the limits."""
    host = f"[{plan.config.host}]" if ":" in plan.config.host else plan.config.host
    kids = plan.kids
    workers = plan.config.workers
    line = (
        f"request-crypto receiver listening on http://{host}:{sock.getsockname()[1]} "
        f"(POST {PAYLOADS_PATH}, GET /.well-known/jwks.json) with {len(kids)} "
        f"key{'s' if len(kids) != 1 else ''} ({', '.join(kids)}) from {plan.config.jwks}; "
        f"payloads go to {plan.sink_description}; max body {format_size(plan.config.max_body)}; "
        f"{workers} worker{'s' if workers != 1 else ''}; request heads within "
        f"{plan.config.header_timeout:g} s, bodies within {plan.config.body_timeout:g} s + 1 s "
        f"per {format_size(plan.config.min_body_rate)}"
    )
    if plan.config.log_format == "json":  # every line on stderr is then one JSON object
        from .observability import JSONLogFormatter  # noqa: PLC0415 (the server extra)

        name = "request_crypto.receiver"
        record = logging.LogRecord(name, logging.INFO, __file__, 0, line, None, None)
        line = JSONLogFormatter().format(record)
    typer.echo(line, err=True)


def serve(
    *,
    jwks: Annotated[
        list[str],
        typer.Option(
            "--jwks",
            metavar="PRIVATE_SET|URI",
            help="The private key-set file, or a set of dir secrets (watched: a rotated file "
            "is used within seconds), or a key-source URI (pkcs11:..., aws-kms:...). Repeat "
            "to serve several, merged by kid (each file watched).",
            show_default=False,
        ),
    ],
    password_file: PasswordFile = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = DEFAULT_HOST,
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="Port to listen on (0: any free port).")
    ] = DEFAULT_PORT,
    sink: Annotated[
        str,
        typer.Option(
            help="Where payloads go: sqlite:///FILE.db, jsonl:///FILE.jsonl, "
            "jsonl:///DIR/?seal=PUBLIC_SET (a sealed archive), postgresql://USER@HOST/DB "
            "or - (stdout)."
        ),
    ] = DEFAULT_SINK,
    max_body: Annotated[
        str,
        typer.Option(
            "--max-body", help="Largest body accepted (413 above): 64MiB, 10MB, 1048576..."
        ),
    ] = format_size(DEFAULT_MAX_BODY).replace(" ", ""),
    workers: Annotated[
        int, typer.Option(min=1, help="Worker processes sharing the port; about one per core.")
    ] = 1,
    log_level: Annotated[
        str, typer.Option(help="Log level of the request lines: debug, info, warning, error.")
    ] = "info",
    log_format: Annotated[
        str,
        typer.Option(
            "--log-format", help="text, or json: one JSON object per log line (request lines)."
        ),
    ] = "text",
    limit_concurrency: Annotated[
        int,
        typer.Option(
            "--limit-concurrency",
            min=1,
            help="Connections and requests per worker at once; more get 503. With at most a "
            "few bodies over 256 KiB buffered at a time, this bounds the memory used.",
        ),
    ] = DEFAULT_LIMIT_CONCURRENCY,
    http: Annotated[
        str,
        typer.Option(help="HTTP parser: auto (httptools if installed, else h11), httptools, h11."),
    ] = "auto",
    header_timeout: Annotated[
        float,
        typer.Option(
            "--header-timeout",
            min=0.001,
            help="Seconds a request head may take to arrive; slower clients get 408 and are "
            "disconnected.",
        ),
    ] = DEFAULT_HEADER_TIMEOUT,
    body_timeout: Annotated[
        float,
        typer.Option(
            "--body-timeout",
            min=0.001,
            help="Seconds a body may take to arrive, plus 1 s per --min-body-rate bytes; "
            "slower bodies get 408 and are disconnected.",
        ),
    ] = DEFAULT_BODY_TIMEOUT,
    min_body_rate: Annotated[
        str,
        typer.Option(
            "--min-body-rate",
            help="Bytes per second a large body must keep up (see --body-timeout).",
        ),
    ] = format_size(DEFAULT_MIN_BODY_RATE).replace(" ", ""),
    key_reload_grace: Annotated[
        float,
        typer.Option(
            "--key-reload-grace",
            min=0,
            help="Seconds the key file may fail to reload before /healthz answers 503.",
        ),
    ] = DEFAULT_KEY_RELOAD_GRACE,
    reload_interval: Annotated[
        float,
        typer.Option(
            "--reload-interval",
            min=0,
            help="Seconds between looks at the key file for a rotation (0: never reload).",
        ),
    ] = DEFAULT_RELOAD_INTERVAL,
    jwks_max_age: Annotated[
        int,
        typer.Option(
            "--jwks-max-age",
            min=0,
            help="Seconds senders may cache /.well-known/jwks.json (Cache-Control max-age).",
        ),
    ] = DEFAULT_JWKS_MAX_AGE,
    decrypt_threads: Annotated[
        int | None,
        typer.Option(
            "--decrypt-threads",
            min=1,
            help="Bodies each worker decrypts at once (default: the cores, at least 2); one "
            "thread more runs, for the one writing a batch to the sink.",
            show_default=False,
        ),
    ] = None,
    large_bodies: Annotated[
        int | None,
        typer.Option(
            "--large-bodies",
            min=1,
            help="Bodies over 256 KiB each worker reads and decrypts at once "
            "(default: twice --decrypt-threads).",
            show_default=False,
        ),
    ] = None,
    max_batch: Annotated[
        int,
        typer.Option(
            "--max-batch", min=1, help="Most payloads the sink stores in one transaction."
        ),
    ] = DEFAULT_MAX_BATCH,
    verify_with: VerifyWithMany = None,
    require_signature: Annotated[
        bool,
        typer.Option(
            "--require-signature",
            help="Refuse unsigned bodies (401); needs --verify-with.",
        ),
    ] = False,
    issuer: Issuer = None,
    audience: Audience = None,
    leeway: Leeway = 0.0,
) -> None:
    """Run the receiver: decrypt POSTed bodies, store the payloads, publish the public keys.

    With --verify-with, a signed body (a JWT inside the jwe) is verified with the senders'
    public signing set before it is stored; a bad or unknown signature gets 401.
    """
    if log_level.lower() not in LOG_LEVELS:
        raise typer.BadParameter(f"use one of {', '.join(LOG_LEVELS)}", param_hint="--log-level")
    with reported():
        for location in jwks:
            if not is_uri(location):
                refuse_unknown_scheme(location)
        config = ReceiverConfig(
            jwks=tuple(jwks),
            password_file=password_file,
            sink=sink,
            max_body=_size(max_body, "--max-body"),
            reload_interval=reload_interval,
            jwks_max_age=jwks_max_age,
            decrypt_threads=decrypt_threads,
            large_bodies=large_bodies,
            max_batch=max_batch,
            header_timeout=header_timeout,
            body_timeout=body_timeout,
            min_body_rate=_size(min_body_rate, "--min-body-rate"),
            key_reload_grace=key_reload_grace,
            host=host,
            port=port,
            workers=workers,
            log_level=log_level,
            log_format=log_format,
            limit_concurrency=limit_concurrency,
            http=http,
            verify_with=tuple(verify_with or ()) or None,
            require_signature=require_signature,
            issuer=issuer,
            audience=audience,
            leeway=leeway,
        )
        plan = _validate(config)
    warning = _raise_fd_limit(limit_concurrency + 64)  # + the sink, key file, logs, pipes...
    for line in (warning, replay_warning(config)):
        if line is not None:
            typer.echo(line, err=True)
    sock = _bind(host, port)
    try:
        _run(plan, sock)
    finally:
        sock.close()


# ---------------------------------------------------------------------------------------------
# send


def _payloads_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        fail(f"--url {url!r} is not an http(s) URL, e.g. http://127.0.0.1:8787{PAYLOADS_PATH}")
    if parts.path in ("", "/"):
        parts = parts._replace(path=PAYLOADS_PATH)
    return urlunsplit(parts)


def send(
    *,
    jwks: Annotated[
        Path,
        typer.Option(
            "--jwks",
            metavar="PUBLIC_SET",
            help="The public key set the receiver publishes.",
            show_default=False,
        ),
    ],
    url: Annotated[
        str,
        typer.Option(
            metavar="URL",
            help=f"The receiver's URL; a bare http://host:port gets {PAYLOADS_PATH}.",
            show_default=False,
        ),
    ],
    source: Annotated[
        str, typer.Argument(metavar="[INPUT|-]", help="JSON document to send; - for stdin.")
    ] = "-",
    kid: Annotated[
        str | None, typer.Option(help="Key to encrypt to (default: the newest, the last).")
    ] = None,
    body_format: Annotated[
        Format | None,
        typer.Option(
            "--format",
            help="Wire format of the body (default: elastic; jwe with --sign-with).",
            show_default=False,
        ),
    ] = None,
    timeout: Annotated[
        float, typer.Option(min=0.1, help="Seconds to wait for the receiver.")
    ] = 30.0,
    sign_with: SignWith = None,
    sign_kid: SignKid = None,
    issuer: Issuer = None,
    audience: Audience = None,
    expires_in: ExpiresIn = DEFAULT_EXPIRES_IN,
) -> None:
    """Encrypt a JSON document and POST it to a receiver; print the receiver's answer.

    With --sign-with the document is signed as a JWT first (see `encrypt`).
    """
    with reported():
        target = _payloads_url(url)
        _require_server_extra("httpx")
        signing = signing_options(sign_with, sign_kid, issuer, audience, expires_in)
        document = read_json_input(source, "send")
        body = encrypt_document(jwks, document, kid, body_format, signing)[1]
    _post(target, body, detect_format(body), timeout)


def _post(target: str, body: str, body_format: Format, timeout: float) -> None:
    """POST the body; the answer on stdout, or the receiver's error as one `error:` line."""
    import httpx  # noqa: PLC0415 (the server extra)

    content_type = "application/jose" if body_format is Format.JWE else "text/plain"
    try:
        response = httpx.post(
            target,
            content=body.encode("ascii"),
            headers={"content-type": content_type},
            timeout=timeout,
        )
    except httpx.HTTPError as exc:
        fail(f"cannot send to {target}: {exc or type(exc).__name__}")
    if response.is_success:
        typer.echo(response.text.strip())
        return
    try:
        detail = response.json().get("error")
    except (ValueError, AttributeError):
        detail = None
    if not isinstance(detail, str):
        detail = " ".join(response.text.split())[:200] or response.reason_phrase
    # `fail` escapes control characters: the receiver's text must not rewrite the terminal.
    fail(f"the receiver answered {response.status_code}: {detail[:500]}")


def register(app: typer.Typer) -> None:
    """Add `serve` and `send` to the main `request-crypto` Typer app."""
    app.command("serve")(serve)
    app.command("send")(send)
