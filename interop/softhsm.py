"""SoftHSM2 tokens made in a directory, for the PKCS#11 tests and the HSM benchmark.

SoftHSM reads SOFTHSM2_CONF once, when the module is first loaded in a process: call
`make_tokens` before anything opens a pkcs11: key source. Tokens are found by label (SoftHSM
numbers slots at random).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

#: Debian's module (package softhsm2; .ci/run installs it when missing).
MODULE = "/usr/lib/softhsm/libsofthsm2.so"
USER_PIN = "1234"
SO_PIN = "0000"


def available() -> bool:
    """Whether softhsm2-util and the module are installed."""
    return shutil.which("softhsm2-util") is not None and Path(MODULE).exists()


def make_tokens(directory: Path, labels: Sequence[str]) -> Path:
    """Initialise one token per label under `directory`; point SOFTHSM2_CONF at it.

    Returns the file holding the user PIN (for `pin-source=file:...`).
    """
    (directory / "tokens").mkdir(parents=True, exist_ok=True)
    config = directory / "softhsm2.conf"
    config.write_text(
        f"directories.tokendir = {directory / 'tokens'}\nobjectstore.backend = file\n"
        "log.level = ERROR\n",
        encoding="utf-8",
    )
    os.environ["SOFTHSM2_CONF"] = str(config)
    for label in labels:
        command = ["softhsm2-util", "--init-token", "--free", "--label", label]
        subprocess.run(
            [*command, "--so-pin", SO_PIN, "--pin", USER_PIN], check=True, capture_output=True
        )
    pin_file = directory / "pin"
    pin_file.write_text(USER_PIN + "\n", encoding="utf-8")
    pin_file.chmod(0o600)
    return pin_file


def uri(token: str, pin_file: Path, object: str | None = None, **query: str) -> str:
    """A pkcs11: URI for `object` in `token` (module-path and pin-source set; `query` added,
    `_` in names becoming `-`; an empty value drops that attribute)."""
    path = f"token={token}" + (f";object={object}" if object else "")
    parameters = {"module-path": MODULE, "pin-source": f"file:{pin_file}"}
    parameters.update({name.replace("_", "-"): value for name, value in query.items()})
    return f"pkcs11:{path}?" + "&".join(f"{k}={v}" for k, v in parameters.items() if v)


def token_dir(label: str) -> Path:
    """The directory SoftHSM keeps token `label` in (under SOFTHSM2_CONF's tokendir): the
    fault tests move it away and back, as a device that disappears and returns."""
    config = Path(os.environ["SOFTHSM2_CONF"]).read_text(encoding="utf-8")
    tokens = Path(config.split("directories.tokendir = ", 1)[1].splitlines()[0])
    for directory in tokens.iterdir():
        token_object = directory / "token.object"
        if token_object.exists() and label.encode() in token_object.read_bytes():
            return directory
    raise LookupError(f"no SoftHSM token {label!r} in {tokens}")
