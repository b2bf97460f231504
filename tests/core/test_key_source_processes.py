"""Key sources and processes: a forked child never uses its parent's PKCS#11 session or boto3
client, and closing the last source on a token logs out of it (`serve` closes the sources it
only checked, so the supervisor of `--workers N` holds no login)."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from request_crypto import RequestDecryptor, RequestEncryptor
from request_crypto.keys.aws_kms import AWSKMSKeySource
from request_crypto.keys.pkcs11 import PKCS11KeySource, generate_key

PAYLOAD = {"event": "forked"}


def _in_child(work: Callable[[], Any], timeout: float = 120) -> Any:
    """`work()` run in a forked child; its JSON result comes back through a pipe."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(read)
            try:
                result = json.dumps({"result": work()})
            except BaseException as exc:  # reported to the parent, which fails the test
                result = json.dumps({"error": repr(exc)})
            os.write(write, result.encode())
        finally:
            os._exit(0)
    os.close(write)
    try:
        ready, _, _ = select.select([read], [], [], timeout)
        if not ready:
            os.kill(pid, signal.SIGKILL)
            raise AssertionError(f"the forked child did not answer within {timeout} s")
        with os.fdopen(read, "rb", closefd=False) as stream:
            answer = json.loads(stream.read() or b'{"error": "no answer"}')
    finally:
        os.close(read)
        os.waitpid(pid, 0)
    assert "error" not in answer, answer["error"]
    return answer["result"]


def test_a_forked_child_logs_in_to_the_token_itself(softhsm: Any) -> None:
    source = PKCS11KeySource(softhsm.uri("recv-1"))
    public = {"keys": [source.public_jwk("recv-1")]}
    body = RequestEncryptor(public, format="jwe").encrypt("recv-1", PAYLOAD)
    decryptor = RequestDecryptor(source)
    assert decryptor.decrypt(body) == PAYLOAD
    assert source.logins >= 1

    def child() -> Any:
        return [decryptor.decrypt(body), source.logins]

    assert _in_child(child) == [PAYLOAD, 1]  # its own login, not the parent's session
    assert decryptor.decrypt(body) == PAYLOAD  # the parent's session is still good


def test_a_forked_child_makes_its_own_kms_client(kms: Any) -> None:
    source = AWSKMSKeySource(f"aws-kms:{kms.rsa_key()}?kid=kms-fork")
    public = {"keys": [source.public_jwk("kms-fork")]}
    body = RequestEncryptor(public, format="jwe").encrypt("kms-fork", PAYLOAD)
    decryptor = RequestDecryptor(source)
    assert decryptor.decrypt(body) == PAYLOAD
    parent_client = id(source._client)  # which client each process uses

    def child() -> Any:
        return [decryptor.decrypt(body), id(source._client) != parent_client]

    assert _in_child(child) == [PAYLOAD, True]
    assert decryptor.decrypt(body) == PAYLOAD


def test_closing_the_last_source_on_a_token_logs_out(softhsm: Any) -> None:
    uri = softhsm.uri("close-1", token="rc-close")
    generate_key(uri)
    first, second = PKCS11KeySource(uri), PKCS11KeySource(uri)
    logins = first.logins
    first.close()
    second.health()  # still open: the session is shared, no new login
    assert second.logins == logins
    second.close()
    third = PKCS11KeySource(uri)  # the session was closed: a new login
    assert third.logins == logins + 1
    third.health()
    third.close()


_OPEN = """
import sys
from request_crypto.keys.pkcs11 import PKCS11KeySource
try:
    print(PKCS11KeySource(sys.argv[1]).kids())
except Exception as exc:
    print(f"FAILED {exc!r}")
"""


def test_processes_opening_one_token_at_once_all_open_it(softhsm: Any) -> None:
    """SoftHSM races when processes log in together (a token file read while another login
    rewrites it: CKR_GENERAL_ERROR, or no such token); `serve --workers N` starts N at once.
    Opening a source tries an unavailable or unseen token again."""
    failed = []
    for _ in range(8):
        started = [
            subprocess.Popen(
                [sys.executable, "-c", _OPEN, softhsm.uri("recv-1")],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for _ in range(8)
        ]
        outputs = [process.communicate(timeout=120)[0] for process in started]
        failed += [output for output in outputs if output.strip() != "['recv-1']"]
    assert failed == []
