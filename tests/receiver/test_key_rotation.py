"""Rotation of merged key sets, and watched key files that change kind.

`serve --jwks A.json --jwks pkcs11:... --jwks B.json` reloads A.json and B.json when they
change, like a single key file, and keeps the HSM (and KMS) members open. A file whose kind
changes (RSA keys <-> `dir` secrets, or a signing set) is refused: the last good set stays.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from request_crypto import KeySetFile, RequestEncryptor
from request_crypto.receiver import ReceiverConfig, create_app
from request_crypto.receiver.testing import ReceiverThread
from tests.receiver.helpers import (
    LOGGER,
    PAYLOADS,
    WELL_KNOWN,
    client,
    wait_for,
    wait_published,
)
from tests.receiver.test_cli import Server, console_script, run_cli

PAYLOAD = {"event": "rotated"}


def _kids(http: httpx.Client) -> list[str]:
    return [jwk["kid"] for jwk in http.get(WELL_KNOWN).json()["keys"]]


def _post_to(http: httpx.Client, kid: str) -> httpx.Response:
    public = http.get(WELL_KNOWN).json()
    return http.post(PAYLOADS, content=RequestEncryptor(public, format="jwe").encrypt(kid, PAYLOAD))


@pytest.mark.slow
def test_serve_reloads_every_file_of_a_merged_set(softhsm: Any, tmp_path: Path) -> None:
    a, b = tmp_path / "A.json", tmp_path / "B.json"
    KeySetFile.init(a, "file-a")
    KeySetFile.init(b, "file-b-1")
    cli = console_script()
    command = [*cli, "serve", "--port", "0", "--reload-interval", "0.2"]
    command += ["--jwks", str(a), "--jwks", softhsm.uri("recv-1"), "--jwks", str(b)]
    server = Server([*command, "--sink", f"sqlite:///{tmp_path / 'p.db'}"], tmp_path)
    try:
        url = server.wait_listening()
        with httpx.Client(base_url=url, trust_env=False, timeout=30) as http:
            assert _kids(http) == ["file-a", "recv-1", "file-b-1"]
            etag = http.get(WELL_KNOWN).headers["etag"]
            rotated = run_cli([*cli, "keys", "rotate", str(b), "--kid", "file-b-2"], tmp_path)
            assert rotated.returncode == 0, rotated.stderr
            latency = wait_published(http, "file-b-2")
            print(f"merged set: B.json rotation served after {latency:.2f} s")
            assert _kids(http) == ["file-a", "recv-1", "file-b-1", "file-b-2"]
            assert http.get(WELL_KNOWN).headers["etag"] != etag
            for kid in ("file-b-2", "file-b-1", "recv-1", "file-a"):  # the HSM member kept
                answer = _post_to(http, kid)
                assert answer.status_code == 202, answer.text
                assert answer.json()["kid"] == kid

            # A broken write of A.json: logged, the last good set stays in use.
            a.write_text('{"keys": [', encoding="utf-8")
            wait_for(lambda: "A.json changed but cannot be used" in "".join(server.stderr), 30,
                     "the broken A.json logged")  # fmt: skip
            assert _kids(http) == ["file-a", "recv-1", "file-b-1", "file-b-2"]
            assert _post_to(http, "file-a").status_code == 202
            assert http.get("/healthz").status_code == 200  # within the grace period
    finally:
        code = server.stop()
    log = "".join(server.stderr)
    assert code == 0, log
    assert f"key file {b} reloaded: 2 keys (file-b-1, file-b-2); 4 keys in use" in log


@pytest.mark.parametrize(
    ("first", "then", "named"),
    [
        ("enc", "dir", ("RSA encryption keys", "dir secrets")),
        ("dir", "enc", ("dir secrets", "RSA encryption keys")),
        ("enc", "sig", ("RSA encryption keys", "signing keys")),
    ],
)
def test_a_key_file_that_changes_kind_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, first: str, then: str, named: tuple[str, str]
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    made = {"enc": {}, "dir": {"alg": "dir"}, "sig": {"alg": "ES256"}}
    served = tmp_path / "served.json"
    KeySetFile.init(served, "before", **made[first])
    before = json.loads(served.read_text())
    config = ReceiverConfig(
        jwks=served, reload_interval=0.1, sink=f"jsonl:///{tmp_path / 'p.jsonl'}"
    )
    with ReceiverThread(create_app(config)) as receiver, client(receiver.url) as http:
        published = http.get(WELL_KNOWN).json()
        KeySetFile.init(tmp_path / "new.json", "after", **made[then])
        after = json.loads((tmp_path / "new.json").read_text())
        os.replace(tmp_path / "new.json", served)
        wait_for(
            lambda: any("changed kind" in r.getMessage() for r in caplog.records), 30,
            "the kind change logged",
        )  # fmt: skip
        line = next(r for r in caplog.records if "changed kind" in r.getMessage())
        assert line.levelno == logging.ERROR
        assert str(served) in line.getMessage()
        assert all(kind in line.getMessage() for kind in named)
        assert http.get(WELL_KNOWN).json() == published
        # The old set still opens its bodies; the new file's keys open nothing.
        old = RequestEncryptor(before, format="jwe")
        assert http.post(PAYLOADS, content=old.encrypt("before", PAYLOAD)).status_code == 202
        if then != "sig":
            new = RequestEncryptor(after, format="jwe").encrypt("after", PAYLOAD)
            refused = http.post(PAYLOADS, content=new)
            assert refused.status_code in (400, 422), refused.text
        time.sleep(0.3)  # several more looks at the file: the refusal is logged once
        assert sum("changed kind" in r.getMessage() for r in caplog.records) == 1
