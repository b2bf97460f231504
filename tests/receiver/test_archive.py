"""The sealed archive sink: acknowledged payloads readable from the archive while the server runs.

Real Uvicorn servers on loopback (ReceiverThread) and real `serve` processes; the archive is
read back with `request-crypto open` and the archive's private set, which the receiver never
holds.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from request_crypto import JWKManager, RequestEncryptor
from request_crypto.errors import InvalidArgumentError, SinkUnavailableError
from request_crypto.keyfile import write_jwks
from request_crypto.receiver import ReceiverConfig, SinkURLError, create_app, open_sink
from request_crypto.receiver.archive import ArchiveSink
from request_crypto.receiver.sinks import describe_sink, parse_sink_url
from request_crypto.receiver.testing import ReceiverThread
from tests.cli.runner import fails, ok
from tests.receiver.helpers import PAYLOADS, client, record, write_private_set
from tests.receiver.processes import Server, clean_env, console_script, post_each


@pytest.fixture(scope="module")
def archive_keys() -> JWKManager:
    manager = JWKManager()
    manager.add_key("archive-1", alg="RSA-OAEP-256")
    return manager


@pytest.fixture
def archive(tmp_path: Path, archive_keys: JWKManager) -> dict[str, Path]:
    """The archive's public set (for the receiver), private set (for readers) and directory."""
    public, private = tmp_path / "archive_public.json", tmp_path / "archive_private.json"
    write_jwks(public, archive_keys.get_public_jwks())
    write_jwks(private, archive_keys.get_private_jwks())
    return {"public": public, "private": private, "dir": tmp_path / "archive"}


def url(archive: dict[str, Path], extra: str = "") -> str:
    return f"jsonl:///{archive['dir']}/?seal={archive['public']}{extra}"


def read_archive(archive: dict[str, Path], target: Path | None = None) -> list[dict[str, Any]]:
    """Every record of the archive (or of one file), through `request-crypto open`."""
    result = ok("open", "--jwks", archive["private"], target or archive["dir"])
    return [json.loads(line) for line in result.stdout.splitlines()]


def sealed_names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".jsonl.sealed"))


def test_acknowledged_payloads_are_readable_while_the_server_runs_and_nothing_is_plain(
    tmp_path: Path, keys: JWKManager, archive: dict[str, Path]
) -> None:
    marker = f"marker-{uuid.uuid4()}"
    key_file = write_private_set(tmp_path / "private.json", keys)
    encryptor = RequestEncryptor(keys.get_public_jwks(), format="jwe")
    bodies = [encryptor.encrypt("rx-a", {"i": i, "secret": marker}) for i in range(30)]
    assert url(archive).startswith("jsonl:////")  # an absolute path: four slashes
    with (
        ReceiverThread(create_app(key_file, sink=url(archive))) as receiver,
        client(receiver.url) as http,
    ):
        first = http.post(PAYLOADS, content=bodies[0])
        assert first.status_code == 202
        # Acknowledged means readable now, with the server still running.
        assert [r["id"] for r in read_archive(archive)] == [first.json()["id"]]
        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(pool.map(lambda b: http.post(PAYLOADS, content=b), bodies[1:]))
        assert [a.status_code for a in answers] == [202] * 29
        ids = {first.json()["id"]} | {a.json()["id"] for a in answers}
        records = read_archive(archive)
        assert {r["id"] for r in records} == ids and len(records) == 30
        assert sorted(r["payload"]["i"] for r in records) == list(range(30))
        names = sealed_names(archive["dir"])
        for name in names:  # each file opens alone too
            assert read_archive(archive, archive["dir"] / name)
        on_disk = list(archive["dir"].iterdir())
        assert len(names) == len(on_disk)  # no temporary file left, no replays file (unsigned)
        assert all(marker.encode() not in path.read_bytes() for path in on_disk)
        assert all(path.stat().st_mode & 0o777 == 0o600 for path in on_disk)
    assert names == sorted(names) and len(set(names)) == len(names)
    fails("open", "--jwks", archive["public"], archive["dir"])  # the public set opens nothing


