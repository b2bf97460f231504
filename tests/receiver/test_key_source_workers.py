"""`serve --workers N` with keys in an HSM and in KMS: each worker opens its own sources.

Uvicorn starts the workers as fresh processes (spawn), each building the app from the
environment: one PKCS#11 login and one KMS client per process, nothing inherited.
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from request_crypto import RequestEncryptor
from tests.receiver.helpers import PAYLOADS, WELL_KNOWN, stored_rows
from tests.receiver.test_cli import Server


@pytest.mark.slow
def test_two_workers_each_open_the_hsm_and_kms_sources(
    softhsm: Any, kms: Any, tmp_path: Path
) -> None:
    kms_uri = f"aws-kms:{kms.rsa_key()}?kid=kms-workers"
    db = tmp_path / "p.db"
    command = [
        *[sys.executable, "-m", "request_crypto.receiver", "serve", "--port", "0"],
        *["--jwks", softhsm.uri("recv-1"), "--jwks", kms_uri, "--workers", "2"],
        *["--sink", f"sqlite:///{db}"],
    ]
    server = Server(command, tmp_path)
    try:
        url = server.wait_listening()
        with httpx.Client(trust_env=False, timeout=30) as http:
            public = http.get(url + WELL_KNOWN).json()
        assert sorted(jwk["kid"] for jwk in public["keys"]) == ["kms-workers", "recv-1"]
        bodies = [
            RequestEncryptor(public, format="jwe" if i % 2 else "elastic").encrypt(
                "recv-1" if i % 3 else "kms-workers", {"i": i}
            )
            for i in range(24)
        ]

        def post(body: str) -> tuple[int, str]:
            with httpx.Client(trust_env=False, timeout=30) as http:  # a new connection each
                answer = http.post(url + PAYLOADS, content=body)
                health = http.get(url + "/healthz")
                assert health.status_code == 200, health.text
                return answer.status_code, answer.text

        with ThreadPoolExecutor(max_workers=6) as pool:
            answers = list(pool.map(post, bodies))
        assert [status for status, _ in answers] == [202] * len(bodies), answers
    finally:
        code = server.stop()
    log = "".join(server.stderr)
    assert code == 0, log
    assert sorted(row["payload"]["i"] for row in stored_rows(db).values()) == list(range(24))
    stopped = [line for line in server.stderr if "receiver stopped" in line]
    assert len(stopped) == 2, log  # both workers served
    assert all(" 0 bodies accepted" not in line for line in stopped), log
