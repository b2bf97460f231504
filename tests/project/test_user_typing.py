"""A user's own code, type-checked against the installed package, sees the package's types.

With setuptools' editable install (an import-hook finder) mypy found no `request_crypto` at
all, so every use in a user's code was silently `Any`. The build backend's editable install is
now a plain `.pth` path entry, which mypy follows to the package and its `py.typed`. This runs
mypy the way a user would: from a directory outside the repository, with the venv's mypy.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

USER_CODE = """\
from request_crypto import RequestEncryptor

encryptor = RequestEncryptor.from_file("public_jwks.json")
reveal_type(encryptor)
body: int = encryptor.encrypt("telemetry-2026-11-27", {"count": 3})
"""


@pytest.mark.slow
def test_mypy_sees_the_installed_package_types(tmp_path: Path) -> None:
    (tmp_path / "user_app.py").write_text(USER_CODE)
    environment = {k: v for k, v in os.environ.items() if k not in ("MYPYPATH", "PYTHONPATH")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--no-incremental",
            "--cache-dir",
            str(tmp_path / ".mypy_cache"),
            "--python-executable",
            sys.executable,
            "user_app.py",
        ],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    output = result.stdout + result.stderr
    assert "import-not-found" not in output, output
    assert 'Revealed type is "request_crypto.request.RequestEncryptor"' in output, output
    # The user's mistake is found, and only because encrypt()'s return type is known.
    assert (
        'user_app.py:5: error: Incompatible types in assignment (expression has type "str", '
        'variable has type "int")' in output
    ), output
    assert result.returncode == 1, output
