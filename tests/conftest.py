"""Shared fixtures: the vectors made by the real npm packages, and the node interop harness."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from interop import node
from request_crypto import JWKManager

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
#: The kids of `python_private_jwks`, by key-management algorithm.
PYTHON_KIDS = {"RSA-OAEP": "py-oaep", "RSA-OAEP-256": "py-oaep256"}


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


#: Debian's SoftHSM2 module (package softhsm2; .ci/run installs it when missing).
SOFTHSM_MODULE = "/usr/lib/softhsm/libsofthsm2.so"


class SoftHSM:
    """A SoftHSM2 token directory made for this test session, with URI helpers.

    Two tokens: `rc-test` (holding the key `recv-1`, made by `generate_key`) and `rc-other`
    (empty). Tokens are picked by label: SoftHSM numbers slots at random.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.pin_file = directory / "pin"
        self.pin_file.write_text("1234\n", encoding="utf-8")
        self.pin_file.chmod(0o600)

    def uri(self, object: str | None = "recv-1", *, token: str = "rc-test", **query: str) -> str:
        """A pkcs11: URI for `object` in `token`, with module-path and pin-source set."""
        path = f"token={token}" + (f";object={object}" if object else "")
        parameters = {"module-path": SOFTHSM_MODULE, "pin-source": f"file:{self.pin_file}"}
        parameters.update({name.replace("_", "-"): value for name, value in query.items()})
        return f"pkcs11:{path}?" + "&".join(f"{k}={v}" for k, v in parameters.items() if v)


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> SoftHSM:
    """SOFTHSM2_CONF pointed at a fresh token directory for the whole session (see SoftHSM)."""
    import shutil
    import subprocess

    if shutil.which("softhsm2-util") is None or not Path(SOFTHSM_MODULE).exists():
        if os.environ.get("CI") == "true":
            pytest.fail("the PKCS#11 tests need softhsm2 under CI (.ci/run installs it)")
        pytest.skip("softhsm2 is not installed")
    directory = tmp_path_factory.mktemp("softhsm")
    (directory / "tokens").mkdir()
    config = directory / "softhsm2.conf"
    config.write_text(
        f"directories.tokendir = {directory / 'tokens'}\nobjectstore.backend = file\n"
        "log.level = ERROR\n",
        encoding="utf-8",
    )
    os.environ["SOFTHSM2_CONF"] = str(config)  # read by the module when it first loads
    for label in ("rc-test", "rc-other", "rc-spare"):
        subprocess.run(
            ["softhsm2-util", "--init-token", "--free", "--label", label]
            + ["--so-pin", "0000", "--pin", "1234"],
            check=True,
            capture_output=True,
        )
    hsm = SoftHSM(directory)
    from request_crypto.keys.pkcs11 import generate_key

    generate_key(hsm.uri("recv-1"))
    return hsm
