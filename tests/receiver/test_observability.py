"""Prometheus metrics and JSON log lines (request_crypto.receiver.observability)."""

from __future__ import annotations

import json
import logging

from prometheus_client.parser import text_string_to_metric_families

from request_crypto.receiver.observability import JSONLogFormatter, ReceiverMetrics


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
