"""The CLI's inputs: bounded reads (--max-body), whole-body `inspect`, key sets it is handed."""

from __future__ import annotations

import base64
import copy
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from request_crypto.cli import _common
from request_crypto.cli._common import CLIError, read_input
from request_crypto.formats.elastic import pack_body, unpack_body
from request_crypto.keys.jwks import PRIVATE_MEMBERS
from request_crypto.limits import DEFAULT_MAX_BODY_SIZE
from tests.cli.runner import fails, invoke, ok

MiB = 1024 * 1024


def write_set(path: Path, jwks: dict[str, Any]) -> Path:
    path.write_text(json.dumps(jwks))
    path.chmod(0o600)
    return path


@pytest.fixture
def sets(tmp_path: Path, private_jwks: dict[str, Any], public_jwks: dict[str, Any]) -> Any:
    private = write_set(tmp_path / "private_jwks.json", private_jwks)
    public = write_set(tmp_path / "public_jwks.json", public_jwks)
    return private, public


def body_of(public: Path, body_format: str = "elastic", kid: str = "kibana_2") -> str:
    return ok(
        "encrypt", "--jwks", public, "--kid", kid, "--format", body_format, stdin="[1]"
    ).stdout


# ---------------------------------------------------------------------------------------------
# inspect authenticates the whole body


def alter_payload(body: str, body_format: str) -> str:
    """Flip one bit of the encrypted payload (elastic) or of the JWE ciphertext."""
    if body_format == "elastic":
        parts = unpack_body(body.strip())
        raw = bytearray(base64.b64decode(parts.encrypted_payload))
        raw[-1] ^= 1
        return pack_body(parts.encrypted_aes_key, base64.b64encode(raw).decode())
    parts_of_jwe = body.strip().split(".")
    parts_of_jwe[3] = ("B" if parts_of_jwe[3][0] == "A" else "A") + parts_of_jwe[3][1:]
    return ".".join(parts_of_jwe)


@pytest.mark.parametrize("body_format", ["elastic", "jwe"])
@pytest.mark.parametrize("command", ["inspect", "decrypt"])
def test_a_body_altered_in_its_payload_fails_inspect_as_decrypt(
    sets: Any, body_format: str, command: str
) -> None:
    private, public = sets
    body = body_of(public, body_format)
    assert (
        json.loads(ok("inspect", "--jwks", private, stdin=body).stdout)["key"]["kid"] == "kibana_2"
    )
    error = fails(command, "--jwks", private, stdin=alter_payload(body, body_format))
    assert "unable to decrypt the body" in error


# ---------------------------------------------------------------------------------------------
# --max-body


@pytest.mark.parametrize("via", ["file", "stdin"])
@pytest.mark.parametrize("command", ["decrypt", "inspect"])
def test_max_body_bounds_files_and_stdin(sets: Any, tmp_path: Path, command: str, via: str) -> None:
    private, public = sets
    body = body_of(public)  # with its trailing newline: what is read is what is counted
    size = len(body.encode())
    path = tmp_path / "body.txt"
    path.write_text(body)
    source: dict[str, Any] = {"stdin": body} if via == "stdin" else {}
    where = [path] if via == "file" else []
    ok(command, "--jwks", private, "--max-body", size, *where, **source)
    error = fails(command, "--jwks", private, "--max-body", size - 1, *where, **source)
    name = "stdin" if via == "stdin" else str(path)
    assert error == (
        f"error: {name} holds more than {size - 1} bytes (--max-body); "
        "pass a larger --max-body if bodies this big are expected"
    )


@pytest.mark.parametrize("value", ["0", "-5", "lots"])
def test_max_body_must_be_a_positive_number(sets: Any, value: str) -> None:
    result = invoke("decrypt", "--jwks", sets[0], "--max-body", value, stdin="x")
    assert result.exit_code == 2
    assert "Invalid value for '--max-body'" in result.stderr


