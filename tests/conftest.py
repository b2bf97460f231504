"""Shared fixtures: the vectors made by the real npm packages, and the node interop harness."""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from interop import node, softhsm
from request_crypto import JWKManager
from request_crypto.receiver.pgtesting import PostgresCluster, PostgresUnavailableError

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
#: The kids of `python_private_jwks`, by key-management algorithm.
PYTHON_KIDS = {"RSA-OAEP": "py-oaep", "RSA-OAEP-256": "py-oaep256"}
_DATABASES = itertools.count()


def load_fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def private_jwks() -> dict[str, Any]:
    return load_fixture("private_jwks.json")


@pytest.fixture(scope="session")
def public_jwks() -> dict[str, Any]:
    return load_fixture("public_jwks.json")


@pytest.fixture(scope="session")
def js_bodies() -> dict[str, Any]:
    return load_fixture("bodies.json")


@pytest.fixture(scope="session")
def node_crypto_vectors() -> dict[str, Any]:
    return load_fixture("node_crypto.json")


@pytest.fixture(scope="session")
def python_private_jwks() -> dict[str, Any]:
    """A private set made by this library, once per session: one key of each algorithm.

    Kids are PYTHON_KIDS[alg]. Shared: copy it before changing it.
    """
    manager = JWKManager()
    for alg, kid in PYTHON_KIDS.items():
        manager.add_key(kid, alg=alg)
    return manager.get_private_jwks()


@pytest.fixture(scope="session")
def js() -> Any:
    """Run an op of interop/harness.mjs: `js("decrypt", jwks=..., bodies=[...])`.

    Outside CI a missing node/npm skips the test with the reason; under CI=true it fails,
    so a machine without node can never turn the interop suite into a silent pass.
    """
    try:
        node.ensure_installed()
    except node.NodeUnavailable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"interop needs node and npm under CI: {exc}")
        pytest.skip(f"interop skipped: {exc}")
    return node.run


class SoftHSM:
    """A SoftHSM2 token directory made for this test session, with a URI helper.

    Tokens (TOKENS): `rc-test` holds the key `recv-1` (made by `generate_key`); the others
    start empty, one per test that counts a token's keys (`rc-whole`, `rc-cli`) or breaks its
    token (`rc-fault`, `rc-lost`: tests/receiver/test_hsm_faults.py; `rc-close`; `rc-sealed`:
    tests/core/test_sealed_key_sources.py; `rc-thread`: tests/core/test_pkcs11_threads.py) so
    that test order does not matter. Tokens are picked by label: SoftHSM numbers slots at random.
    """

    def __init__(self, pin_file: Path) -> None:
        self.pin_file = pin_file

    def uri(self, object: str | None = "recv-1", *, token: str = "rc-test", **query: str) -> str:
        """A pkcs11: URI for `object` in `token`, with module-path and pin-source set."""
        return softhsm.uri(token, self.pin_file, object, **query)


@pytest.fixture(scope="session", name="softhsm")
def softhsm_fixture(tmp_path_factory: pytest.TempPathFactory) -> SoftHSM:
    """SOFTHSM2_CONF pointed at fresh tokens for the whole session (see SoftHSM)."""
    if not softhsm.available():
        if os.environ.get("CI") == "true":
            pytest.fail("the PKCS#11 tests need softhsm2 under CI (.ci/run installs it)")
        pytest.skip("softhsm2 is not installed")
    pin_file = softhsm.make_tokens(tmp_path_factory.mktemp("softhsm"), TOKENS)
    from request_crypto.keys.pkcs11 import generate_key

    hsm = SoftHSM(pin_file)
    generate_key(hsm.uri("recv-1"))
    return hsm


TOKENS = (
    "rc-test",
    "rc-other",
    "rc-spare",
    "rc-whole",
    "rc-cli",
    "rc-sign",
    "rc-fault",
    "rc-lost",
    "rc-close",
    "rc-sealed",
    "rc-thread",
)


