"""Signed bodies at the receiver: verified before they are stored, 401s, retries and replays.

Real Uvicorn servers on loopback (ReceiverThread), real httpx clients; stored rows read back
from the sink's own files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from request_crypto import JWKManager, RequestEncryptor, Signer
from request_crypto.keyfile import write_jwks
from request_crypto.keys.signing import generate_signing_jwk, public_key_set
from request_crypto.receiver import JSONLSink, StdoutSink, create_app
from request_crypto.receiver.testing import ReceiverThread
from tests.cli.runner import ok
from tests.receiver.helpers import PAYLOADS, WELL_KNOWN, client, record, write_private_set
from tests.receiver.processes import Server, console_script, post_each


@pytest.fixture(scope="module")
def sender() -> dict[str, Any]:
    return {"keys": [generate_signing_jwk("kibana-1", "ES256")]}


@pytest.fixture
def files(tmp_path: Path, keys: JWKManager, sender: dict[str, Any]) -> dict[str, Path]:
    write_jwks(tmp_path / "senders.json", public_key_set(sender))
    return {
        "keys": write_private_set(tmp_path / "private.json", keys),
        "senders": tmp_path / "senders.json",
        "db": tmp_path / "payloads.db",
    }


def signed_rows(db: Path) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(db)) as connection:
        return connection.execute(
            "SELECT id, kid, signer_kid, signer_iss, jti, payload FROM payloads"
            " ORDER BY received_at"
        ).fetchall()


def serve(files: dict[str, Path], **settings: Any) -> ReceiverThread:
    settings.setdefault("sink", f"sqlite:///{files['db']}")
    return ReceiverThread(create_app(files["keys"], verify_with=str(files["senders"]), **settings))


def test_signed_body_is_verified_stored_with_its_signer_and_retried_once(
    files, keys, sender
) -> None:
    encryptor = RequestEncryptor(keys.get_public_jwks(), sign_with=sender, issuer="kibana")
    body = encryptor.encrypt("rx-a", {"count": 3})
    with (
        serve(files, require_signature=True, issuer="kibana") as receiver,
        client(receiver.url) as http,
    ):
        first = http.post(PAYLOADS, content=body)
        assert first.status_code == 202, first.text
        again = http.post(PAYLOADS, content=body)  # the very same body: a retry
        assert again.status_code == 202 and again.json()["id"] == first.json()["id"]
    rows = signed_rows(files["db"])
    assert len(rows) == 1
    row_id, kid, signer_kid, iss, jti, payload = rows[0]
    assert (row_id, kid, signer_kid, iss) == (first.json()["id"], "rx-a", "kibana-1", "kibana")
    assert jti == json.loads(payload)["jti"]


def test_a_jti_in_another_body_is_a_replay_even_after_a_restart(files, keys, sender) -> None:
    token = RequestEncryptor(keys.get_public_jwks(), sign_with=sender).signer.sign({"n": 1})
    public = JWKManager(keys.get_public_jwks())
    bodies = [public.encrypt_jwe("rx-a", token.encode(), cty="JWT") for _ in range(3)]
    assert len(set(bodies)) == 3  # one token, three different bodies
    with serve(files) as receiver, client(receiver.url) as http:
        assert http.post(PAYLOADS, content=bodies[0]).status_code == 202
        replayed = http.post(PAYLOADS, content=bodies[1])
        assert replayed.status_code == 409 and "replay" in replayed.json()["error"]
    with serve(files) as receiver, client(receiver.url) as http:  # the cache is in the database
        assert http.post(PAYLOADS, content=bodies[2]).status_code == 409
    assert len(signed_rows(files["db"])) == 1


def test_unsigned_bad_and_unknown_signatures_get_401(files, keys, sender) -> None:
    public = keys.get_public_jwks()
    unsigned = RequestEncryptor(public, format="jwe").encrypt("rx-a", {"n": 1})
    stranger = {"keys": [generate_signing_jwk("stranger", "ES256")]}
    forged = RequestEncryptor(public, sign_with=stranger).encrypt("rx-a", {"n": 1})
    other_key = {"keys": [{**generate_signing_jwk("kibana-1", "ES256")}]}  # the kid, not the key
    impostor = RequestEncryptor(public, sign_with=other_key).encrypt("rx-a", {"n": 1})
    made = time.time() - 7200  # two hours ago, valid for one
    old_token = Signer(sender, clock=lambda: made).sign({"n": 1})
    old = JWKManager(public).encrypt_jwe("rx-a", old_token.encode(), cty="JWT")
    with serve(files, require_signature=True) as receiver, client(receiver.url) as http:
        for body, status, word in [
            (unsigned, 401, "not signed"),
            (forged, 401, "does not hold"),
            (impostor, 401, "does not verify"),
            (old, 401, "expired"),
        ]:
            answer = http.post(PAYLOADS, content=body)
            assert (answer.status_code, word in answer.json()["error"]) == (status, True), (
                answer.text
            )
    assert signed_rows(files["db"]) == []
    with serve(files) as receiver, client(receiver.url) as http:  # signature not required
        assert http.post(PAYLOADS, content=unsigned).status_code == 202


def test_jsonl_sink_records_the_signer_and_refuses_replays(files, keys, sender) -> None:
    out = files["db"].with_suffix(".jsonl")
    token = RequestEncryptor(keys.get_public_jwks(), sign_with=sender).signer.sign({"n": 1})
    public = JWKManager(keys.get_public_jwks())
    bodies = [public.encrypt_jwe("rx-b", token.encode(), cty="JWT") for _ in range(2)]
    with serve(files, sink=f"jsonl:///{out}") as receiver, client(receiver.url) as http:
        assert http.post(PAYLOADS, content=bodies[0]).status_code == 202
        assert http.post(PAYLOADS, content=bodies[1]).status_code == 409
    (line,) = out.read_text().splitlines()
    assert json.loads(line)["signer"]["kid"] == "kibana-1"


def test_send_signs_and_serve_refuses_a_wrong_senders_set(files, keys, sender, tmp_path) -> None:
    from tests.cli.runner import fails, ok

    public, signing = tmp_path / "public.json", tmp_path / "sender.json"
    write_jwks(public, keys.get_public_jwks())
    write_jwks(signing, sender)
    with serve(files, require_signature=True) as receiver:
        answer = ok(
            "send", "--jwks", public, "--url", receiver.url, "--sign-with", signing, "-",
            stdin='{"n": 1}',
        )  # fmt: skip
        assert json.loads(answer.stdout)["format"] == "jwe"
        refused = fails("send", "--jwks", public, "--url", receiver.url, "-", stdin='{"n": 1}')
        assert "401" in refused or "not signed" in refused
    assert [row[2] for row in signed_rows(files["db"])] == ["kibana-1"]
    # serve checks the senders' set before it starts: an encryption set is not one
    assert "not a signing set" in fails(
        "serve", "--jwks", files["keys"], "--verify-with", files["keys"], "--port", "0"
    )


def test_the_senders_file_is_reloaded_when_it_changes(tmp_path, sender) -> None:
    from request_crypto.receiver._keys import SenderKeyFile

    path = tmp_path / "senders.json"
    write_jwks(path, public_key_set(sender))
    keys = SenderKeyFile(path, interval=0)
    assert keys.verification_key("kibana-1") is not None
    assert keys.verification_key("kibana-2") is None
    rotated = {"keys": [*sender["keys"], generate_signing_jwk("kibana-2", "EdDSA")]}
    write_jwks(path, public_key_set(rotated))
    assert keys.verification_key("kibana-2") is not None
    path.write_text("not json")  # a broken write keeps the old keys
    assert keys.verification_key("kibana-2") is not None


def test_serve_takes_a_dir_set_opens_signed_dir_bodies_and_publishes_no_secret(
    files, keys, sender, tmp_path
) -> None:
    from tests.cli.runner import fails, ok

    secrets = tmp_path / "shared.json"
    ok("keys", "init", secrets, "--kid", "shared-1", "--alg", "dir")
    secret = json.loads(secrets.read_text())["keys"][0]["k"]
    encryptor = RequestEncryptor(json.loads(secrets.read_text()), sign_with=sender)
    body = encryptor.encrypt("shared-1", {"n": 7})
    rsa_body = RequestEncryptor(keys.get_public_jwks(), sign_with=sender).encrypt("rx-a", {"n": 8})
    dir_files = {**files, "keys": secrets}
    with serve(dir_files, require_signature=True) as receiver, client(receiver.url) as http:
        stored = http.post(PAYLOADS, content=body)
        assert stored.status_code == 202, stored.text
        published = http.get(WELL_KNOWN)
        assert published.status_code == 200 and published.json() == {"keys": []}
        assert secret not in published.text
        assert http.post(PAYLOADS, content=rsa_body).status_code == 400  # no RSA key here
    ((_, kid, signer_kid, _, _, payload),) = signed_rows(files["db"])
    assert (kid, signer_kid, json.loads(payload)["n"]) == ("shared-1", "kibana-1", 7)
    with serve(files) as receiver, client(receiver.url) as http:  # an RSA receiver: never dir
        assert http.post(PAYLOADS, content=body).status_code == 400
    # serve's own checks accept the dir set and go on to the senders' set
    assert "not a signing set" in fails(
        "serve", "--jwks", secrets, "--verify-with", files["keys"], "--port", "0"
    )


def jsonl_sink(
    files: dict[str, Path], keys: JWKManager, kind: str
) -> tuple[Any, Callable[[], list[Any]]]:
    """A JSON-lines sink of `kind` beside the test's files, and what reads its records back."""
    if kind == "stdout":
        stream = io.BytesIO()
        return StdoutSink(stream), lambda: lines_of(stream.getvalue().decode())
    if kind == "jsonl":
        path = files["db"].with_suffix(".jsonl")
        return f"jsonl:///{path}", lambda: lines_of(path.read_text())
    public, directory = files["db"].with_name("archive_public.json"), files["db"].with_name("a")
    write_jwks(public, keys.get_public_jwks())
    # The archive's private set is the receiver's own set here.
    return f"jsonl:///{directory}/?seal={public}", lambda: lines_of(
        ok("open", "--jwks", files["keys"], directory).stdout
    )


