"""`seal`, `open` and `inspect` with s3:// INPUT/OUTPUT and aws-kms: recipients (moto server).

Real processes take the Typer-free path (`cli/_fast.py`); CliRunner the Typer app. boto3 is
imported only for s3:// or aws-kms: arguments, never for local files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from request_crypto import JWKManager
from request_crypto import s3 as s3_module
from tests.cli.runner import fails, ok

SCRIPT = Path(sys.executable).parent / "request-crypto"
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "request_crypto"]


@pytest.fixture(scope="module")
def key_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("keys")
    keys = JWKManager()
    keys.add_key("k1", alg="RSA-OAEP-256")
    paths = {"private": directory / "private.json", "public": directory / "public.json"}
    paths["private"].write_text(json.dumps(keys.get_private_jwks()))
    paths["private"].chmod(0o600)
    paths["public"].write_text(json.dumps(keys.get_public_jwks()))
    return paths


def run(*args: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*COMMAND, *map(str, args)], capture_output=True, timeout=300, check=False
    )


def error_line(result: subprocess.CompletedProcess[bytes]) -> str:
    """A failed process: exit 1, one `error:` line, no traceback."""
    assert result.returncode == 1, result.stderr
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_s3_round_trip_in_real_processes(
    kms: Any, key_files: dict[str, Path], tmp_path: Path
) -> None:
    bucket = kms.bucket()
    plain = tmp_path / "plain"
    plain.write_bytes(os.urandom(200_000))
    sealed = f"s3://{bucket}/dir/file.sealed"
    assert run("seal", "--jwks", key_files["public"], plain, "-o", sealed).returncode == 0
    out = tmp_path / "out"
    result = run("open", "--jwks", key_files["private"], sealed, "-o", out)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == plain.read_bytes()
    # s3 -> s3, then inspect without a key.
    copy = f"s3://{bucket}/copy.plain"
    assert run("open", "--jwks", key_files["private"], sealed, "-o", copy).returncode == 0
    body = kms.s3().get_object(Bucket=bucket, Key="copy.plain")["Body"].read()
    assert body == plain.read_bytes()
    info = json.loads(ok("inspect", sealed).stdout)
    assert info["recipients"][0]["kid"] == "k1"
    assert info["plaintext_length"] == 200_000


def test_s3_multipart_through_typer(
    kms: Any, key_files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(s3_module, "DEFAULT_PART_SIZE", kms.S3_PART_MIN)
    bucket = kms.bucket()
    plain = tmp_path / "plain"
    plain.write_bytes(os.urandom(5 * kms.S3_PART_MIN + 123))
    ok("seal", "--jwks", key_files["public"], plain, "-o", f"s3://{bucket}/x.sealed")
    etag = kms.s3().head_object(Bucket=bucket, Key="x.sealed")["ETag"]
    assert etag.strip('"').endswith("-6")  # six parts: five full, one short
    out = tmp_path / "out"
    ok("open", "--jwks", key_files["private"], f"s3://{bucket}/x.sealed", "-o", out)
    assert out.read_bytes() == plain.read_bytes()


def test_failed_open_to_s3_leaves_nothing(
    kms: Any, key_files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(s3_module, "DEFAULT_PART_SIZE", kms.S3_PART_MIN)
    bucket = kms.bucket()
    plain, sealed = tmp_path / "plain", tmp_path / "sealed"
    plain.write_bytes(os.urandom(3 * 1024 * 1024))
    ok("seal", "--jwks", key_files["public"], plain, "-o", sealed)
    data = bytearray(sealed.read_bytes())
    data[-50] ^= 1
    kms.s3().put_object(Bucket=bucket, Key="bad.sealed", Body=bytes(data))
    line = fails(
        "open", "--jwks", key_files["private"], f"s3://{bucket}/bad.sealed", "-o",
        f"s3://{bucket}/out",
    )  # fmt: skip
    assert "segment" in line
    assert "Contents" not in kms.s3().list_objects_v2(Bucket=bucket, Prefix="out")
    assert "Uploads" not in kms.s3().list_multipart_uploads(Bucket=bucket)


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("s3://bucket-only", "use s3://BUCKET/KEY"),
        ("s3://{bucket}/missing", "no such object"),
        ("s3://rc-no-such-bucket-here/x", "no such bucket"),
    ],
)
def test_s3_errors_are_one_line(
    kms: Any, key_files: dict[str, Path], where: str, expected: str
) -> None:
    source = where.format(bucket=kms.bucket())
    assert expected in error_line(run("open", "--jwks", key_files["private"], source))
    assert expected in fails("inspect", source)


def test_unreachable_s3_is_one_line(
    kms: Any, key_files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")
    (tmp_path / "plain").write_bytes(b"x")
    line = error_line(
        run("seal", "--jwks", key_files["public"], tmp_path / "plain", "-o", "s3://rcb/k")
    )
    assert "the S3 endpoint failed" in line


def test_kms_recipient_in_real_processes(
    kms: Any, key_files: dict[str, Path], tmp_path: Path
) -> None:
    arn = kms.symmetric_key(alias="cli-sealed")
    plain = tmp_path / "plain"
    plain.write_bytes(os.urandom(100_000))
    sealed = tmp_path / "sealed"
    result = run(
        "seal", "--jwks", key_files["public"], "--kid", "k1", "--recipient",
        "aws-kms:alias/cli-sealed", plain, "-o", sealed,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for opener in ("aws-kms:alias/cli-sealed", f"aws-kms:{arn}", key_files["private"]):
        out = tmp_path / "out"
        result = run("open", "--jwks", opener, sealed, "-o", out)
        assert result.returncode == 0, result.stderr
        assert out.read_bytes() == plain.read_bytes()
    info = json.loads(ok("inspect", sealed).stdout)
    assert info["recipients"] == [
        {"aws_kms_key": arn},
        {"kid": "k1", "alg": "RSA-OAEP-256", "enc": "A256GCM"},
    ]
    authenticated = json.loads(ok("inspect", "--jwks", "aws-kms:alias/cli-sealed", sealed).stdout)
    assert authenticated["authenticated"] is True
    # KMS only, without --jwks; then a wrong KMS key.
    only = tmp_path / "only"
    assert run("seal", "--recipient", f"aws-kms:{arn}", plain, "-o", only).returncode == 0
    assert "aws-kms:" in error_line(
        run("open", "--jwks", f"aws-kms:{kms.symmetric_key()}", only, "-o", tmp_path / "o2")
    )
    assert not (tmp_path / "o2").exists()


@pytest.mark.parametrize(
    "recipients",
    [["aws-kms:alias/a", "aws-kms:alias/b"], ["pkcs11:token=x"], ["k1"]],
)
def test_bad_recipients(key_files: dict[str, Path], recipients: list[str]) -> None:
    args = [item for recipient in recipients for item in ("--recipient", recipient)]
    line = fails("seal", "--jwks", key_files["public"], *args, key_files["public"])
    assert "--recipient takes one aws-kms:" in line


def test_seal_needs_jwks_or_a_kms_recipient(tmp_path: Path) -> None:
    (tmp_path / "plain").write_bytes(b"x")
    assert "--jwks" in fails("seal", "--kid", "k1", tmp_path / "plain", "-o", tmp_path / "o")


def test_local_files_do_not_import_boto3_pkcs11_or_jwcrypto(
    key_files: dict[str, Path], tmp_path: Path
) -> None:
    """Start-up is part of every sealed file's time: jwcrypto (with x509) alone cost ~40 ms."""
    (tmp_path / "plain").write_bytes(b"local")
    code = (
        "import sys\n"
        "from request_crypto.cli._fast import main\n"
        "for argv in (['seal', '--jwks', sys.argv[1], sys.argv[3], '-o', sys.argv[4]],\n"
        "             ['open', '--jwks', sys.argv[2], sys.argv[4], '-o', sys.argv[5]]):\n"
        "    sys.argv = ['request-crypto', *argv]\n"
        "    main()\n"
        "loaded = [m for m in sys.modules if m.startswith(('boto', 'request_crypto.s3',\n"
        "    'pkcs11', 'request_crypto.keys.pkcs11', 'request_crypto.keys.aws_kms',\n"
        "    'jwcrypto', 'cryptography.x509', 'typer', 'orjson', 'msgspec'))]\n"
        "assert not loaded, loaded\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, key_files["public"], key_files["private"],
         tmp_path / "plain", tmp_path / "sealed", tmp_path / "out"],
        capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.stdout == b"ok\n", result.stderr
    assert (tmp_path / "out").read_bytes() == b"local"
