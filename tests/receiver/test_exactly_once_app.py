"""The app's side of exactly once, readiness and observability: a retried body is answered
with its first id, a failed store is a 503 with Retry-After, /readyz follows the sink,
/metrics counts, and `serve --log-format json` writes JSON lines."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.postgres import Replica
from request_crypto import JWKManager, RequestEncryptor
from request_crypto.receiver import ReceivedPayload, create_app
from request_crypto.receiver.testing import ReceiverThread
from tests.receiver.helpers import ListSink, client, stored_rows, write_private_set


class FlakySink(ListSink):
    """A sink whose backend can be down (`ready` False, `write_batch` raising)."""

    def __init__(self) -> None:
        super().__init__()
        self.up = True

    def write_batch(self, records: Sequence[ReceivedPayload]) -> None:
        self.fail = not self.up
        super().write_batch(records)

    def ready(self) -> bool:
        return self.up


def metric(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    raise AssertionError(f"no sample {name} {labels}")


def test_a_retried_body_gets_its_first_id_and_is_stored_once(
    sqlite_receiver: tuple[ReceiverThread, Path], keys: JWKManager
) -> None:
    receiver, db = sqlite_receiver
    encryptor = RequestEncryptor(keys.get_public_jwks())
    body = encryptor.encrypt("rx-a", {"n": 1})
    other = encryptor.encrypt("rx-a", {"n": 1})  # same payload, another encryption: new body
    with client(receiver.url) as http:
        answers = [http.post("/v1/payloads", content=b) for b in (body, body, other, body)]
    assert [a.status_code for a in answers] == [202] * 4
    ids = [a.json()["id"] for a in answers]
    assert ids[0] == ids[1] == ids[3] != ids[2]
    assert set(stored_rows(db)) == {ids[0], ids[2]}


def test_sink_down_is_503_with_retry_after_and_readyz_says_so(keys: JWKManager) -> None:
    sink = FlakySink()
    body = RequestEncryptor(keys.get_public_jwks()).encrypt("rx-b", [1, 2])
    app = create_app(keys.get_private_jwks(), sink=sink)
    with ReceiverThread(app) as receiver, client(receiver.url) as http:
        assert http.get("/readyz").json() == {"status": "ready", "keys": 2}
        sink.up = False
        down = http.post("/v1/payloads", content=body)
        ready = http.get("/readyz")
        alive = http.get("/healthz")  # liveness: the process itself is fine
        sink.up = True
        up = http.post("/v1/payloads", content=body)
        metrics = http.get("/metrics")
    assert (down.status_code, down.headers["retry-after"]) == (503, "1")
    assert "retry later" in down.json()["error"]
    assert (ready.status_code, ready.headers["retry-after"]) == (503, "1")
    assert ready.json()["reason"] == "the sink does not answer"
    assert alive.status_code == 200
    assert up.status_code == 202
    assert [r.id for r in sink.records] == [up.json()["id"]]  # nothing of the 503 counts
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert metric(text, "request_crypto_requests_total", status="503", format="elastic") == 1
    assert metric(text, "request_crypto_requests_total", status="202", format="elastic") == 1
    assert metric(text, "request_crypto_sink_failures_total") == 1
    assert metric(text, "request_crypto_batch_size_count") == 2
    assert metric(text, "request_crypto_decrypt_seconds_count") == 2
    assert metric(text, "request_crypto_keys_loaded") == 2


def test_refused_bodies_are_counted_without_a_format(keys: JWKManager) -> None:
    app = create_app(keys.get_private_jwks(), sink=ListSink())
    with ReceiverThread(app) as receiver, client(receiver.url) as http:
        assert http.post("/v1/payloads", content=b"not a body").status_code == 400
        text = http.get("/metrics").text
    assert metric(text, "request_crypto_requests_total", status="400", format="none") == 1


def test_serve_writes_json_log_lines_and_serves_metrics(tmp_path: Path, keys: JWKManager) -> None:
    key_file = write_private_set(tmp_path / "private.json", keys)
    log = tmp_path / "serve.log"
    sink = f"sqlite:///{tmp_path / 'p.db'}"
    replica = Replica(key_file, sink, log, "--log-format", "json", "--log-level", "info")
    replica.start(health="/readyz")
    try:
        body = RequestEncryptor(keys.get_public_jwks()).encrypt("rx-a", {"n": 1})
        with httpx.Client(base_url=replica.url, trust_env=False) as http:
            accepted = http.post("/v1/payloads", content=body)
            text = http.get("/metrics").text
    finally:
        replica.stop()
    assert accepted.status_code == 202
    assert metric(text, "request_crypto_requests_total", status="202", format="elastic") == 1
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # every line, Uvicorn's too, is JSON
    requests = [e for e in entries if e.get("path") == "/v1/payloads"]
    assert len(requests) == 1
    assert requests[0]["status"] == 202
    assert requests[0]["id"] == accepted.json()["id"]
    assert "payload" not in requests[0]


def test_serve_on_an_unreachable_database_prints_one_error_line(
    tmp_path: Path, keys: JWKManager
) -> None:
    key_file = write_private_set(tmp_path / "private.json", keys)
    sink = "postgresql://someone:secret@127.0.0.1:1/telemetry"
    command = [sys.executable, "-m", "request_crypto", "serve", "--jwks", str(key_file)]
    done = subprocess.run(
        [*command, "--sink", sink, "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: PostgreSQL database telemetry at 127.0.0.1:1")
    assert "refused" in lines[0]
    assert "secret" not in done.stderr
