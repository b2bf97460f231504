"""The receiver end to end: a real Uvicorn server on loopback, real httpx clients.

Every test starts its own server (ReceiverThread: Uvicorn in a background thread on a free
127.0.0.1 port) and talks HTTP to it; stored payloads are read back from the sink itself.
Here: sender to SQLite, the well-known set, health and HTTP errors, hostile bodies, the log.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from request_crypto import JWKManager, RequestEncryptor
from request_crypto._b64 import b64url_decode, b64url_encode
from request_crypto.keys.jwks import PRIVATE_MEMBERS, PUBLIC_MEMBERS
from request_crypto.receiver import (
    create_app,
)
from request_crypto.receiver.testing import ReceiverThread
from tests.receiver.helpers import (
    ANSWER_FIELDS,
    LOGGER,
    PAYLOADS,
    WELL_KNOWN,
    client,
    flip_part,
    stored_rows,
    swap_header,
)

# ---------------------------------------------------------------------------------------------
# the full path: sender -> receiver -> SQLite


@pytest.mark.parametrize("body_format", ["elastic", "jwe"])
def test_sender_to_receiver_to_sqlite(
    sqlite_receiver: tuple[ReceiverThread, Path], keys: JWKManager, body_format: str
) -> None:
    receiver, db = sqlite_receiver
    encryptor = RequestEncryptor(keys.get_public_jwks(), format=body_format)
    sent = {}
    with client(receiver.url) as http:
        for kid in ("rx-a", "rx-b"):
            payload = {"cluster": str(uuid.uuid4()), "kid": kid, "ünïcode": "✓", "n": [1, 2.5]}
            response = http.post(PAYLOADS, content=encryptor.encrypt(kid, payload))
            assert response.status_code == 202, response.text
            answer = response.json()
            assert set(answer) == ANSWER_FIELDS
            assert (answer["kid"], answer["format"]) == (kid, body_format)
            assert answer["received_at"].endswith("Z")
            sent[answer["id"]] = (answer, payload)

    rows = stored_rows(db)
    assert set(rows) == set(sent)
    for row_id, (answer, payload) in sent.items():
        row = rows[row_id]
        assert row["payload"] == payload
        assert (row["kid"], row["format"], row["received_at"]) == (
            answer["kid"],
            body_format,
            answer["received_at"],
        )
    with contextlib.closing(sqlite3.connect(db)) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def post_javascript_bodies(
    tmp_path: Path, private_jwks: dict[str, Any], cases: list[tuple[str, Any, str]], foreign: str
) -> None:
    """POST (kid, payload, body) cases made by the npm package; all stored, `foreign` 422."""
    db = tmp_path / "payloads.db"
    with (
        ReceiverThread(create_app(private_jwks, sink=f"sqlite:///{db}")) as receiver,
        client(receiver.url) as http,
    ):
        answers = []
        for kid, payload, body in cases:
            response = http.post(PAYLOADS, content=body)
            assert response.status_code == 202, response.text
            assert response.json()["kid"] == kid
            assert response.json()["format"] == "elastic"
            answers.append((response.json()["id"], payload))
        assert http.post(PAYLOADS, content=foreign).status_code == 422
    rows = stored_rows(db)
    assert len(rows) == len(cases)
    for row_id, payload in answers:
        assert rows[row_id]["payload"] == payload


def test_committed_javascript_bodies_are_accepted(
    tmp_path: Path, private_jwks: dict[str, Any], js_bodies: dict[str, Any]
) -> None:
    """The vectors @elastic/request-crypto 2.0.3 made (fixtures/bodies.json); no node needed."""
    cases = [(v["kid"], v["payload"], v["body"]) for v in js_bodies["bodies"]]
    assert cases
    post_javascript_bodies(tmp_path, private_jwks, cases, js_bodies["foreign_body"])


@pytest.mark.interop
def test_bodies_the_javascript_library_makes_now_are_accepted(
    tmp_path: Path,
    private_jwks: dict[str, Any],
    public_jwks: dict[str, Any],
    js_bodies: dict[str, Any],
    js: Any,
) -> None:
    payload = {"from": "node", "marker": str(uuid.uuid4()), "nested": {"a": [True, None, 1.5]}}
    kids = [key["kid"] for key in public_jwks["keys"]]
    made = js("encrypt", jwks=public_jwks, items=[[kid, payload] for kid in kids])
    assert all(item["ok"] for item in made), made
    cases = [(kid, payload, item["value"]) for kid, item in zip(kids, made, strict=True)]
    post_javascript_bodies(tmp_path, private_jwks, cases, js_bodies["foreign_body"])


# ---------------------------------------------------------------------------------------------
# well-known, health, HTTP errors


def test_well_known_publishes_only_the_public_set(
    sqlite_receiver: tuple[ReceiverThread, Path], keys: JWKManager
) -> None:
    receiver, _ = sqlite_receiver
    with client(receiver.url) as http:
        response = http.get(WELL_KNOWN)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/json")
        published = response.json()
        assert published == keys.get_public_jwks()
        for jwk in published["keys"]:
            assert set(jwk) <= set(PUBLIC_MEMBERS)
            assert not set(jwk) & set(PRIVATE_MEMBERS)
        for member in PRIVATE_MEMBERS:
            assert f'"{member}"' not in response.text
        private_d = keys.get_private_jwk("rx-a")["d"]  # type: ignore[index]
        assert private_d not in response.text

        assert "max-age=" in response.headers["cache-control"]
        etag = response.headers["etag"]
        again = http.get(WELL_KNOWN, headers={"If-None-Match": etag})
        assert again.status_code == 304
        assert again.content == b""
        assert again.headers["etag"] == etag
        assert http.get(WELL_KNOWN, headers={"If-None-Match": '"other"'}).status_code == 200

        health = http.get("/healthz")
        assert health.status_code == 200
        assert health.json() == {"status": "ok", "keys": 2}


def test_http_errors_are_json(sqlite_receiver: tuple[ReceiverThread, Path]) -> None:
    receiver, _ = sqlite_receiver
    with client(receiver.url) as http:
        missing = http.get("/nowhere")
        assert missing.status_code == 404
        assert isinstance(missing.json()["error"], str)
        wrong_method = http.get(PAYLOADS)
        assert wrong_method.status_code == 405
        assert wrong_method.headers["allow"] == "POST"
        assert isinstance(wrong_method.json()["error"], str)
        assert http.post(WELL_KNOWN, content=b"x").status_code == 405
        assert http.delete("/healthz").status_code == 405


# ---------------------------------------------------------------------------------------------
# hostile bodies


def hostile_bodies(keys: JWKManager, marker: str) -> list[tuple[str, bytes | str, int]]:
    """(name, body, expected status): one or more per rule of the hardening issue."""
    elastic = RequestEncryptor(keys.get_public_jwks())
    jwe = RequestEncryptor(keys.get_public_jwks(), format="jwe")
    payload = {"secret": marker}
    good_jwe = jwe.encrypt("rx-a", payload)
    good_elastic = elastic.encrypt("rx-a", payload)
    elastic_parts = json.loads(b64url_decode(good_elastic, "body"))
    header = json.loads(b64url_decode(good_jwe.split(".")[0], "header"))
    other = JWKManager()
    other.add_key("stranger")

    def elastic_body(members: dict[str, Any]) -> str:
        return b64url_encode(json.dumps(members).encode())

    tampered_payload = bytearray(base64.b64decode(elastic_parts["encryptedPayload"]))
    tampered_payload[-1] ^= 0x01
    return [
        ("empty", b"", 400),
        ("whitespace", b" \r\n\t ", 400),
        ("not base64", b"this is not a body!", 400),
        ("not utf-8", b"\xff\xfe\xfd\x00\x80", 400),
        ("two parts", b"abc.def", 400),
        ("six parts", good_jwe + ".x", 400),
        ("elastic JSON array", elastic_body([1, 2]), 400),  # type: ignore[arg-type]
        ("elastic member missing", elastic_body({"encryptedAESKey": "x"}), 400),
        (
            "elastic member wrong type",
            elastic_body({"encryptedAESKey": 1, "encryptedPayload": "x"}),
            400,
        ),
        (
            "elastic payload too short",
            elastic_body({**elastic_parts, "encryptedPayload": "AA=="}),
            400,
        ),
        (
            "elastic payload tampered",
            elastic_body(
                {
                    **elastic_parts,
                    "encryptedPayload": base64.b64encode(tampered_payload).decode(),
                }
            ),
            400,
        ),
        (
            "elastic wrapped key tampered",
            elastic_body(
                {**elastic_parts, "encryptedAESKey": flip_part(elastic_parts["encryptedAESKey"], 3)}
            ),
            400,
        ),
        (
            "elastic wrapped key of 33 bytes",
            elastic_body({**elastic_parts, "encryptedAESKey": keys.encrypt("rx-a", b"k" * 33)}),
            400,
        ),
        (
            "elastic wrapped key oversized",
            elastic_body({**elastic_parts, "encryptedAESKey": "A" * 20_000}),
            413,
        ),
        ("alg none", swap_header(good_jwe, {**header, "alg": "none"}), 400),
        ("alg RSA1_5", swap_header(good_jwe, {**header, "alg": "RSA1_5"}), 400),
        ("alg dir", swap_header(good_jwe, {**header, "alg": "dir"}), 400),
        (
            "alg PBES2",
            swap_header(good_jwe, {**header, "alg": "PBES2-HS256+A128KW", "p2c": 10**9}),
            400,
        ),
        ("enc unknown", swap_header(good_jwe, {**header, "enc": "A512XYZ"}), 400),
        ("crit header", swap_header(good_jwe, {**header, "crit": ["exp"], "exp": 1}), 400),
        ("alg differs from key", swap_header(good_jwe, {**header, "alg": "RSA-OAEP-256"}), 400),
        ("zip not DEF", swap_header(good_jwe, {**header, "zip": "GZIP"}), 400),
        # No kid: the one RSA-OAEP key of the set is tried, and the altered header (AAD) fails.
        ("no kid", swap_header(good_jwe, {k: v for k, v in header.items() if k != "kid"}), 400),
        ("unknown kid", swap_header(good_jwe, {**header, "kid": "nobody"}), 422),
        ("other receiver's key", other.encrypt_jwe("stranger", b'{"a":1}'), 422),
        ("header replaced (AAD)", swap_header(good_jwe, {**header, "x": 1}), 400),
        ("encrypted key tampered", flip_part(good_jwe, 1), 400),
        ("ciphertext tampered", flip_part(good_jwe, 3), 400),
        ("tag tampered", flip_part(good_jwe, 4), 400),
        # a jwe body has no compression: refused unread (issue 11)
        ("zip bomb", keys.encrypt("rx-a", b"\0" * (8 * 1024 * 1024)), 400),
        ("plaintext not JSON", keys.encrypt_jwe("rx-a", b"not json " + marker.encode()), 400),
        (
            "plaintext nested too deep",
            keys.encrypt_jwe("rx-a", b"[" * 200_000 + b"]" * 200_000),
            400,
        ),
        ("number out of range", keys.encrypt_jwe("rx-a", b'{"x":1e999}'), 400),
        ("NaN", keys.encrypt_jwe("rx-a", b'{"x":NaN}'), 400),
    ]


def test_hostile_bodies_get_4xx_and_the_server_keeps_serving(
    tmp_path: Path, keys: JWKManager, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    marker = f"top-secret-{uuid.uuid4()}"
    private_d = keys.get_private_jwk("rx-a")["d"]  # type: ignore[index]
    db = tmp_path / "payloads.db"
    app = create_app(keys.get_private_jwks(), sink=f"sqlite:///{db}", max_body=1024 * 1024)
    cases = hostile_bodies(keys, marker)
    with ReceiverThread(app) as receiver, client(receiver.url) as http:
        for name, body, expected in cases:
            response = http.post(PAYLOADS, content=body)
            assert response.status_code == expected, (name, response.text)
            error = response.json()["error"]
            assert isinstance(error, str) and error, name
            assert marker not in response.text, name
            assert private_d[:16] not in response.text, name
        # still serving, and still decrypting
        good = RequestEncryptor(keys.get_public_jwks()).encrypt("rx-b", {"secret": marker})
        accepted = http.post(PAYLOADS, content=good)
        assert accepted.status_code == 202
        assert http.get("/healthz").status_code == 200

    assert list(stored_rows(db)) == [accepted.json()["id"]]
    lines = [r for r in caplog.records if r.name == LOGGER and "path=/v1/payloads" in r.message]
    assert len(lines) == len(cases) + 1  # one line per request
    for record in caplog.records:
        text = record.getMessage()
        assert marker not in text
        assert private_d[:16] not in text
    assert all("status=" in r.message and "duration_ms=" in r.message for r in lines)
    assert f"status=202 kid=rx-b format=elastic size={len(good)}" in lines[-1].message


def test_request_log_line_fields(
    sqlite_receiver: tuple[ReceiverThread, Path], keys: JWKManager, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    receiver, _ = sqlite_receiver
    body = RequestEncryptor(keys.get_public_jwks(), format="jwe").encrypt("rx-a", {"v": 1})
    unknown = swap_header(body, {"alg": "RSA-OAEP", "enc": "A256GCM", "kid": 'evil"\nkid=x'})
    with client(receiver.url) as http:
        answer = http.post(PAYLOADS, content=body).json()
        assert http.post(PAYLOADS, content=unknown).status_code == 422

    def logged() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == LOGGER and "path=/v1/payloads" in r.message]

    # The line is written once the response is sent, from the server's thread: wait for it.
    deadline = time.monotonic() + 10
    while len(logged()) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    records = logged()
    assert len(records) == 2
    fields = records[0].request_crypto  # type: ignore[attr-defined]
    assert fields["status"] == 202
    assert fields["kid"] == "rx-a"
    assert fields["format"] == "jwe"
    assert fields["size"] == len(body)
    assert fields["id"] == answer["id"]
    assert fields["duration_ms"] >= 0
    # an attacker's kid is quoted and escaped: one line, no forged fields
    assert "\n" not in records[1].getMessage()
    assert 'kid="evil\\"\\nkid=x"' in records[1].getMessage()
    assert "error=unknown-kid" in records[1].getMessage()
