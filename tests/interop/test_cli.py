"""The CLI and the JavaScript @elastic/request-crypto share key sets both ways.

Key sets the CLI makes load in the JavaScript library (it encrypts to them and decrypts with
them), and key sets the JavaScript library makes work with every CLI command.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from request_crypto.cli import app

pytestmark = pytest.mark.interop

PUBLIC_MEMBERS = ["kty", "kid", "use", "alg", "e", "n"]
PAYLOADS = [{"cluster_uuid": "abc", "n": 1}, ["ünïcode", 2.5, None], "text", 7]
JS_KIDS = ["kibana-2026-10-01", "kibana-2026-11-01"]
Js = Callable[..., Any]

runner = CliRunner()


def ok(*args: object, stdin: str | None = None) -> str:
    result = runner.invoke(app, [str(arg) for arg in args], input=stdin)
    assert result.exit_code == 0, (result.stderr, result.exception)
    return result.stdout


def values(answers: list[dict[str, Any]]) -> list[Any]:
    assert all(answer["ok"] for answer in answers), answers
    return [answer["value"] for answer in answers]


def write_private(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(json.dumps(document))
    os.chmod(path, 0o600)
    return path


@pytest.fixture(scope="module")
def js_sets(js: Js) -> dict[str, Any]:
    sets: dict[str, Any] = js("generate", kids=JS_KIDS)
    return sets


@pytest.fixture(scope="module")
def cli_sets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("cli-made")
    private, public = directory / "private.json", directory / "public.json"
    ok("keys", "init", private, "--kid", "telemetry-2026-10-01")
    ok("keys", "rotate", private)
    ok("keys", "public", private, "-o", public)
    return private, public


def test_javascript_encrypts_to_a_public_set_the_cli_made(
    js: Js, cli_sets: tuple[Path, Path]
) -> None:
    private, public = cli_sets
    kids = [jwk["kid"] for jwk in json.loads(public.read_text())["keys"]]
    items = [[kid, payload] for kid in kids for payload in PAYLOADS]
    bodies = values(js("encrypt", jwks=json.loads(public.read_text()), items=items))
    for (kid, payload), body in zip(items, bodies, strict=True):
        assert json.loads(ok("decrypt", "--jwks", private, stdin=body)) == payload
        assert json.loads(ok("inspect", "--jwks", private, stdin=body))["key"]["kid"] == kid


def test_javascript_decrypts_with_a_private_set_the_cli_made(
    js: Js, cli_sets: tuple[Path, Path]
) -> None:
    private, public = cli_sets
    kids = [jwk["kid"] for jwk in json.loads(public.read_text())["keys"]]
    cases = [(kid, payload) for kid in kids for payload in PAYLOADS]
    bodies = [
        ok("encrypt", "--jwks", public, "--kid", kid, stdin=json.dumps(payload)).strip()
        for kid, payload in cases
    ]
    answers = values(js("decrypt", jwks=json.loads(private.read_text()), bodies=bodies))
    assert [answer["payload"] for answer in answers] == [payload for _, payload in cases]
    assert [answer["metadata"]["key"]["kid"] for answer in answers] == [kid for kid, _ in cases]


def test_every_cli_command_works_on_a_set_the_javascript_library_made(
    js: Js, js_sets: dict[str, Any], tmp_path: Path
) -> None:
    private = write_private(tmp_path / "js_private.json", js_sets["private"])
    public = tmp_path / "js_public.json"

    rows = json.loads(ok("keys", "list", private, "--json"))
    assert [(row["kid"], row["private"], row["size"]) for row in rows] == [
        (kid, True, 2048) for kid in JS_KIDS
    ]
    assert all(kid in ok("keys", "list", private) for kid in JS_KIDS)

    # `keys public` gives exactly what the JavaScript library publishes.
    assert json.loads(ok("keys", "public", private)) == js_sets["public"]
    ok("keys", "public", private, "-o", public)
    assert json.loads(public.read_text()) == js_sets["public"]
    assert stat.S_IMODE(public.stat().st_mode) == 0o644

    # Bodies both ways, with the sets as the JavaScript library wrote them.
    body = ok("encrypt", "--jwks", public, stdin=json.dumps(PAYLOADS[0])).strip()
    (answer,) = values(js("decrypt", jwks=js_sets["private"], bodies=[body]))
    assert answer["payload"] == PAYLOADS[0]
    assert answer["metadata"]["key"]["kid"] == JS_KIDS[-1]  # the newest, by default
    (js_body,) = values(js("encrypt", jwks=js_sets["public"], items=[[JS_KIDS[0], PAYLOADS[1]]]))
    assert json.loads(ok("decrypt", "--jwks", private, stdin=js_body)) == PAYLOADS[1]
    shown = json.loads(ok("inspect", "--jwks", private, stdin=js_body))
    assert shown["key"]["kid"] == JS_KIDS[0]
    assert shown["format"] == "elastic"

    # Changing the set keeps the JavaScript keys as they were, and stays loadable in JS.
    rotated = ok("keys", "rotate", private).strip()
    assert rotated.startswith("kibana-")
    ok("keys", "add", private, "--kid", "added")
    ok("keys", "remove", private, "--kid", JS_KIDS[0], "--yes")
    document = json.loads(private.read_text())
    assert document["keys"][0] == js_sets["private"]["keys"][1]
    assert [jwk["kid"] for jwk in document["keys"]] == [JS_KIDS[1], rotated, "added"]
    assert stat.S_IMODE(private.stat().st_mode) == 0o600

    public_now = json.loads(ok("keys", "public", private))
    items = [[kid, {"kid": kid}] for kid in (JS_KIDS[1], rotated, "added")]
    bodies = [ok("encrypt", "--jwks", private, "--kid", k, stdin=json.dumps(p)) for k, p in items]
    answers = values(js("decrypt", jwks=document, bodies=[b.strip() for b in bodies]))
    assert [answer["payload"] for answer in answers] == [payload for _, payload in items]
    js_bodies = values(js("encrypt", jwks=public_now, items=items))
    assert [json.loads(ok("decrypt", "--jwks", private, stdin=b)) for b in js_bodies] == [
        payload for _, payload in items
    ]
