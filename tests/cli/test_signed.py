"""Signed bodies on the command line: keys init --alg, encrypt --sign-with, decrypt/inspect
--verify-with, and the one-line refusals."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest

from request_crypto._b64 import b64url_decode
from tests.cli.runner import LIST_FIELDS, fails, load, ok

SIGNING = ["ES256", "ES384", "EdDSA", "RS256", "PS256"]


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    directory = tmp_path_factory.mktemp("signed-sets")
    sets = SimpleNamespace(directory=directory)
    sets.receiver, sets.receiver_public = directory / "rx.json", directory / "rx-public.json"
    ok("keys", "init", sets.receiver, "--kid", "rx")
    ok("keys", "public", sets.receiver, "-o", sets.receiver_public)
    for alg in [*SIGNING, "HS256", "dir"]:
        path = directory / f"{alg}.json"
        ok("keys", "init", path, "--kid", f"k-{alg}", "--alg", alg)
        setattr(sets, alg, path)
        if alg in SIGNING:
            ok("keys", "public", path, "-o", directory / f"{alg}-public.json")
    return sets


def header(body: str) -> dict:
    return json.loads(b64url_decode(body.split(".")[0], "header"))


@pytest.mark.parametrize("alg", [*SIGNING, "HS256"])
def test_sign_encrypt_then_verify_decrypt(signed, alg) -> None:
    verify = signed.HS256 if alg == "HS256" else signed.directory / f"{alg}-public.json"
    body = ok(
        "encrypt",
        "--jwks",
        signed.receiver_public,
        "--sign-with",
        getattr(signed, alg),
        "--issuer",
        "kibana",
        "--audience",
        "telemetry",
        "--expires-in",
        "120",
        stdin='{"count": 3}',
    ).stdout.strip()
    assert header(body)["cty"] == "JWT"  # --sign-with selected jwe
    claims = json.loads(
        ok(
            "decrypt",
            "--jwks",
            signed.receiver,
            "--verify-with",
            verify,
            "--issuer",
            "kibana",
            "--audience",
            "telemetry",
            "--leeway",
            "5",
            stdin=body,
        ).stdout
    )
    assert claims["count"] == 3 and claims["exp"] - claims["iat"] == 120
    assert claims["iss"] == "kibana" and len(claims["jti"]) == 22
    shown = json.loads(ok("inspect", "--jwks", signed.receiver, stdin=body).stdout)
    assert shown["signer"]["kid"] == f"k-{alg}" and shown["signer"]["alg"] == alg
    assert shown["signer"]["verified"] is False and shown["signer"]["claims"]["aud"] == "telemetry"
    checked = json.loads(
        ok("inspect", "--jwks", signed.receiver, "--verify-with", verify, stdin=body).stdout
    )
    assert checked["signer"]["verified"] is True


def test_the_dir_form(signed) -> None:
    body = ok("encrypt", "--jwks", signed.dir, "--sign-with", signed.ES256, stdin="{}").stdout
    assert header(body.strip())["alg"] == "dir"
    verify = signed.directory / "ES256-public.json"
    ok("decrypt", "--jwks", signed.dir, "--verify-with", verify, stdin=body)
    assert "dir" in fails("decrypt", "--jwks", signed.receiver, "--verify-with", verify, stdin=body)


def test_refusals_are_one_line(signed) -> None:
    verify = signed.directory / "ES256-public.json"
    error = fails(
        "encrypt",
        "--jwks",
        signed.receiver_public,
        "--format",
        "elastic",
        "--sign-with",
        signed.ES256,
        stdin="{}",
    )
    assert "--sign-with needs the jwe format" in error
    unsigned = ok("encrypt", "--jwks", signed.receiver_public, stdin="{}").stdout
    error = fails("decrypt", "--jwks", signed.receiver, "--verify-with", verify, stdin=unsigned)
    assert "not signed" in error
    body = ok(
        "encrypt", "--jwks", signed.receiver_public, "--sign-with", signed.EdDSA, stdin="{}"
    ).stdout
    assert "does not hold" in fails(
        "decrypt", "--jwks", signed.receiver, "--verify-with", verify, stdin=body
    )
    assert "verify_with" in fails("decrypt", "--jwks", signed.receiver, stdin=body)
    assert "issuer" in fails(
        "decrypt",
        "--jwks",
        signed.receiver,
        "--verify-with",
        signed.directory / "EdDSA-public.json",
        "--issuer",
        "someone",
        stdin=body,
    )
    assert "not a signing set" in fails(
        "encrypt", "--jwks", signed.receiver_public, "--sign-with", signed.receiver, stdin="{}"
    )
    assert "JSON object" in fails(
        "encrypt", "--jwks", signed.receiver_public, "--sign-with", signed.ES256, stdin="[1]"
    )


@pytest.mark.parametrize("alg", ["HS256", "dir"])
def test_secrets_have_no_public_half_and_stay_private(signed, alg) -> None:
    path = getattr(signed, alg)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "no public half" in fails("keys", "public", path)


def test_keys_list_and_remove_on_signing_sets(signed, tmp_path: Path) -> None:
    path = tmp_path / "sender.json"
    ok("keys", "init", path, "--kid", "a", "--alg", "ES256")
    ok("keys", "add", path, "--kid", "b", "--alg", "ES256")
    rows = json.loads(ok("keys", "list", path, "--json").stdout)
    assert [row["kid"] for row in rows] == ["a", "b"] and list(rows[0]) == LIST_FIELDS
    assert rows[1]["newest"] and rows[0]["size"] == "P-256" and rows[0]["private"]
    public = json.loads(ok("keys", "public", path).stdout)
    assert set(public["keys"][0]) == {"kty", "kid", "use", "alg", "crv", "x", "y"}
    ok("keys", "remove", path, "--kid", "a", "--yes")
    assert [jwk["kid"] for jwk in load(path)["keys"]] == ["b"]
    assert "kind" in fails("keys", "add", path, "--kid", "c", "--alg", "RSA-OAEP")
