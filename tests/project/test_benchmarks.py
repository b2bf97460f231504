"""The benchmarks package (benchmarks/): its parsing and arithmetic, and that it runs.

Nothing here times anything or needs `wrk`: the receiver run uses the Python client, and the
full runs are `python scripts/bench.py`'s business.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.core import CORES, fixture_jwks, telemetry
from benchmarks.hsm import THREADS
from benchmarks.receiver import Load, measure_receiver, parse_wrk, receiver_target, summarize

ROOT = Path(__file__).resolve().parents[2]

WRK_OUTPUT = """\
Running 1s test @ http://127.0.0.1:48107/v1/payloads
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     3.22ms    1.98ms  14.13ms   84.49%
    Req/Sec     5.32k     1.64k    6.87k    80.00%
  Latency Distribution
     50%  812.00us
     75%    3.34ms
     90%    6.24ms
     99%    1.08s
  5312 requests in 1.01s, 767.88KB read
  Socket errors: connect 0, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 7
Requests/sec:   5271.58
Transfer/sec:    762.04KB
"""


def test_parse_wrk_reads_rate_latency_and_failures() -> None:
    load = parse_wrk(WRK_OUTPUT)
    assert (load.requests, load.seconds, load.bodies_per_s) == (5312, 1.01, 5271.58)
    assert load.p50_ms == pytest.approx(0.812)
    assert load.p99_ms == pytest.approx(1080.0)
    assert load.failures == 2 + 3 + 7


def test_parse_wrk_counts_no_failures_when_wrk_reports_none() -> None:
    clean = "\n".join(
        line for line in WRK_OUTPUT.splitlines() if "errors" not in line and "Non-2xx" not in line
    )
    assert parse_wrk(clean).failures == 0


def test_parse_wrk_refuses_output_without_figures() -> None:
    without_latency = WRK_OUTPUT.replace("     99%    1.08s\n", "")
    for output in ["", "unable to connect to 127.0.0.1:1 Connection refused", without_latency]:
        with pytest.raises(ValueError, match="wrk printed no figures"):
            parse_wrk(output)


def test_ceiling_is_cores_over_the_cpu_one_body_needs() -> None:
    served = Load(1000, 2.0, 500.0, 30.0, 60.0, 0, server_cpu_s=3.0, client_cpu_s=0.1)
    bare = Load(8000, 2.0, 4000.0, 2.0, 9.0, 0, server_cpu_s=1.6, client_cpu_s=0.4)
    figures = summarize(served, bare, crypto=0.0004)
    # bare 0.2 ms + client 0.1 ms (measured while loading serve) + crypto 0.4 ms per body
    assert figures["ceiling_bodies_per_s"] == pytest.approx(CORES / 0.0007)
    assert figures["serve_vs_ceiling"] == pytest.approx(500.0 * 0.0007 / CORES)
    assert figures["serve_vs_bare"] == pytest.approx(0.125)
    assert figures["serve"]["server_cores_busy"] == pytest.approx(1.5)
    assert figures["serve"]["server_cpu_ms_per_request"] == pytest.approx(3.0)
    # serve's own 3 ms + the client's 0.1 ms allow CORES / 3.1 ms, whatever else ran
    assert figures["serve_cpu_bound_bodies_per_s"] == pytest.approx(CORES / 0.0031)


def test_receiver_targets_are_against_the_lower_of_bare_app_and_limit() -> None:
    served = Load(1000, 2.0, 500.0, 30.0, 60.0, 0, server_cpu_s=3.0, client_cpu_s=0.1)
    bare = Load(8000, 2.0, 4000.0, 2.0, 9.0, 0, server_cpu_s=1.6, client_cpu_s=0.4)
    jwe = summarize(served, bare, crypto=0.0004)  # ceiling CORES / 0.7 ms
    target = receiver_target("jwe", {"jwe": jwe})
    assert target.value == pytest.approx(500.0 / min(4000.0, CORES / 0.0007))
    assert target.threshold == 0.5
    slow_bare = Load(100, 2.0, 50.0, 2.0, 9.0, 0, server_cpu_s=1.6, client_cpu_s=0.4)
    elastic = summarize(served, slow_bare, crypto=0.004)  # cores x bound: CORES * 250/s
    target = receiver_target("elastic", {"elastic": elastic})
    assert target.value == pytest.approx(500.0 / 50.0)  # the bare app is the lower limit
    assert (target.threshold, target.status) == (0.8, "PASS")


def test_ceiling_is_unknown_without_cpu_figures() -> None:
    served = Load(1000, 2.0, 500.0, 30.0, 60.0, 0)
    bare = Load(8000, 2.0, 4000.0, 2.0, 9.0, 0)
    figures = summarize(served, bare, crypto=0.0004)
    assert figures["ceiling_bodies_per_s"] is None and figures["serve_vs_ceiling"] is None
    assert figures["serve_cpu_bound_bodies_per_s"] is None


def test_nothing_in_the_installed_package_imports_benchmark_code() -> None:
    package = ROOT / "request_crypto"
    assert not [p for p in package.rglob("*.py") if "bench" in p.name]
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert not name.startswith(("benchmarks", "scripts", "interop")), (path, name)
                assert "bench" not in name, (path, name)


@pytest.mark.slow
def test_receiver_benchmark_runs_without_wrk() -> None:
    private, public = fixture_jwks("private"), fixture_jwks("public")
    figures = measure_receiver(
        private, public, public["keys"][0]["kid"], telemetry(1000), seconds=2, client="python"
    )
    assert figures["client"].startswith("python")
    for fmt in ("jwe", "elastic"):
        serve, bare = figures[fmt]["serve"], figures[fmt]["bare"]
        assert serve["requests"] > 0 and serve["failures"] == 0
        assert bare["requests"] > 0 and bare["failures"] == 0
        assert serve["p50_ms"] <= serve["p99_ms"]
    # Rotated bodies: each stored once (exactly once), never more rows than bodies accepted.
    assert figures["accepted"] >= figures["stored"] > 0


def run_section(tmp_path: Path, section: str) -> tuple[str, dict[str, Any]]:
    """`scripts/bench.py --only SECTION` for one short round: its table and its JSON."""
    out = tmp_path / "bench.json"
    command = [sys.executable, str(ROOT / "scripts" / "bench.py"), "--only", section]
    command += ["--rounds", "1", "--seconds", "0.05", "--no-node", "--json", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout, json.loads(out.read_text())


@pytest.mark.slow
def test_bench_script_runs_the_package_and_writes_json(tmp_path: Path) -> None:
    table, document = run_section(tmp_path, "jwe")
    assert "jwe decrypt 1KB" in table and "Targets" in table
    assert document["best"]["jwe.decrypt.1KB"] > 0
    assert document["best"]["bound.rsa.decrypt"] > 0
    names = {t["name"]: t for t in document["targets"]}
    assert names["jwe decrypt 1KB >= 95% of RSA decrypt"]["status"] in {"PASS", "FAIL"}
    assert "elastic.decrypt.1KB" not in document["best"]  # --only left the others out


@pytest.mark.slow
def test_nested_benchmark_section_runs(tmp_path: Path) -> None:
    _, document = run_section(tmp_path, "nested")
    for alg in ("ES256", "EdDSA"):
        assert document["best"][f"nested.decrypt.{alg}.1KB"] > 0
        assert document["best"][f"bound.{alg}.verify"] > 0
    assert document["best"]["nested.unsigned.1KB"] > 0
    names = {t["name"] for t in document["targets"]}
    assert "signed jwe (ES256) decrypt+verify 1KB >= 90% of RSA decrypt + ES256 verify" in names


@pytest.mark.slow
def test_batch_section_measures_decrypt_async_against_the_cores_bound(tmp_path: Path) -> None:
    _, document = run_section(tmp_path, "batch")
    assert document["best"]["decrypt_async"] > 0
    names = {t["name"]: t for t in document["targets"]}
    async_target = next(t for name, t in names.items() if name.startswith("decrypt_async"))
    assert async_target["status"] in {"PASS", "FAIL"} and async_target["value"] > 0


def test_hsm_benchmark_measures_the_token_beside_its_bound(tmp_path: Path) -> None:
    from interop import softhsm

    if not softhsm.available():
        if os.environ.get("CI") == "true":
            pytest.fail("the HSM benchmark needs softhsm2 under CI (.ci/run installs it)")
        pytest.skip("softhsm2 is not installed")
    out = tmp_path / "bench.json"
    command = [sys.executable, "-m", "benchmarks", "--only", "hsm", "--rounds", "1"]
    command += ["--seconds", "0.05", "--no-node", "--json", str(out)]
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=240, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "SoftHSM RSA-OAEP decrypt (the bound)" in done.stdout
    best = json.loads(out.read_text())["best"]
    assert best["hsm.raw"] > 0 and best["hsm.raw.2"] > 0 and best["hsm.jwe.1"] > 0
    assert best[f"hsm.jwe.{THREADS}"] > 0
    assert all(
        best[f"hsm.{k}"] > 0 for k in ("sign.raw", "sign.token", "sign.local", "verify.token")
    )
    targets = {t["name"]: t for t in json.loads(out.read_text())["targets"]}
    assert targets[f"jwe via SoftHSM, {THREADS} threads >= 90% of SoftHSM RSA-OAEP"]["value"] > 0
