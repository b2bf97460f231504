"""`request-crypto seal`, `open` and `inspect` of sealed files, in real processes and in Typer.

The console script runs a plain `seal`/`open` command line without Typer (`cli/_fast.py`);
`CliRunner` goes through the full Typer app. Both are exercised, and must behave alike.
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from request_crypto import JWKManager
from request_crypto.cli import app

SCRIPT = Path(sys.executable).parent / "request-crypto"
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "request_crypto"]
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def key_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """private.json (k1, k2), public.json (their public halves), other.json (k1, other key)."""
    directory = tmp_path_factory.mktemp("keys")
    keys = JWKManager()
    keys.add_key("k1", alg="RSA-OAEP-256")
    keys.add_key("k2", alg="RSA-OAEP-256")
    other = JWKManager()
    other.add_key("k1", alg="RSA-OAEP-256")
    files = {
        "private": (directory / "private.json", keys.get_private_jwks()),
        "public": (directory / "public.json", keys.get_public_jwks()),
        "other": (directory / "other.json", other.get_private_jwks()),
    }
    for path, document in files.values():
        path.write_text(json.dumps(document))
        path.chmod(0o600)
    return {name: path for name, (path, _) in files.items()}


def run(
    *args: object, stdin: bytes | None = None, **kwargs: Any
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*COMMAND, *map(str, args)],
        input=stdin,
        capture_output=True,
        timeout=300,
        check=False,
        **kwargs,
    )


def ok(*args: object, stdin: bytes | None = None) -> bytes:
    result = run(*args, stdin=stdin)
    assert result.returncode == 0, result.stderr
    assert result.stderr == b""
    return result.stdout


def one_error(result: subprocess.CompletedProcess[bytes] | Any, *needles: str) -> str:
    """Exit 1 with exactly one `error:` line on stderr (no traceback) naming `needles`."""
    stderr = result.stderr.decode() if isinstance(result.stderr, bytes) else result.stderr
    assert result.returncode == 1, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


def inspect_json(*args: object, stdin: bytes | None = None) -> dict[str, Any]:
    return json.loads(ok("inspect", *args, stdin=stdin))


# ---------------------------------------------------------------------------------------------
# Round trips


def test_file_to_file_and_pipes(key_files: dict[str, Path], tmp_path: Path) -> None:
    data = os.urandom(3 * 65536 + 123)
    plain, sealed, back = tmp_path / "plain", tmp_path / "sealed", tmp_path / "back"
    plain.write_bytes(data)
    ok("seal", "--jwks", key_files["public"], plain, "-o", sealed)
    ok("open", "--jwks", key_files["private"], sealed, "-o", back)
    assert back.read_bytes() == data
    assert (back.stat().st_mode & 0o777) == 0o600
    piped = ok("seal", "--jwks", key_files["public"], stdin=data)
    assert ok("open", "--jwks", key_files["private"], "-", stdin=piped) == data
    assert ok("open", "--jwks", key_files["private"], "-o", "-", stdin=piped) == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["back", "plain", "sealed"]


def test_default_is_the_newest_key_and_kid_repeats(key_files: dict[str, Path]) -> None:
    newest = ok("seal", "--jwks", key_files["public"], stdin=b"x")
    assert [r["kid"] for r in inspect_json(stdin=newest)["recipients"]] == ["k2"]
    both = ok("seal", "--jwks", key_files["public"], "--kid", "k1", "--kid=k2", stdin=b"x")
    assert [r["kid"] for r in inspect_json(stdin=both)["recipients"]] == ["k1", "k2"]


def test_typer_path_matches(key_files: dict[str, Path], tmp_path: Path) -> None:
    """The same commands through the Typer app (what `--help` and odd command lines use)."""
    runner = CliRunner()
    data = os.urandom(70000)
    plain, sealed, back = tmp_path / "plain", tmp_path / "sealed", tmp_path / "back"
    plain.write_bytes(data)
    result = runner.invoke(
        app,
        [
            "seal",
            "--jwks",
            str(key_files["public"]),
            "--kid",
            "k1",
            "--kid",
            "k2",
            str(plain),
            "-o",
            str(sealed),
            "--segment-size",
            "4096",
        ],
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        app, ["open", "--jwks", str(key_files["private"]), str(sealed), "-o", str(back)]
    )
    assert result.exit_code == 0, result.output
    assert back.read_bytes() == data
    described = inspect_json(sealed)
    assert described["segment_size"] == 4096 and described["plaintext_length"] == len(data)
    result = runner.invoke(
        app, ["open", "--jwks", str(key_files["private"])], input=sealed.read_bytes()
    )
    assert result.exit_code == 0 and result.stdout_bytes == data
    result = runner.invoke(app, ["open", "--jwks", str(key_files["other"]), str(sealed)])
    assert result.exit_code == 1 and "header does not authenticate" in result.output


def test_help_and_usage_errors_go_to_typer(key_files: dict[str, Path]) -> None:
    result = run("seal", "--help")
    assert result.returncode == 0 and b"--kid" in result.stdout and b"PUBLIC_SET" in result.stdout
    result = run("open", "--jwks", key_files["private"], "--bogus")
    assert result.returncode == 2 and b"No such option" in result.stderr
    result = run("open", "--jwks", key_files["private"], "--kid", "k1")  # no --kid for open
    assert result.returncode == 2
    result = run("open", "--jwks", key_files["private"], "--segment-size", "1024")
    assert result.returncode == 2
    result = run("seal", "--jwks", key_files["public"], "a", "b")  # one INPUT only
    assert result.returncode == 2
    one_error(run("seal", "--jwks=", stdin=b"x"))  # an empty path: Typer passes it on


# ---------------------------------------------------------------------------------------------
# inspect


def test_inspect_without_and_with_key(key_files: dict[str, Path], tmp_path: Path) -> None:
    sealed = tmp_path / "sealed"
    sealed.write_bytes(
        ok(
            "seal",
            "--jwks",
            key_files["public"],
            "--kid",
            "k1",
            "--segment-size",
            "1024",
            stdin=b"a" * 5000,
        )
    )
    expected = {
        "format": "sealed",
        "version": 1,
        "recipients": [{"kid": "k1", "alg": "RSA-OAEP-256", "enc": "A256GCM"}],
        "segment_size": 1024,
        "segments": 5,
        "plaintext_length": 5000,
        "authenticated": False,
    }
    described = inspect_json(sealed)
    assert {k: described[k] for k in expected} == expected
    assert described["header_size"] + 5000 + 5 * 16 == sealed.stat().st_size
    from_stdin = inspect_json(stdin=sealed.read_bytes())
    assert {k: from_stdin[k] for k in expected} == expected
    assert inspect_json("--jwks", key_files["private"], sealed)["authenticated"] is True
    one_error(run("inspect", "--jwks", key_files["other"], sealed), "header does not authenticate")
    result = run("inspect", stdin=b"eyJub3QiOiJzZWFsZWQifQ")  # a body still needs --jwks
    assert result.returncode == 2 and b"--jwks" in result.stderr


# ---------------------------------------------------------------------------------------------
# Failures: one error line, exit 1, nothing unauthenticated written, nothing left behind


def test_tampered_file_leaves_nothing(key_files: dict[str, Path], tmp_path: Path) -> None:
    sealed = bytearray(ok("seal", "--jwks", key_files["public"], stdin=os.urandom(200000)))
    sealed[-3] ^= 0x10
    bad, target = tmp_path / "bad", tmp_path / "out"
    bad.write_bytes(bytes(sealed))
    one_error(
        run("open", "--jwks", key_files["private"], bad, "-o", target),
        "segment failed authentication",
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad"]
    target.write_bytes(b"kept")
    one_error(run("open", "--jwks", key_files["private"], bad, "-o", target))
    assert target.read_bytes() == b"kept"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "out"]


def test_stream_ending_early_to_stdout(key_files: dict[str, Path]) -> None:
    """Batches already authenticated are out; then exit 1 with an `error:` line."""
    data = os.urandom(3 * MIB)
    sealed = ok("seal", "--jwks", key_files["public"], stdin=data)
    header = sealed.index(b"\nmac ") + 49
    cut = sealed[: header + 40 * (65536 + 16)]  # at a segment boundary, mid-file
    result = run("open", "--jwks", key_files["private"], stdin=cut)
    one_error(result, "ends early")
    assert len(result.stdout) < 40 * 65536 and data.startswith(result.stdout)
    result = run("open", "--jwks", key_files["private"], stdin=sealed[:-1000])
    one_error(result, "segment failed authentication")
    assert data.startswith(result.stdout) and len(result.stdout) < len(data)


@pytest.mark.parametrize(
    ("case", "needles"),
    [
        ("missing input", ["no such file"]),
        ("unknown kid", ["no key 'nope'", "'k1', 'k2'"]),
        ("public set to open", ["holds no private keys"]),
        ("not for this set", ["header does not authenticate"]),
        ("not sealed", ["not a sealed file"]),
        ("empty", ["empty"]),
        ("bad key-set file", ["not valid JSON"]),
    ],
)
def test_errors_are_one_line(
    key_files: dict[str, Path], tmp_path: Path, case: str, needles: list[str]
) -> None:
    sealed = ok("seal", "--jwks", key_files["public"], "--kid", "k1", stdin=b"data")
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    private, public = key_files["private"], key_files["public"]
    result = {
        "missing input": lambda: run("open", "--jwks", private, tmp_path / "absent"),
        "unknown kid": lambda: run("seal", "--jwks", public, "--kid", "nope", stdin=b"x"),
        "public set to open": lambda: run("open", "--jwks", public, stdin=sealed),
        "not for this set": lambda: run("open", "--jwks", key_files["other"], stdin=sealed),
        "not sealed": lambda: run(
            "open", "--jwks", private, stdin=b"hello world, not sealed at all"
        ),
        "empty": lambda: run("open", "--jwks", private, stdin=b""),
        "bad key-set file": lambda: run("seal", "--jwks", garbage, stdin=b"x"),
    }[case]()
    one_error(result, *needles)
    assert result.stdout == b""


def test_seal_refuses_a_terminal(key_files: dict[str, Path]) -> None:
    leader, follower = pty.openpty()
    try:
        result = subprocess.run(
            [*COMMAND, "seal", "--jwks", str(key_files["public"])],
            input=b"x",
            stdout=follower,
            stderr=subprocess.PIPE,
            timeout=120,
            check=False,
        )
    finally:
        os.close(follower)
        os.close(leader)
    one_error(result, "terminal")


def test_output_to_a_fifo_stays_a_fifo(key_files: dict[str, Path], tmp_path: Path) -> None:
    """A non-regular output (a FIFO; /dev/null likewise) is written in place, never replaced."""
    sealed = ok("seal", "--jwks", key_files["public"], stdin=b"through a fifo")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE)
    try:
        ok("open", "--jwks", key_files["private"], "-o", fifo, stdin=sealed)
        assert reader.communicate(timeout=60)[0] == b"through a fifo"
    finally:
        reader.kill()  # if the FIFO was never opened for writing, cat would wait forever
        reader.wait()
    assert fifo.is_fifo()


# ---------------------------------------------------------------------------------------------
# Constant memory


#: Runs its arguments as a child and prints the child's peak RSS (KiB) on stderr. A process
#: forked straight from pytest would report pytest's own RSS: Linux keeps the peak of the
#: memory image a process had before `exec`. Forked from this small probe, it cannot.
RSS_PROBE = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[1:])
_, status, usage = os.wait4(child.pid, 0)
print(f"exit={os.waitstatus_to_exitcode(status)} maxrss_kib={usage.ru_maxrss}", file=sys.stderr)
"""