def test_a_crash_before_the_rename_leaves_no_file_under_a_final_name(
    tmp_path: Path, archive: dict[str, Path]
) -> None:
    """The writer dies (os._exit) at the rename, and while writing: no half file is visible."""
    for where in ("rename", "fsync"):
        script = textwrap.dedent(
            f"""
            import os, sys
            sys.path.insert(0, {os.getcwd()!r})
            from request_crypto.receiver.archive import ArchiveSink
            from tests.receiver.helpers import record
            sink = ArchiveSink({str(archive["dir"])!r}, {str(archive["public"])!r})
            os.{where} = lambda *args, **kwargs: os._exit(9)
            sink.write_batch([record({{"lost": True, "pad": "x" * 200_000}})])
            """
        )
        crashed = subprocess.run([sys.executable, "-c", script], check=False, timeout=60)
        assert crashed.returncode == 9
    left = sorted(p.name for p in archive["dir"].iterdir())
    assert len(left) == 2 and all(n.startswith(".") and n.endswith(".part") for n in left)
    assert sealed_names(archive["dir"]) == []
    assert "holds no .sealed file" in fails("open", "--jwks", archive["private"], archive["dir"])
    sink = ArchiveSink(archive["dir"], archive["public"])  # the next writer carries on
    stored = record({"after": "the crash"})
    sink.write_batch([stored])
    sink.close()
    assert [r["id"] for r in read_archive(archive)] == [stored.id]


