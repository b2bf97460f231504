"""Prometheus metrics and JSON log lines (request_crypto.receiver.observability)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import logging.config
import random
import types
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from request_crypto.receiver import _http, observability
from request_crypto.receiver.observability import (
    JSONLogFormatter,
    ReceiverMetrics,
    RequestLineFormatter,
    RequestLineHandler,
    log_config,
)


def samples(metrics: ReceiverMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.render().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_count_requests_batches_and_reloads() -> None:
    metrics = ReceiverMetrics()
    metrics.observe_request(202, "jwe")
    metrics.observe_request(202, "jwe")
    metrics.observe_request(400, None)
    metrics.observe_batch(3, 0.004, failed=False)
    metrics.observe_batch(5, 0.2, failed=True)
    metrics.keys_reloaded(2)
    metrics.key_reload_failed()
    got = samples(metrics)
    assert got["request_crypto_requests_total", (("format", "jwe"), ("status", "202"))] == 2
    assert got["request_crypto_requests_total", (("format", "none"), ("status", "400"))] == 1
    assert got["request_crypto_batch_size_count", ()] == 2
    assert got["request_crypto_batch_size_sum", ()] == 8
    assert got["request_crypto_sink_seconds_bucket", (("le", "0.005"),)] == 1
    assert got["request_crypto_sink_failures_total", ()] == 1
    assert got["request_crypto_keys_loaded", ()] == 2
    assert got["request_crypto_key_reloads_total", (("result", "failed"),)] == 1
    assert got["request_crypto_key_source_failures_total", ()] == 1
    assert got["request_crypto_key_reload_timestamp_seconds", ()] > 1.7e9


def test_two_receivers_keep_separate_metrics() -> None:
    one, two = ReceiverMetrics(), ReceiverMetrics()
    one.observe_request(202, "elastic")
    assert ("request_crypto_requests_total", (("format", "elastic"), ("status", "202"))) not in (
        samples(two)
    )


def test_json_log_lines_carry_request_fields_and_never_break_lines() -> None:
    formatter = JSONLogFormatter()
    fields = {"method": "POST", "status": 202, "kid": "k\nforged=1", "duration_ms": 1.5}
    record = logging.LogRecord(
        "request_crypto.receiver", logging.INFO, __file__, 1, "%s", ("x",), None
    )
    record.request_crypto = fields
    line = formatter.format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == "request"
    assert entry["level"] == "info"
    assert {k: entry[k] for k in fields} == fields
    plain = logging.LogRecord("x", logging.ERROR, __file__, 1, "two\nlines", (), None)
    assert json.loads(formatter.format(plain))["message"] == "two\nlines"


FORMATTERS = [RequestLineFormatter, JSONLogFormatter]


@pytest.mark.parametrize("formatter_class", FORMATTERS)
def test_request_text_is_what_format_gives_the_record(
    formatter_class: type[RequestLineFormatter | JSONLogFormatter],
) -> None:
    """The ready-made line (no LogRecord) has the record's bytes, time included, whatever the
    fraction of the second (rounding at the millisecond's edges) and across seconds."""
    formatter = formatter_class()
    fields = {"method": "POST", "path": "/v1/payloads", "status": 202, "kid": 'k"\n\u00e9'}
    line = "method=POST path=/v1/payloads status=202"
    rng = random.Random(13)
    times = [1_795_000_000 + rng.random() * 5 for _ in range(2000)]
    times += [1_795_000_000.9999996, 1_795_000_001.0, 1_795_000_000.0005, 1_795_000_000.1239996]
    for created in times:
        for level in (logging.INFO, logging.ERROR):
            record = logging.LogRecord(
                "request_crypto.receiver", level, __file__, 0, "%s", (line,), None
            )
            record.created = created
            record.msecs = int((created - int(created)) * 1000) + 0.0  # as Python 3.11 does
            record.request_crypto = fields
            made = formatter.request_text(created, level, record.name, line, fields)
            assert made == formatter.format(record), created


@pytest.fixture
def request_logger() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """The receiver's logger as `log_config` sets it up, writing to a StringIO. (Each test
    sets the handlers again: pytest adds its capture handlers after the fixtures.)"""
    logger = logging.getLogger("request_crypto.receiver")
    saved = logger.handlers[:], logger.propagate, logger.level
    stream = io.StringIO()
    logger.handlers[:] = [RequestLineHandler(stream)]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        yield logger, stream
    finally:
        logger.handlers[:], logger.propagate = saved[0], saved[1]
        logger.setLevel(saved[2])


@pytest.mark.parametrize("formatter_class", FORMATTERS)
def test_log_request_writes_the_record_paths_line(
    request_logger: tuple[logging.Logger, io.StringIO],
    formatter_class: type[RequestLineFormatter | JSONLogFormatter],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`log_request` through `RequestLineHandler` writes what a plain StreamHandler with the
    same formatter writes from the record (time aside), hostile field values included."""
    logger, stream = request_logger
    handler = logger.handlers[0]
    assert isinstance(handler, RequestLineHandler)
    logger.handlers[:] = [handler]  # the fast path: this handler alone
    handler.setFormatter(formatter_class())
    monkeypatch.setattr(_http, "time", types.SimpleNamespace(perf_counter=lambda: 2.5))
    fields: dict[str, object] = {
        "method": "POST",
        "path": "/v1/payloads",
        "kid": "k\nforged=1 \u00e9",
        "format": "jwe",
        "size": 1234,
        "id": "0b6f",
        "error": "malformed",
    }
    made = []
    monkeypatch.setattr(
        handler,
        "request_line",
        lambda *a: made.append(a) or type(handler).request_line(handler, *a),
    )
    _http.log_request(dict(fields), 400, 2.0)
    _http.log_request(dict(fields), 503, 2.0)  # error level
    assert len(made) == 2  # written without a record
    fast = stream.getvalue()
    plain = logging.StreamHandler(io.StringIO())
    plain.setFormatter(formatter_class())
    logger.handlers[:] = [plain]
    _http.log_request(dict(fields), 400, 2.0)
    _http.log_request(dict(fields), 503, 2.0)
    slow = plain.stream.getvalue()
    assert fast.count("\n") == slow.count("\n") == 2

    def timeless(text: str) -> list[object]:
        if formatter_class is JSONLogFormatter:
            return [{**json.loads(line), "time": None} for line in text.splitlines()]
        return [line[len("2026-11-27 17:10:51,123") :] for line in text.splitlines()]

    assert timeless(fast) == timeless(slow)
    assert "status=503" in fast or '"status": 503' in fast


def test_log_config_uses_the_request_line_handler_for_both_formats() -> None:
    for log_format, formatter in (("text", RequestLineFormatter), ("json", JSONLogFormatter)):
        config = log_config("info", log_format)
        handler = config["handlers"]["request_crypto"]
        assert handler["class"].endswith(".RequestLineHandler")
        name = config["formatters"][handler["formatter"]]["()"]
        assert name.endswith("." + formatter.__name__)


@pytest.fixture
def serve_logging() -> Iterator[io.StringIO]:
    """Logging as `serve` configures it (`log_config` through dictConfig), its request handler
    writing to a StringIO; the loggers it touches are put back afterwards."""
    config = log_config("info")
    names = ["request_crypto", "request_crypto.receiver", *config["loggers"]]
    saved = {
        name: (lg.handlers[:], lg.propagate, lg.level, lg.disabled)
        for name in names
        for lg in [logging.getLogger(name)]
    }
    logging.config.dictConfig(config)
    handler = logging.getLogger("request_crypto").handlers[0]
    assert isinstance(handler, RequestLineHandler)
    stream = io.StringIO()
    handler.setStream(stream)
    try:
        yield stream
    finally:
        for name, (handlers, propagate, level, disabled) in saved.items():
            lg = logging.getLogger(name)
            lg.handlers[:], lg.propagate, lg.disabled = handlers, propagate, disabled
            lg.setLevel(level)


def test_serves_logging_writes_request_lines_without_a_record(
    serve_logging: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under `serve`'s own logging config a request line takes `request_line` (no LogRecord):
    the handler sits on ``request_crypto``, a parent of the receiver's logger."""
    served = logging.getLogger("request_crypto")
    served.handlers[:] = [
        h for h in served.handlers if type(h) is RequestLineHandler
    ]  # not pytest's
    made = []
    monkeypatch.setattr(logging.Logger, "makeRecord", lambda *a, **k: made.append(a))
    _http.log_request({"method": "POST", "path": "/v1/payloads", "size": 3}, 202, 2.0)
    assert made == []
    assert "method=POST path=/v1/payloads status=202 size=3" in serve_logging.getvalue()


def test_a_second_handler_up_the_hierarchy_gets_the_record(
    serve_logging: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where another handler would see the line too, it is logged as a record, to both."""
    extra = logging.StreamHandler(io.StringIO())
    receiver_logger = logging.getLogger("request_crypto.receiver")
    receiver_logger.addHandler(extra)
    _http.log_request({"method": "POST", "path": "/v1/payloads"}, 400, 2.0)
    assert "status=400" in serve_logging.getvalue()
    assert "status=400" in extra.stream.getvalue()


class CountingStream(io.StringIO):
    """A stream that counts its writes."""

    writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def test_request_lines_on_a_loop_are_written_together_in_order_with_other_records() -> None:
    stream = CountingStream()
    handler = RequestLineHandler(stream)
    handler.setFormatter(RequestLineFormatter())

    def line(n: int) -> None:
        assert handler.request_line(logging.INFO, "r", f"n={n}", {"n": n})

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("r", logging.ERROR, __file__, 0, message, None, None)

    async def main() -> None:
        line(1)
        line(2)
        assert stream.getvalue() == ""  # waiting for the loop's next write
        handler.handle(record("boom"))  # any other record: the waiting lines first
        assert stream.writes == 2
        line(3)
        line(4)
        await asyncio.sleep(observability.LINE_DELAY * 20)
        assert stream.writes == 3  # lines 3 and 4 in one write
        line(5)

    asyncio.run(main())
    handler.flush()  # the loop is gone: flush writes what waits
    text = stream.getvalue()
    assert [row.split(" ", 4)[-1] for row in text.splitlines()] == [
        "n=1",
        "n=2",
        "boom",
        "n=3",
        "n=4",
        "n=5",
    ]
    line(6)  # off any loop: written at once
    assert stream.getvalue().endswith("n=6\n")
