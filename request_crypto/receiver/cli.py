"""`request-crypto serve` and `request-crypto send`: the receiver and the sending side.

`register(app)` adds both commands to the main Typer app. Only typer, the standard library and
the core package are imported here; Starlette, Uvicorn and httpx (the ``server`` extra) are
imported when a command runs, with a clear message when they are missing.
"""

from __future__ import annotations

import copy
import importlib
import json
import os
import signal
import socket
import sys
import warnings
from pathlib import Path
from typing import Annotated, Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

import typer

from ..envelope import Format
from ..errors import RequestCryptoError
from ..request import RequestDecryptor, RequestEncryptor
from .config import (
    DEFAULT_HOST,
    DEFAULT_MAX_BODY,
    DEFAULT_PORT,
    ReceiverConfig,
    format_size,
    parse_size,
)
from .sinks import DEFAULT_SINK, describe_sink, open_sink

__all__ = ["register", "send", "serve"]

APP_FACTORY = "request_crypto.receiver.app:app_from_env"
PAYLOADS_PATH = "/v1/payloads"
_EXTRA_HINT = "install it with: pip install 'request_crypto[server]'"
_LOG_LEVELS = ("debug", "info", "warning", "error")


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def _require_server_extra(*modules: str) -> None:
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            _fail(f"this command needs {name}, part of the server extra; {_EXTRA_HINT}")


def _max_body(text: str) -> int:
    try:
        return parse_size(text)
    except RequestCryptoError as exc:
        raise typer.BadParameter(str(exc), param_hint="--max-body") from None


def _log_config(level: str) -> dict[str, Any]:
    """Uvicorn's logging config plus our request lines on stderr; applied in every worker."""
    from uvicorn.config import LOGGING_CONFIG  # noqa: PLC0415 (the server extra)

    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["request_crypto"] = {
        "format": "%(asctime)s %(levelname)s %(name)s %(message)s",
    }
    config["handlers"]["request_crypto"] = {
        "class": "logging.StreamHandler",
        "formatter": "request_crypto",
        "stream": "ext://sys.stderr",
    }
    config["loggers"]["request_crypto"] = {
        "handlers": ["request_crypto"],
        "level": level.upper(),
        "propagate": False,
    }
    return config


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        # Listening now: a client connecting right after the startup line waits in the backlog.
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        _fail(f"cannot listen on {host}:{port} ({exc.strerror or exc}); pick another --port")
    sock.set_inheritable(True)
    return sock