def test_a_batch_over_the_cap_is_split_into_files_in_order(archive: dict[str, Path]) -> None:
    sink = open_sink(url(archive, "&max_file_size=1KiB"))
    assert isinstance(sink, ArchiveSink) and sink.max_file_size == 1024
    records = [record({"i": i, "pad": "p" * 200}) for i in range(12)]  # ~300 bytes a line
    huge = record({"i": 12, "pad": "h" * 5000})  # over the cap alone: a file of its own
    assert sink.write_batch([*records, huge]) == [r.id for r in [*records, huge]]
    sink.write_batch([record({"i": 13})])
    sink.close()
    names = sealed_names(archive["dir"])
    sizes = [
        len(ok("open", "--jwks", archive["private"], archive["dir"] / n).stdout_bytes)
        for n in names
    ]
    per_file = 1024 // len(records[0].to_json_line().encode())
    full = -(-12 // per_file)
    assert per_file >= 2 and len(names) == full + 2, sizes  # the lines; the huge one; the next
    assert all(size <= 1024 for size in sizes[:full]) and sizes[full] > 5000
    assert [r["payload"]["i"] for r in read_archive(archive)] == list(range(14))
    out = archive["dir"].parent / "all.jsonl"  # to a file: written whole, 0600
    ok("open", "--jwks", archive["private"], archive["dir"], "-o", out)
    assert [json.loads(line)["payload"]["i"] for line in out.read_text().splitlines()] == list(
        range(14)
    )
    assert out.stat().st_mode & 0o777 == 0o600


def test_a_failed_batch_answers_503_and_leaves_nothing(
    archive: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = ArchiveSink(archive["dir"], archive["public"], max_file_size=400)
    real_fsync, calls = os.fsync, []

    def fsync(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 2:  # the second file of the batch: the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(SinkUnavailableError, match="No space left"):
        sink.write_batch([record({"pad": "x" * 300}) for _ in range(3)])
    assert list(archive["dir"].iterdir()) == []  # the first file, renamed, was removed again
    monkeypatch.setattr(os, "fsync", real_fsync)
    stored = record({"ok": 1})
    sink.write_batch([stored])
    sink.close()
    assert [r["id"] for r in read_archive(archive)] == [stored.id]


def test_the_archive_directory_gone_means_503_until_it_is_back(
    tmp_path: Path, keys: JWKManager, archive: dict[str, Path]
) -> None:
    encryptor = RequestEncryptor(keys.get_public_jwks())
    key_file = write_private_set(tmp_path / "private.json", keys)
    moved = tmp_path / "moved"
    with (
        ReceiverThread(create_app(key_file, sink=url(archive))) as receiver,
        client(receiver.url) as http,
    ):
        assert http.post(PAYLOADS, content=encryptor.encrypt("rx-a", {"n": 1})).status_code == 202
        archive["dir"].rename(moved)
        refused = http.post(PAYLOADS, content=encryptor.encrypt("rx-a", {"n": 2}))
        assert refused.status_code == 503 and refused.headers["retry-after"]
        assert http.get("/readyz").status_code == 503
        archive["dir"].mkdir(mode=0o700)  # another directory under the name: still refused
        assert http.post(PAYLOADS, content=encryptor.encrypt("rx-a", {"n": 3})).status_code == 503
        archive["dir"].rmdir()
        moved.rename(archive["dir"])
        assert http.get("/readyz").status_code == 200
        assert http.post(PAYLOADS, content=encryptor.encrypt("rx-a", {"n": 4})).status_code == 202
    assert [r["payload"]["n"] for r in read_archive(archive)] == [1, 4]


def test_archive_urls_settings_and_refusals(tmp_path: Path, archive: dict[str, Path]) -> None:
    assert parse_sink_url("jsonl:///a/?seal=p.json") == ("archive", Path("a"))
    assert parse_sink_url("jsonl:////var/a/?seal=p.json&max_file_size=1MiB")[1] == Path("/var/a")
    for bad in (
        "jsonl:///a/?seal=",
        "jsonl:///a/?other=1&seal=p.json",
        "jsonl:///a/?seal=p.json&max_file_size=lots",
        "sqlite:///a.db?seal=p.json",
        "jsonl:///?seal=p.json",
        "jsonl:///a/?seal=p.json&max_file_size=0",
    ):
        with pytest.raises((SinkURLError, InvalidArgumentError)):
            parse_sink_url(bad)
    assert "sealed archive" in describe_sink(url(archive)) and "16 MiB" in describe_sink(
        url(archive)
    )
    config = ReceiverConfig(jwks=tmp_path / "k.json", sink=url(archive, "&max_file_size=2MiB"))
    assert ReceiverConfig.from_env(config.to_env()).sink == config.sink
    # The receiver seals to a public set; handed the private set, it refuses to start.
    with pytest.raises(InvalidArgumentError, match="public set only"):
        ArchiveSink(archive["dir"], archive["private"])
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o777)
    loose.chmod(0o777)
    with pytest.raises(InvalidArgumentError, match="writable by group or others"):
        ArchiveSink(loose, archive["public"])


@pytest.mark.slow
def test_serve_with_two_workers_relative_archive_and_shared_replays(
    tmp_path: Path, keys: JWKManager, archive: dict[str, Path]
) -> None:
    """``serve --workers 2`` with the relative URL form: every 202 readable, replays shared."""
    from request_crypto.keys.signing import generate_signing_jwk, public_key_set

    private = write_private_set(tmp_path / "private.json", keys)
    sender = {"keys": [generate_signing_jwk("kibana-1", "ES256")]}
    write_jwks(tmp_path / "senders.json", public_key_set(sender))
    command = [
        *console_script(),
        *["serve", "--jwks", str(private), "--port", "0", "--workers", "2"],
        *["--sink", "jsonl:///archive/?seal=archive_public.json&max_file_size=4KiB"],
        *["--verify-with", "senders.json"],
    ]
    encryptor = RequestEncryptor(keys.get_public_jwks(), format="jwe")
    bodies = [encryptor.encrypt("rx-b", {"i": i, "pad": "z" * 500}) for i in range(40)]
    token = RequestEncryptor(keys.get_public_jwks(), sign_with=sender).signer.sign({"n": 1})
    public = JWKManager(keys.get_public_jwks())
    signed = [public.encrypt_jwe("rx-a", token.encode(), cty="JWT") for _ in range(9)]
    server = Server(command, tmp_path)
    try:
        base = server.wait_listening()
        answers = post_each(f"{base}{PAYLOADS}", bodies)
        assert [a.status_code for a in answers] == [202] * 40
        assert {r["id"] for r in read_archive(archive)} == {a.json()["id"] for a in answers}
        assert post_each(f"{base}{PAYLOADS}", signed[:1])[0].status_code == 202
        replays = post_each(f"{base}{PAYLOADS}", signed[1:], threads=4)
        assert [a.status_code for a in replays] == [409] * 8  # whichever worker answers
    finally:
        code = server.stop()
    assert code == 0, "".join(server.stderr)
    records = read_archive(archive)
    assert sorted(r["payload"]["i"] for r in records if "i" in r["payload"]) == list(range(40))
    assert sum(1 for r in records if "signer" in r) == 1
    names = sealed_names(archive["dir"])
    assert len({name.split("-")[1] for name in names}) <= 2 and len(set(names)) == len(names)
    assert "sealed archive" in "".join(server.stderr)
    assert (archive["dir"] / "replays.db").exists()


def test_serve_warns_when_stdout_keeps_the_jtis(tmp_path: Path, keys: JWKManager) -> None:
    from request_crypto.keys.signing import generate_signing_jwk, public_key_set

    private = write_private_set(tmp_path / "private.json", keys)
    write_jwks(
        tmp_path / "senders.json", public_key_set({"keys": [generate_signing_jwk("s", "ES256")]})
    )
    base = [*console_script(), "serve", "--jwks", str(private), "--port", "0"]
    for extra, words in (
        (
            ["--sink", "-", "--verify-with", "senders.json", "--workers", "2"],
            "each of the 2 workers",
        ),
        (["--sink", "-", "--verify-with", "senders.json"], "a restart forgets them"),
        (["--sink", "-"], None),
    ):
        server = Server([*base, *extra], tmp_path)
        try:
            server.wait_listening()
        finally:
            assert server.stop() == 0
        log = "".join(server.stderr)
        assert ("jtis in memory only" in log) == (words is not None), log
        assert words is None or words in log
    assert clean_env()  # the helpers' environment: no proxy for loopback