@pytest.mark.parametrize("command", ["decrypt", "inspect"])
def test_max_body_takes_sizes_as_serve_does(sets: Any, tmp_path: Path, command: str) -> None:
    """`--max-body 0.5KiB` here as in `serve`: 512 bytes, not a usage error."""
    private, public = sets
    path = tmp_path / "body.txt"
    path.write_text(body_of(public))
    assert path.stat().st_size > 512
    ok(command, "--jwks", private, "--max-body", "1MiB", path)
    error = fails(command, "--jwks", private, "--max-body", "0.5KiB", path)
    assert error.startswith(f"error: {path} holds more than 512 bytes (--max-body)")


def test_a_sealed_file_given_to_decrypt_says_to_open_it(sets: Any, tmp_path: Path) -> None:
    """(`inspect` describes a sealed file instead: tests/cli/test_sealed.py.)"""
    private, public = sets
    (tmp_path / "data").write_bytes(b"x" * 100)
    sealed = tmp_path / "data.sealed"
    ok("seal", "--jwks", public, tmp_path / "data", "-o", sealed)
    error = fails("decrypt", "--jwks", private, sealed)
    assert error == (
        f"error: {sealed} is a sealed file, not a request body; open it with: "
        f"request-crypto open --jwks PRIVATE_SET {sealed}"
    )


class EndlessStdin:
    """A stdin that never ends, counting what is taken from it."""

    def __init__(self) -> None:
        self.taken = 0

    def isatty(self) -> bool:
        return False

    def read(self, size: int = -1) -> bytes:
        assert size >= 0, "read everything from an endless stream"
        self.taken += size
        return b"x" * size


@pytest.mark.parametrize("limit", [1, 1000, 3 * MiB + 7])
def test_reading_stops_one_byte_past_the_cap(monkeypatch: pytest.MonkeyPatch, limit: int) -> None:
    stdin = EndlessStdin()
    monkeypatch.setattr(_common.typer, "get_binary_stream", lambda name: stdin)
    with pytest.raises(CLIError, match=f"stdin holds more than {limit} bytes"):
        read_input("-", limit)
    assert stdin.taken == limit + 1


def test_a_file_at_the_cap_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "exact"
    path.write_bytes(os.urandom(2 * MiB + 3))
    assert read_input(str(path), 2 * MiB + 3) == path.read_bytes()
    with pytest.raises(CLIError, match="more than"):
        read_input(str(path), 2 * MiB + 2)
    with pytest.raises(CLIError, match="is a directory"):
        read_input(str(tmp_path), 10)


COMMAND = [str(Path(sys.executable).parent / "request-crypto")]
if not Path(COMMAND[0]).exists():
    COMMAND = [sys.executable, "-m", "request_crypto"]