def lines_of(text: str) -> list[Any]:
    return [json.loads(line) for line in text.splitlines()]


@pytest.mark.parametrize("kind", ["jsonl", "archive"])
def test_jsonl_sinks_store_a_signed_retry_once_and_refuse_a_replay_after_a_restart(
    files, keys, sender, kind
) -> None:
    """The jtis of the JSON-lines sinks are in a file beside them, with the first body's id."""
    sink, stored_records = jsonl_sink(files, keys, kind)
    token = RequestEncryptor(keys.get_public_jwks(), sign_with=sender).signer.sign({"n": 1})
    public = JWKManager(keys.get_public_jwks())
    bodies = [public.encrypt_jwe("rx-a", token.encode(), cty="JWT") for _ in range(2)]
    unsigned = RequestEncryptor(keys.get_public_jwks(), format="jwe").encrypt("rx-a", {"u": 1})
    with serve(files, sink=sink) as receiver, client(receiver.url) as http:
        first = http.post(PAYLOADS, content=bodies[0])
        assert first.status_code == 202, first.text
        again = http.post(PAYLOADS, content=bodies[0])  # the very same body: a retry
        assert (again.status_code, again.json()["id"]) == (202, first.json()["id"])
    with serve(files, sink=sink) as receiver, client(receiver.url) as http:
        replayed = http.post(PAYLOADS, content=bodies[1])
        assert replayed.status_code == 409 and "replay" in replayed.json()["error"]
        again = http.post(PAYLOADS, content=bodies[0])  # a retry after the restart
        assert (again.status_code, again.json()["id"]) == (202, first.json()["id"])
        # An unsigned body has no jti to look up: JSON lines keep it at least once (stored
        # again, a new id), as docs/receiver.md says; the SQLite sink would store it once.
        ids = [http.post(PAYLOADS, content=unsigned).json()["id"] for _ in range(2)]
        assert len(set(ids)) == 2
    records = stored_records()
    assert [r["id"] for r in records if "signer" in r] == [first.json()["id"]]
    assert sorted(r["id"] for r in records if "signer" not in r) == sorted(ids)


