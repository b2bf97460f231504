"""What operators watch: Prometheus metrics (``GET /metrics``) and JSON log lines.

`ReceiverMetrics` holds one receiver's metrics in a registry of its own (two apps in one
process, as in tests, do not share counters):

- ``request_crypto_requests_total{status, format}``: answered requests (format ``none`` when
  the body was refused before its format was known);
- ``request_crypto_decrypt_seconds`` and ``request_crypto_sink_seconds``: histograms of the
  time to decrypt one body and to store one batch;
- ``request_crypto_batch_size``: records per batch (how much group commit is shared);
- ``request_crypto_sink_failures_total``: batches the sink refused (each answered 503);
- ``request_crypto_keys_loaded``, ``request_crypto_key_reloads_total{result}`` and
  ``request_crypto_key_reload_timestamp_seconds``: the key set in use and how reloads went;
- ``request_crypto_key_source_failures_total``: failed reads of the key source.

With ``--workers N`` each worker process has its own registry and answers ``/metrics`` for
itself; run one worker per replica behind the load balancer (docs/deployment.md) so every
scrape sees the whole process.

`JSONLogFormatter` writes each log record as one JSON object; request lines carry the
access-log fields (method, path, status, kid, format, size, duration_ms, id, error).

`RequestLineHandler` is the handler `log_config` gives the ``request_crypto`` loggers: besides
records, it takes a request's line ready-made (`RequestLineHandler.request_line`), formatted as
its formatter would format the record (same bytes) but without building a `logging.LogRecord`
(its fields, ``findCaller``-free as it is, cost more than the line), the time's text up to the
second cached. Needs the ``server`` extra (prometheus-client).
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = [
    "METRICS_CONTENT_TYPE",
    "JSONLogFormatter",
    "ReceiverMetrics",
    "RequestLineFormatter",
    "RequestLineHandler",
    "log_config",
]

METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class ReceiverMetrics:
    """One receiver's metrics; `render` gives the Prometheus text exposition."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "request_crypto_requests",
            "Requests answered, by HTTP status and body format",
            ["status", "format"],
            registry=r,
        )
        self._request_counters: dict[tuple[int, str | None], Counter] = {}
        self.decrypt_seconds = Histogram(
            "request_crypto_decrypt_seconds",
            "Time to decrypt one body",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.sink_seconds = Histogram(
            "request_crypto_sink_seconds",
            "Time to store one batch (until committed)",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "request_crypto_batch_size",
            "Records per sink batch",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.sink_failures = Counter(
            "request_crypto_sink_failures", "Batches the sink failed to store", registry=r
        )
        self.keys_loaded = Gauge(
            "request_crypto_keys_loaded", "Private keys in the key set in use", registry=r
        )
        self.key_reloads = Counter(
            "request_crypto_key_reloads", "Key-set reloads, by result", ["result"], registry=r
        )
        self.key_reload_timestamp = Gauge(
            "request_crypto_key_reload_timestamp_seconds",
            "When the key set in use was loaded (Unix time)",
            registry=r,
        )
        self.key_source_failures = Counter(
            "request_crypto_key_source_failures",
            "Failed reads of the key source (the previous set stays in use)",
            registry=r,
        )

    def observe_request(self, status: int, body_format: str | None) -> None:
        """Count one answered request (each label pair's counter looked up once)."""
        key = (status, body_format)
        counter = self._request_counters.get(key)
        if counter is None:
            counter = self.requests.labels(status=str(status), format=body_format or "none")
            self._request_counters[key] = counter
        counter.inc()

    def observe_batch(self, size: int, seconds: float, *, failed: bool) -> None:
        """Record one sink batch: its size, how long it took, whether the sink refused it."""
        self.batch_size.observe(size)
        self.sink_seconds.observe(seconds)
        if failed:
            self.sink_failures.inc()

    def keys_reloaded(self, count: int) -> None:
        """A key set of `count` keys is now in use."""
        self.keys_loaded.set(count)
        self.key_reloads.labels(result="ok").inc()
        self.key_reload_timestamp.set(time.time())

    def key_reload_failed(self) -> None:
        """A reload failed; the previous key set stays in use."""
        self.key_reloads.labels(result="failed").inc()
        self.key_source_failures.inc()

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric (serve as `METRICS_CONTENT_TYPE`)."""
        return generate_latest(self.registry)


#: The text format of the receiver's lines: ``2026-11-27 17:10:51,123 INFO name message``.
TEXT_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class RequestLineFormatter(logging.Formatter):
    """`TEXT_LOG_FORMAT`, and the same text for a request line given without a record."""

    def __init__(self) -> None:
        super().__init__(TEXT_LOG_FORMAT)
        self._second: tuple[int, str] = (-1, "")

    def request_text(
        self, created: float, level: int, name: str, line: str, fields: Mapping[str, object]
    ) -> str:
        """What `format` gives a record of `line` made at `created` (``msecs`` as Python 3.11's
        `logging.LogRecord` computes it), the date and time up to the second cached."""
        seconds = int(created)
        cached, text = self._second
        if seconds != cached:
            text = time.strftime(self.default_time_format, self.converter(seconds))
            self._second = (seconds, text)
        millis = int((created - seconds) * 1000)
        return f"{text},{millis:03d} {logging.getLevelName(level)} {name} {line}"


class JSONLogFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, and request fields."""

    def __init__(self) -> None:
        super().__init__()
        self._second: tuple[int, str] = (-1, "")

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON (no line breaks, whatever the message holds)."""
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "request_crypto", None)
        if isinstance(fields, dict):  # an access-log line: its fields replace the logfmt text
            entry["message"] = "request"
            entry.update({k: v for k, v in fields.items() if k not in entry})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)

    def request_text(
        self, created: float, level: int, name: str, line: str, fields: Mapping[str, object]
    ) -> str:
        """What `format` gives a request line's record made at `created`, without the record
        (the date and time up to the second cached)."""
        seconds, micros = _split_time(created)
        cached, text = self._second
        if seconds != cached:
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
            self._second = (seconds, text)
        entry: dict[str, object] = {
            "time": f"{text}.{micros // 1000:03d}+00:00",
            "level": logging.getLevelName(level).lower(),
            "logger": name,
            "message": "request",
        }
        entry.update({k: v for k, v in fields.items() if k not in entry})
        return json.dumps(entry, ensure_ascii=False, default=str)


def _split_time(created: float) -> tuple[int, int]:
    """Whole seconds and microseconds of a Unix time, rounded as `datetime.fromtimestamp`."""
    whole = int(created)
    micros = round((created - whole) * 1e6)
    if micros >= 1_000_000:
        return whole + 1, micros - 1_000_000
    return whole, micros


#: Request lines written by an event loop wait at most this long (seconds) to be written
#: together, or until this many characters are waiting.
LINE_DELAY = 0.01
LINE_BUFFER = 64 * 1024


class RequestLineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A `logging.StreamHandler` that also takes request lines ready-made (`request_line`).

    Lines given on an event loop's thread are written together, at most `LINE_DELAY` s later
    (one ``write`` for many requests rather than one each: every write is a system call, and
    the loop lets go of the GIL for it, to a decrypt thread it then waits for). Any other
    record, `flush` and `close` write them first, so the order of lines is kept.
    """

    _FORMATTERS = (RequestLineFormatter, JSONLogFormatter)

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self._lines: list[str] = []
        self._waiting = 0  # characters in `_lines`
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None

    def request_line(self, level: int, name: str, line: str, fields: Mapping[str, object]) -> bool:
        """Write a request's line (logger `name`, text `line`, JSON `fields`) as a record of it
        would be; False (nothing written) when this handler's level, filters or formatter
        need the record, so the caller logs it as one."""
        formatter = self.formatter
        if level < self.level or self.filters or type(formatter) not in self._FORMATTERS:
            return False
        assert isinstance(formatter, (RequestLineFormatter, JSONLogFormatter))
        text = formatter.request_text(time.time(), level, name, line, fields) + self.terminator
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        self.acquire()
        try:
            self._lines.append(text)
            self._waiting += len(text)
            if self._timer is not None and self._timer_loop is not loop:
                self._write_lines()  # another loop's timer, which may never run now
            if loop is None or self._waiting >= LINE_BUFFER or loop.is_closed():
                self._write_lines()
            elif self._timer is None:
                self._timer = loop.call_later(LINE_DELAY, self._write_lines)
                self._timer_loop = loop
        finally:
            self.release()
        return True

    def _write_lines(self) -> None:
        """Write the waiting request lines, in one write (the handler's lock is reentrant)."""
        self.acquire()
        try:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if not self._lines:
                return
            text = "".join(self._lines)
            self._lines.clear()
            self._waiting = 0
            try:
                self.stream.write(text)
                super().flush()
            except Exception:  # as `emit` does: logging never breaks the request
                self.handleError(logging.makeLogRecord({"msg": text}))
        finally:
            self.release()

    def emit(self, record: logging.LogRecord) -> None:
        """The waiting request lines, then `record`."""
        self._write_lines()
        super().emit(record)

    def flush(self) -> None:
        self._write_lines()
        super().flush()

    def close(self) -> None:
        self._write_lines()
        super().close()


def log_config(level: str, log_format: str = "text") -> dict[str, Any]:
    """Uvicorn's logging config plus our request lines on stderr; applied in every worker.

    `log_format` ``json``: every line of the receiver's and Uvicorn's one JSON object.
    """
    from uvicorn.config import LOGGING_CONFIG  # noqa: PLC0415 (the server extra)

    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["request_crypto"] = {"()": f"{__name__}.RequestLineFormatter"}
    if log_format == "json":
        json_formatter = {"()": f"{__name__}.JSONLogFormatter"}
        for name in config["formatters"]:
            config["formatters"][name] = json_formatter
    config["handlers"]["request_crypto"] = {
        "class": f"{__name__}.RequestLineHandler",
        "formatter": "request_crypto",
        "stream": "ext://sys.stderr",
    }
    config["loggers"]["request_crypto"] = {
        "handlers": ["request_crypto"],
        "level": level.upper(),
        "propagate": False,
    }
    return config