class KMS:
    """moto's server (tests/kms_server.py) on 127.0.0.1 for KMS and S3, boto3's env pointed at
    it. It accepts multipart parts from S3_PART_MIN bytes (AWS: 5 MiB), so tests can cross
    part boundaries with little data."""

    S3_PART_MIN = 64 * 1024

    def __init__(self, endpoint: str, control: Path) -> None:
        self.endpoint = endpoint
        self.control = control

    def client(self) -> Any:
        """A boto3 KMS client for the test's own setup calls (creating keys, aliases)."""
        import boto3

        return boto3.client("kms")

    def rsa_key(self, alias: str | None = None) -> str:
        """A new RSA_2048 ENCRYPT_DECRYPT key; its ARN (and `alias/NAME` made if asked)."""
        client = self.client()
        arn: str = client.create_key(KeySpec="RSA_2048", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"][
            "Arn"
        ]
        if alias:
            client.create_alias(AliasName=f"alias/{alias}", TargetKeyId=arn)
        return arn

    def signing_key(self, alg: str, alias: str | None = None) -> str:
        """A new KMS signing key: ES256 (ECC_NIST_P256 SIGN_VERIFY) or HS256 (HMAC_256
        GENERATE_VERIFY_MAC); its ARN (and `alias/NAME` made if asked)."""
        spec, usage = {
            "ES256": ("ECC_NIST_P256", "SIGN_VERIFY"),
            "HS256": ("HMAC_256", "GENERATE_VERIFY_MAC"),
        }[alg]
        client = self.client()
        arn: str = client.create_key(KeySpec=spec, KeyUsage=usage)["KeyMetadata"]["Arn"]
        if alias:
            client.create_alias(AliasName=f"alias/{alias}", TargetKeyId=arn)
        return arn

    def symmetric_key(self, alias: str | None = None) -> str:
        """A new SYMMETRIC_DEFAULT ENCRYPT_DECRYPT key (GenerateDataKey); its ARN."""
        client = self.client()
        arn: str = client.create_key(KeySpec="SYMMETRIC_DEFAULT", KeyUsage="ENCRYPT_DECRYPT")[
            "KeyMetadata"
        ]["Arn"]
        if alias:
            client.create_alias(AliasName=f"alias/{alias}", TargetKeyId=arn)
        return arn

    def s3(self) -> Any:
        """A boto3 S3 client for the test's own setup and checks."""
        import boto3

        return boto3.client("s3")

    def bucket(self) -> str:
        """A new, empty bucket's name."""
        import uuid

        name = f"rc-{uuid.uuid4().hex[:20]}"
        self.s3().create_bucket(Bucket=name)
        return name

    def throttle(self, calls: int) -> None:
        """The next `calls` Decrypt and DescribeKey calls answer ThrottlingException."""
        (self.control / "throttle").write_text(str(calls), encoding="utf-8")


@pytest.fixture(scope="session")
def kms(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Start moto's server (KMS and S3) at a free port for the session; boto3 env vars point
    at it (AWS_ENDPOINT_URL_KMS and AWS_ENDPOINT_URL_S3)."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    control = tmp_path_factory.mktemp("kms")
    server = subprocess.Popen(
        [sys.executable, str(Path(__file__).parent / "kms_server.py"), str(port), str(control)],
        stdout=subprocess.DEVNULL,
        stderr=(control / "server.log").open("wb"),
        env={**os.environ, "S3_UPLOAD_PART_MIN_SIZE": str(KMS.S3_PART_MIN)},
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(endpoint + "/moto-api/", timeout=2).close()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"moto did not start: {(control / 'server.log').read_text()[-2000:]}")
            time.sleep(0.2)
    saved = {name: os.environ.get(name) for name in _KMS_ENV}
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL_KMS=endpoint,
        AWS_ENDPOINT_URL_S3=endpoint,
    )
    os.environ.pop("AWS_PROFILE", None)
    yield KMS(endpoint, control)
    server.terminate()
    server.wait(timeout=30)
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


_KMS_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL_KMS",
    "AWS_ENDPOINT_URL_S3",
    "AWS_PROFILE",
)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """A throwaway PostgreSQL cluster for the session (never the system's service).

    Outside CI a machine without PostgreSQL skips the test; under CI=true it fails.
    """
    try:
        cluster = PostgresCluster()
    except PostgresUnavailableError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is needed under CI: {exc}")
        pytest.skip(str(exc))
    with cluster:
        yield cluster


@pytest.fixture
def postgres_url(postgres: PostgresCluster, request: pytest.FixtureRequest) -> str:
    """A new, empty database of the session's cluster, for one test."""
    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name)[-50:].lower()
    return postgres.create_database(f"{name}_{os.getpid()}_{next(_DATABASES)}")