@pytest.mark.parametrize("kind", ["jsonl", "archive", "stdout"])
def test_jsonl_sinks_store_concurrent_copies_of_a_signed_body_once(
    files, keys, sender, kind
) -> None:
    """Copies that arrive together (one batch, or the next while the first is written)."""
    sink, stored_records = jsonl_sink(files, keys, kind)
    body = RequestEncryptor(keys.get_public_jwks(), sign_with=sender).encrypt("rx-a", {"n": 1})
    with serve(files, sink=sink) as receiver:

        def post(_: int) -> httpx.Response:
            with client(receiver.url) as http:  # a connection each: they arrive together
                return http.post(PAYLOADS, content=body)

        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(pool.map(post, range(16)))
    assert {a.status_code for a in answers} == {202}, [a.text for a in answers]
    (first_id,) = {a.json()["id"] for a in answers}
    assert [r["id"] for r in stored_records()] == [first_id]


@pytest.mark.parametrize("kind", ["jsonl", "stdout"])
def test_a_retry_in_the_same_batch_is_stored_once_and_a_failed_batch_stores_none(
    tmp_path, monkeypatch, kind
) -> None:
    """The order the writer sees: a copy after the first in one batch, then after a failure."""
    stream = io.BytesIO()
    sink = JSONLSink(tmp_path / "p.jsonl") if kind == "jsonl" else StdoutSink(stream)
    one = record({"n": 1}, body=b"one", jti="jti-1")
    copy = dataclasses.replace(one, id="the-copy")  # the same body, received again
    assert sink.write_batch([one, copy]) == [one.id, one.id]
    assert sink.write_batch([dataclasses.replace(one, id="later")]) == [one.id]
    two = record({"n": 2}, body=b"two", jti="jti-2")

    def full(*_: object) -> None:
        raise OSError(28, "No space left on device")

    if kind == "jsonl":
        monkeypatch.setattr("os.fsync", full)
    else:
        monkeypatch.setattr(stream, "write", full)
    with pytest.raises(OSError, match="No space"):
        sink.write_batch([two])
    monkeypatch.undo()
    # The failed batch held the first copy: its retry is stored now, under its own id.
    retry = dataclasses.replace(two, id="the-retry")
    assert sink.write_batch([retry]) == [retry.id]
    sink.close()
    text = (tmp_path / "p.jsonl").read_text() if kind == "jsonl" else stream.getvalue().decode()
    assert [json.loads(line)["id"] for line in text.splitlines()] == [one.id, retry.id]