def serve(
    *,
    jwks: Annotated[
        Path,
        typer.Option(
            "--jwks",
            metavar="PRIVATE_SET",
            help="The private key-set file. Watched: a rotated file is used within seconds.",
            show_default=False,
        ),
    ],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = DEFAULT_HOST,
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="Port to listen on (0: any free port).")
    ] = DEFAULT_PORT,
    sink: Annotated[
        str,
        typer.Option(
            help="Where payloads go: sqlite:///FILE.db, jsonl:///FILE.jsonl or - (stdout)."
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
) -> None:
    """Run the receiver: decrypt POSTed bodies, store the payloads, publish the public keys."""
    limit = _max_body(max_body)
    if log_level.lower() not in _LOG_LEVELS:
        raise typer.BadParameter(f"use one of {', '.join(_LOG_LEVELS)}", param_hint="--log-level")
    _require_server_extra("starlette", "uvicorn")
    import uvicorn  # noqa: PLC0415 (the server extra)
    from uvicorn.supervisors import Multiprocess  # noqa: PLC0415 (the server extra)

    try:
        decryptor = RequestDecryptor.from_file(jwks, max_body_size=limit)
        sink_description = describe_sink(sink)
        open_sink(sink).close()  # creates the file / table now, so a bad path fails here
    except RequestCryptoError as exc:
        _fail(str(exc))
    keys = decryptor.keys
    private = [kid for kid in keys.kids() if keys.has_private_key(kid)]
    if not private:
        _fail(f"{jwks} holds no private key; serve needs the private key set, not the public one")

    config = ReceiverConfig(jwks=jwks, sink=sink, max_body=limit)
    # Every worker (a fresh process with --workers) builds its app from these variables.
    os.environ.update(config.to_env())
    uvicorn_config = uvicorn.Config(
        APP_FACTORY,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        lifespan="on",
        log_config=_log_config(log_level),
        log_level="warning",
        access_log=False,  # the receiver logs its own line per request
        timeout_graceful_shutdown=30,
    )
    # SIGTERM is a request to stop: Uvicorn shuts down gracefully (requests in flight finish,
    # the sink is drained), then re-raises the signal, which this handler turns into exit 0.
    # Installed before the startup line, so it is in place for anyone waiting for that line.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    sock = _bind(host, port)
    bound_port = sock.getsockname()[1]
    shown_host = f"[{host}]" if ":" in host else host
    plural = "s" if len(private) != 1 else ""
    # A signal in the instant before Uvicorn takes over leaves its coroutine unstarted.
    warnings.filterwarnings("ignore", "coroutine 'Server.serve' was never awaited")
    try:
        typer.echo(
            f"request-crypto receiver listening on http://{shown_host}:{bound_port} "
            f"(POST {PAYLOADS_PATH}, GET /.well-known/jwks.json) with {len(private)} key{plural} "
            f"({', '.join(private)}) from {jwks}; payloads go to {sink_description}; "
            f"max body {format_size(limit)}; {workers} worker{'s' if workers != 1 else ''}",
            err=True,
        )
        if workers == 1:
            # Startup failures (the sink cannot be opened...) make Uvicorn exit 3 itself.
            uvicorn.Server(uvicorn_config).run(sockets=[sock])
        else:
            Multiprocess(uvicorn_config, sockets=[sock]).run()
    except KeyboardInterrupt:
        pass  # Ctrl-C: Uvicorn has shut down gracefully (or had not started yet)
    finally:
        sock.close()


def _payloads_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        _fail(f"--url {url!r} is not an http(s) URL, e.g. http://127.0.0.1:8787{PAYLOADS_PATH}")
    if parts.path in ("", "/"):
        parts = parts._replace(path=PAYLOADS_PATH)
    return urlunsplit(parts)


def _read_document(source: str) -> Any:
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        _fail(f"cannot read {source}: {exc.strerror or exc}")
    except UnicodeDecodeError:
        _fail(f"{source} is not UTF-8 text; send a JSON document")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        where = "standard input" if source == "-" else source
        _fail(f"{where} is not valid JSON ({exc})")


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
        Format, typer.Option("--format", help="Wire format of the body.")
    ] = Format.ELASTIC,
    timeout: Annotated[
        float, typer.Option(min=0.1, help="Seconds to wait for the receiver.")
    ] = 30.0,
) -> None:
    """Encrypt a JSON document and POST it to a receiver; print the receiver's answer."""
    target = _payloads_url(url)
    _require_server_extra("httpx")
    import httpx  # noqa: PLC0415 (the server extra)

    document = _read_document(source)
    try:
        encryptor = RequestEncryptor.from_file(jwks, format=body_format)
        kids = encryptor.kids()
        if not kids:
            _fail(f"{jwks} holds no key to encrypt to")
        body = encryptor.encrypt(kid if kid is not None else kids[-1], document)
    except RequestCryptoError as exc:
        _fail(str(exc))
    content_type = "application/jose" if body_format is Format.JWE else "text/plain"
    try:
        response = httpx.post(
            target,
            content=body.encode("ascii"),
            headers={"content-type": content_type},
            timeout=timeout,
        )
    except httpx.HTTPError as exc:
        _fail(f"cannot send to {target}: {exc or type(exc).__name__}")
    if response.is_success:
        typer.echo(response.text.strip())
        return
    try:
        detail = response.json().get("error")
    except (ValueError, AttributeError):
        detail = None
    if not isinstance(detail, str):
        detail = " ".join(response.text.split())[:200] or response.reason_phrase
    _fail(f"the receiver answered {response.status_code}: {detail}")


def register(app: typer.Typer) -> None:
    """Add `serve` and `send` to the main `request-crypto` Typer app."""
    app.command("serve")(serve)
    app.command("send")(send)