def measured(argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", RSS_PROBE, *argv], stderr=subprocess.PIPE, **kwargs
    )


def peak_rss_mib(process: subprocess.Popen[bytes]) -> float:
    assert process.stderr is not None
    report = process.stderr.read().decode().split()
    assert process.wait() == 0 and report[0] == "exit=0", report
    return int(report[1].removeprefix("maxrss_kib=")) / 1024


@pytest.mark.slow
def test_memory_stays_flat_through_pipes(key_files: dict[str, Path]) -> None:
    """256 MiB generated on the fly through `seal | open`: each process under 64 MiB."""
    size = 256 * MIB
    source = subprocess.Popen(["head", "-c", str(size), "/dev/zero"], stdout=subprocess.PIPE)
    sealer = measured(
        [*COMMAND, "seal", "--jwks", str(key_files["public"])],
        stdin=source.stdout,
        stdout=subprocess.PIPE,
    )
    opener = measured(
        [*COMMAND, "open", "--jwks", str(key_files["private"])],
        stdin=sealer.stdout,
        stdout=subprocess.PIPE,
    )
    assert source.stdout is not None and sealer.stdout is not None and opener.stdout is not None
    source.stdout.close()
    sealer.stdout.close()
    received = 0
    while chunk := opener.stdout.read(MIB):
        assert chunk.count(0) == len(chunk)
        received += len(chunk)
    assert received == size
    assert 5 < peak_rss_mib(sealer) < 64
    assert 5 < peak_rss_mib(opener) < 64
    source.wait()