def test_two_jsonl_sinks_share_the_replays_file_and_a_failed_batch_claims_nothing(
    tmp_path, monkeypatch
) -> None:
    """Two sinks on one file (two workers): a jti one stored is a replay at the other."""
    from request_crypto.receiver.replay import replayed_id

    path = tmp_path / "p.jsonl"
    first, second = JSONLSink(path), JSONLSink(path)
    stored = record({"n": 1}, body=b"one", jti="jti-1")
    assert first.write_batch([stored]) == [stored.id]
    (marker,) = second.write_batch([record({"n": 1}, body=b"two", jti="jti-1")])
    assert replayed_id(marker) == stored.id
    assert (tmp_path / "p.jsonl.replays.db").stat().st_mode & 0o777 == 0o600

    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.fsync", full)
    with pytest.raises(OSError, match="No space"):
        second.write_batch([record({"n": 2}, body=b"three", jti="jti-2")])
    monkeypatch.undo()
    # The failed batch's jti was rolled back: another body with it is not a replay.
    other = record({"n": 2}, body=b"four", jti="jti-2")
    assert first.write_batch([other]) == [other.id]
    first.close()
    second.close()
    assert [json.loads(line)["payload"]["n"] for line in path.read_text().splitlines()] == [1, 2]


@pytest.mark.slow
def test_serve_with_two_workers_stores_a_signed_body_sent_to_both_once(
    files, keys, sender, tmp_path
) -> None:
    """``serve --workers 2`` on one JSON-lines file: copies reach both workers, one is stored."""
    out = tmp_path / "p.jsonl"
    command = [
        *console_script(),
        *["serve", "--jwks", str(files["keys"]), "--port", "0", "--workers", "2"],
        *["--sink", f"jsonl:///{out}", "--verify-with", str(files["senders"])],
    ]
    encryptor = RequestEncryptor(keys.get_public_jwks(), sign_with=sender)
    bodies = [encryptor.encrypt("rx-a", {"i": i}) for i in range(4)]
    server = Server(command, tmp_path)
    try:
        base = server.wait_listening()
        answers = post_each(f"{base}{PAYLOADS}", [b for b in bodies for _ in range(8)])
    finally:
        code = server.stop()
    assert code == 0, "".join(server.stderr)
    assert {a.status_code for a in answers} == {202}, [a.text for a in answers]
    ids = [{a.json()["id"] for a in answers[i * 8 : i * 8 + 8]} for i in range(4)]
    assert [len(one) for one in ids] == [1] * 4  # every copy answered with the first id
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["id"] for r in lines) == sorted(one.pop() for one in ids)
    assert sorted(r["payload"]["i"] for r in lines) == [0, 1, 2, 3]
