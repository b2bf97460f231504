"""The receiver with keys in an HSM or KMS, several sets merged by kid, and encrypted key files.

An HSM or KMS that is down or throttling is a 503 with Retry-After (senders retry), never a
400; /healthz names the failing source and recovers when it comes back.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from request_crypto import JWKManager, KeySetFile, RequestEncryptor
from request_crypto.keyfile import write_jwks
from request_crypto.keys.aws_kms import AWSKMSKeySource
from request_crypto.keys.signing import generate_signing_jwk, public_key_set
from request_crypto.receiver import ReceiverConfig, create_app
from request_crypto.receiver import cli as receiver_cli
from request_crypto.receiver.testing import ReceiverThread
from tests.receiver.helpers import PAYLOADS, WELL_KNOWN, client, write_private_set

PAYLOAD = {"event": "login"}


def test_a_pkcs11_uri_serves_and_publishes_the_token_key(softhsm: Any, tmp_path: Path) -> None:
    app = create_app(softhsm.uri("recv-1"), sink=f"jsonl:///{tmp_path / 'p.jsonl'}")
    with ReceiverThread(app) as receiver, client(receiver.url) as http:
        public = http.get(WELL_KNOWN).json()
        assert [jwk["kid"] for jwk in public["keys"]] == ["recv-1"]
        for body_format in ("elastic", "jwe"):
            body = RequestEncryptor(public, format=body_format).encrypt("recv-1", PAYLOAD)
            answer = http.post(PAYLOADS, content=body)
            assert answer.status_code == 202, answer.text
            assert answer.json()["kid"] == "recv-1"
        assert http.get("/healthz").json() == {"status": "ok", "keys": 1}


class _Switch:
    """A boto3 client that talks to moto until `down` is set, then to a closed port."""

    def __init__(self, up: Any, down: Any) -> None:
        self.up, self.down_client, self.down = up, down, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.down_client if self.down else self.up, name)


def _client(endpoint: str) -> Any:
    import boto3
    import botocore.config

    config = botocore.config.Config(retries={"total_max_attempts": 1}, connect_timeout=2)
    return boto3.client("kms", endpoint_url=endpoint, config=config)


def test_a_kms_outage_is_503_with_retry_after_and_healthz_names_it(
    kms: Any, tmp_path: Path
) -> None:
    switch = _Switch(_client(kms.endpoint), _client("http://127.0.0.1:9"))
    uri = f"aws-kms:{kms.rsa_key()}?kid=kms-rx"
    source = AWSKMSKeySource(uri, client=switch)
    app = create_app(source, sink=f"jsonl:///{tmp_path / 'p.jsonl'}")
    public = {"keys": [source.public_jwk("kms-rx")]}
    body = RequestEncryptor(public, format="jwe").encrypt("kms-rx", PAYLOAD)
    with ReceiverThread(app) as receiver, client(receiver.url) as http:
        assert http.post(PAYLOADS, content=body).status_code == 202
        switch.down = True
        answer = http.post(PAYLOADS, content=body)
        assert answer.status_code == 503, answer.text
        assert int(answer.headers["retry-after"]) > 0
        assert "retry later" in answer.json()["error"]
        health = http.get("/healthz")
        assert health.status_code == 503
        assert uri in health.json()["reason"]
        ready = http.get("/readyz")
        assert ready.status_code == 503 and uri in ready.json()["reason"]
        switch.down = False  # back: the same process serves again, nothing restarted
        assert http.post(PAYLOADS, content=body).status_code == 202
        assert http.get("/healthz").status_code == 200


def test_kms_throttling_past_the_retries_is_503_not_400(kms: Any, tmp_path: Path) -> None:
    uri = f"aws-kms:{kms.rsa_key()}?kid=kms-th"
    app = create_app(ReceiverConfig(jwks=uri, sink=f"jsonl:///{tmp_path / 'p.jsonl'}"))
    with ReceiverThread(app) as receiver, client(receiver.url) as http:
        public = http.get(WELL_KNOWN).json()
        body = RequestEncryptor(public, format="jwe").encrypt("kms-th", PAYLOAD)
        kms.throttle(50)
        try:
            answer = http.post(PAYLOADS, content=body)
        finally:
            kms.throttle(0)
        assert answer.status_code == 503 and "retry-after" in answer.headers
        assert http.post(PAYLOADS, content=body).status_code == 202


def test_several_sets_are_merged_by_kid(softhsm: Any, tmp_path: Path) -> None:
    KeySetFile.init(tmp_path / "file.json", "file-rx")
    locations = (tmp_path / "file.json", softhsm.uri("recv-1"))
    config = ReceiverConfig(jwks=locations, sink=f"jsonl:///{tmp_path / 'p.jsonl'}")
    assert ReceiverConfig.from_env(config.to_env()).jwks == (
        (tmp_path / "file.json").resolve(),
        softhsm.uri("recv-1"),
    )
    with ReceiverThread(create_app(config)) as receiver, client(receiver.url) as http:
        public = http.get(WELL_KNOWN).json()
        assert [jwk["kid"] for jwk in public["keys"]] == ["file-rx", "recv-1"]
        for kid in ("file-rx", "recv-1"):
            body = RequestEncryptor(public, format="jwe").encrypt(kid, PAYLOAD)
            assert http.post(PAYLOADS, content=body).json()["kid"] == kid


def test_serve_takes_repeated_jwks_and_a_password_file(
    softhsm: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    password = tmp_path / "password"
    password.write_text("pw\n")
    KeySetFile.init(tmp_path / "sealed.jwe", "sealed-rx", password=b"pw")
    planned: list[Any] = []
    monkeypatch.setattr(receiver_cli, "_run", lambda plan, sock: planned.append(plan))
    app = typer.Typer()
    receiver_cli.register(app)
    arguments = ["serve", "--port", "0", "--sink", f"jsonl:///{tmp_path / 'p.jsonl'}"]
    arguments += ["--jwks", str(tmp_path / "sealed.jwe"), "--jwks", softhsm.uri("recv-1")]
    result = CliRunner().invoke(app, [*arguments, "--password-file", str(password)])
    assert result.exit_code == 0, result.output
    assert planned[0].kids == ["sealed-rx", "recv-1"]
    wrong = tmp_path / "wrong"
    wrong.write_text("nope\n")
    result = CliRunner().invoke(app, [*arguments, "--password-file", str(wrong)])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and "password does not open" in result.stderr


def test_an_encrypted_key_file_is_served_and_reloaded(tmp_path: Path) -> None:
    password = tmp_path / "password"
    password.write_text("pw\n")
    keys = KeySetFile.init(tmp_path / "sealed.jwe", "enc-1", password=b"pw")
    config = ReceiverConfig(
        jwks=keys.path,
        password_file=password,
        reload_interval=0.2,
        sink=f"jsonl:///{tmp_path / 'p.jsonl'}",
    )
    with ReceiverThread(create_app(config)) as receiver, client(receiver.url) as http:
        keys.add("enc-2")
        deadline = time.monotonic() + 30
        while "enc-2" not in json.dumps(http.get(WELL_KNOWN).json()):
            assert time.monotonic() < deadline, "the encrypted file was not reloaded"
            time.sleep(0.1)
        public = http.get(WELL_KNOWN).json()
        body = RequestEncryptor(public, format="jwe").encrypt("enc-2", PAYLOAD)
        assert http.post(PAYLOADS, content=body).status_code == 202


def test_verify_with_several_sets_merged_by_kid_file_token_and_kms(
    softhsm: Any, kms: Any, tmp_path: Path
) -> None:
    """serve --verify-with FILE --verify-with pkcs11:... --verify-with aws-kms:...: a body
    signed by any of them is stored; a kid two sets give different keys is refused (401)."""
    from request_crypto.keys.pkcs11_signing import generate_signing_key

    manager = JWKManager()
    manager.add_key("rx")
    keys = write_private_set(tmp_path / "private.json", manager)
    file_sender = {"keys": [generate_signing_jwk("file-sender", "ES256")]}
    senders = tmp_path / "senders.json"
    write_jwks(senders, public_key_set(file_sender))
    token_uri = softhsm.uri("merged-sender", token="rc-sign")
    generate_signing_key(token_uri, "ES256")
    kms.signing_key("ES256", alias="merged-kms")
    kms_uri = "aws-kms:alias/merged-kms"
    config = ReceiverConfig(
        jwks=keys, verify_with=[str(senders), token_uri, kms_uri], sink=f"sqlite:///{tmp_path}/p.db"
    )
    assert ReceiverConfig.from_env(config.to_env()).verify_with == (
        str(senders.resolve()), token_uri, kms_uri
    )  # fmt: skip
    public = manager.get_public_jwks()
    impostor = {"keys": [generate_signing_jwk("merged-sender", "ES256")]}  # the token's kid
    bodies = {
        name: RequestEncryptor(public, sign_with=signer).encrypt("rx", {"by": name})
        for name, signer in (("file", file_sender), ("token", token_uri), ("kms", kms_uri))
    }
    with (
        ReceiverThread(create_app(keys, verify_with=config.verify_with, sink=config.sink)) as rx,
        client(rx.url) as http,
    ):
        for name, body in bodies.items():
            answer = http.post(PAYLOADS, content=body)
            assert answer.status_code == 202, (name, answer.text)
        write_jwks(senders, public_key_set({"keys": [*file_sender["keys"], *impostor["keys"]]}))
        time.sleep(1.2)  # the senders' file is looked at about every second
        again = RequestEncryptor(public, sign_with=token_uri).encrypt("rx", {"by": "token"})
        refused = http.post(PAYLOADS, content=again)
        assert refused.status_code == 401 and "different keys" in refused.json()["error"]


def test_a_kms_wrapped_key_file_is_served_reloaded_and_survives_a_kms_outage(
    kms: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import anyio

    from request_crypto.receiver._keys import KeyFile

    client_ = kms.client()
    arn = client_.create_key()["KeyMetadata"]["Arn"]
    client_.create_alias(AliasName="alias/rx-wrap", TargetKeyId=arn)
    keys = KeySetFile.init(tmp_path / "wrapped.jwe", "w-1", wrap_with="aws-kms:alias/rx-wrap")
    config = ReceiverConfig(
        jwks=keys.path, reload_interval=0.2, sink=f"jsonl:///{tmp_path / 'p.jsonl'}"
    )
    with ReceiverThread(create_app(config)) as receiver, client(receiver.url) as http:
        keys.add("w-2")
        deadline = time.monotonic() + 30
        while "w-2" not in json.dumps(http.get(WELL_KNOWN).json()):
            assert time.monotonic() < deadline, "the wrapped file was not reloaded"
            time.sleep(0.1)
        body = RequestEncryptor(http.get(WELL_KNOWN).json(), format="jwe").encrypt("w-2", PAYLOAD)
        assert http.post(PAYLOADS, content=body).status_code == 202
    watched = KeyFile(keys.path, 1 << 20, grace=0)
    keys.add("w-3")
    endpoint = os.environ["AWS_ENDPOINT_URL_KMS"]
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    assert anyio.run(watched.check) is False  # KMS down: the keys in use stay
    assert watched.failing is not None and watched.keys.decryptor.source.kids() == ["w-1", "w-2"]
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", endpoint)
    stat = keys.path.stat()
    os.utime(keys.path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert anyio.run(watched.check) is True and watched.failing is None
    assert watched.keys.decryptor.source.kids() == ["w-1", "w-2", "w-3"]