#: Runs the command given and prints its peak RSS. A child of the test process itself would
#: report at least this process's peak: Linux carries the (v)forked parent's high-water mark
#: across exec into ru_maxrss. The launcher is small, so its child's figure is its own.
LAUNCHER = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(child.pid, 0)
print(usage.ru_maxrss * 1024)  # KiB on Linux
sys.exit(os.waitstatus_to_exitcode(status))
"""


def peak_rss_of(args: list[str], stdin_bytes: int) -> tuple[int, str, int]:
    """Run the CLI fed `stdin_bytes` of junk; (exit code, stderr, its own peak RSS in bytes)."""
    process = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, *COMMAND, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdin is not None

    def feed(pipe: Any) -> None:
        chunk = b"A" * MiB
        try:
            for _ in range(stdin_bytes // MiB):
                pipe.write(chunk)
            pipe.close()
        except OSError:  # the CLI stopped reading: what this test wants
            pass

    writer = threading.Thread(target=feed, args=(process.stdin,), daemon=True)
    writer.start()
    assert process.stdout is not None and process.stderr is not None
    stderr = process.stderr.read().decode()  # the launcher writes one short line to stdout
    peak = int(process.stdout.read())
    writer.join(timeout=60)
    return process.wait(timeout=60), stderr, peak


@pytest.mark.parametrize("command", ["decrypt", "inspect"])
def test_300_mb_on_stdin_costs_little_memory(sets: Any, command: str) -> None:
    code, stderr, rss = peak_rss_of([command, "--jwks", str(sets[0])], 300 * MiB)
    assert code == 1
    assert stderr == (
        f"error: stdin holds more than {DEFAULT_MAX_BODY_SIZE} bytes (--max-body); "
        "pass a larger --max-body if bodies this big are expected\n"
    )
    # Measured ~111 MB (interpreter ~48 MB + the 64 MiB cap); reading it all was ~348 MB.
    assert rss < 150 * 1000 * 1000, rss


# ---------------------------------------------------------------------------------------------
# Key sets handed to the CLI


def test_encrypt_warns_when_given_a_private_set(sets: Any) -> None:
    private, public = sets
    result = ok("encrypt", "--jwks", private, stdin="[2]")
    assert result.stderr == (
        f"warning: {private} holds private keys; senders need only the public set "
        f"(request-crypto keys public {private}); only its public halves are used\n"
    )
    assert json.loads(ok("decrypt", "--jwks", private, stdin=result.stdout).stdout) == [2]
    assert ok("encrypt", "--jwks", public, stdin="[2]").stderr == ""


def test_send_warns_when_given_a_private_set(sets: Any) -> None:
    pytest.importorskip("httpx")
    result = invoke("send", "--jwks", sets[0], "--url", "http://127.0.0.1:1", stdin="{}")
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"warning: {sets[0]} holds private keys;"), lines
    assert result.exit_code == 1 and lines[1].startswith("error: cannot send to")


def test_an_unsound_key_is_one_error_line(tmp_path: Path, private_jwks: dict[str, Any]) -> None:
    jwks = copy.deepcopy(private_jwks)
    jwks["keys"][1]["qi"] = jwks["keys"][0]["qi"]
    path = write_set(tmp_path / "bad.json", jwks)
    # (encrypt parses only the public halves, so the private numbers do not stop it.)
    for args in (["keys", "list", path], ["decrypt", "--jwks", path], ["inspect", "--jwks", path]):
        error = fails(*args, stdin="{}")
        assert error.startswith(f"error: {path}: key #1 (kid 'kibana_2') is not a valid RSA key")
        assert not [m for m in PRIVATE_MEMBERS if jwks["keys"][1][m][:12] in error]


def with_key_ops(path: Path, jwks: dict[str, Any], key_ops: dict[int, list[str]]) -> Path:
    jwks = copy.deepcopy(jwks)
    for index, ops in key_ops.items():
        jwks["keys"][index]["key_ops"] = ops
    return write_set(path, jwks)


def test_encrypt_skips_keys_not_for_encryption(
    sets: Any, tmp_path: Path, private_jwks: dict[str, Any]
) -> None:
    private = sets[0]
    retiring = with_key_ops(tmp_path / "p.json", private_jwks, {1: ["unwrapKey"]})
    public = tmp_path / "public.json"
    ok("keys", "public", retiring, "-o", public)
    assert json.loads(public.read_text())["keys"][1]["key_ops"] == ["unwrapKey"]
    body = ok("encrypt", "--jwks", public, stdin="[3]").stdout  # the newest, kibana_2, is skipped
    assert (
        json.loads(ok("inspect", "--jwks", private, stdin=body).stdout)["key"]["kid"] == "kibana_1"
    )
    error = fails("encrypt", "--jwks", public, "--kid", "kibana_2", stdin="[3]")
    assert error.startswith("error: key 'kibana_2' is not for encryption: its key_ops")
    nothing = with_key_ops(tmp_path / "n.json", private_jwks, {0: ["decrypt"], 1: ["unwrapKey"]})
    error = fails("encrypt", "--jwks", nothing, stdin="[3]")
    assert error == (
        f"error: {nothing} has no key for encryption: every key's key_ops lack encrypt and wrapKey"
    )
    old = body_of(sets[1])  # sent to kibana_2 before its key_ops changed: it still opens
    assert json.loads(ok("decrypt", "--jwks", retiring, stdin=old).stdout) == [1]


def test_decrypt_with_a_key_not_for_decryption_says_so(
    sets: Any, tmp_path: Path, private_jwks: dict[str, Any]
) -> None:
    wrap_only = with_key_ops(tmp_path / "w.json", private_jwks, {1: ["wrapKey"]})
    error = fails("decrypt", "--jwks", wrap_only, stdin=body_of(sets[1]))
    assert error == (
        "error: no key found: the body is for kid 'kibana_2', whose key_ops in "
        f"{wrap_only} allow neither decrypt nor unwrapKey; add unwrapKey to them to decrypt it"
    )
