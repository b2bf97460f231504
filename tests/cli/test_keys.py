"""`keys init|add|rotate|list|public|remove` through CliRunner: every flag, every error."""

from __future__ import annotations

import json
import os
import shutil
from datetime import date
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jwcrypto.jwk import JWK

from request_crypto.cli import kid_prefix, next_kid
from request_crypto.kids import DEFAULT_KID_PREFIX
from tests.cli.runner import (
    LIST_FIELDS,
    NEW,
    OLD,
    PRIVATE_MEMBERS,
    PUBLIC_MEMBERS,
    fails,
    inspect_kid,
    invoke,
    kids,
    load,
    mode,
    ok,
    usage_error,
)

# ---------------------------------------------------------------------------------------------
# keys init


def test_init_creates_a_private_set_holding_one_key_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    result = ok("keys", "init", path, "--kid", "first")
    (jwk,) = load(path)["keys"]
    assert jwk["kid"] == "first"
    assert set(jwk) == {*PUBLIC_MEMBERS, *PRIVATE_MEMBERS}
    assert (jwk["kty"], jwk["use"], jwk["alg"]) == ("RSA", "enc", "RSA-OAEP")
    assert JWK(**jwk).get_op_key("wrapKey").key_size == 2048
    assert mode(path) == 0o600
    assert result.stdout == ""  # nothing, and certainly no private parameter, on stdout


def test_init_honours_size_and_alg(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    ok("keys", "init", path, "--kid", "big", "--size", "3072", "--alg", "RSA-OAEP-256")
    (jwk,) = load(path)["keys"]
    assert jwk["alg"] == "RSA-OAEP-256"
    assert JWK(**jwk).get_op_key("wrapKey").key_size == 3072


def test_init_refuses_an_existing_file_and_leaves_it_untouched(private_set: Path) -> None:
    before = private_set.read_bytes()
    message = fails("keys", "init", private_set, "--kid", "again")
    assert "already exists" in message
    assert "--force" in message
    assert private_set.read_bytes() == before


def test_init_force_replaces_the_set(private_set: Path) -> None:
    ok("keys", "init", private_set, "--kid", "fresh", "--force")
    assert kids(private_set) == ["fresh"]
    assert mode(private_set) == 0o600


@pytest.mark.parametrize(
    "extra",
    [["--size", "1024"], ["--alg", "RSA1_5"], ["--size", "big"]],
    ids=["small-size", "weak-alg", "size-not-a-number"],
)
def test_init_usage_errors_exit_2_and_create_nothing(tmp_path: Path, extra: list[str]) -> None:
    path = tmp_path / "keys.json"
    usage_error("keys", "init", path, "--kid", "a", *extra)
    assert not path.exists()


def test_init_without_kid_is_a_usage_error(tmp_path: Path) -> None:
    usage_error("keys", "init", tmp_path / "keys.json")
    assert not (tmp_path / "keys.json").exists()


@pytest.mark.parametrize("kid", ["", "bad\nkid"], ids=["empty", "control-character"])
def test_init_refuses_an_unusable_kid(tmp_path: Path, kid: str) -> None:
    assert "kid" in fails("keys", "init", tmp_path / "keys.json", "--kid", kid)
    assert not (tmp_path / "keys.json").exists()


def test_init_in_a_missing_directory_says_so(tmp_path: Path) -> None:
    message = fails("keys", "init", tmp_path / "nowhere" / "keys.json", "--kid", "a")
    assert "does not exist" in message


# ---------------------------------------------------------------------------------------------
# keys add


def test_add_appends_the_newest_key_and_keeps_the_others_as_they_were(private_set: Path) -> None:
    before = load(private_set)["keys"]
    ok("keys", "add", private_set, "--kid", "third", "--alg", "RSA-OAEP-256")
    after = load(private_set)["keys"]
    assert after[:-1] == before
    assert after[-1]["kid"] == "third"
    assert after[-1]["alg"] == "RSA-OAEP-256"
    assert mode(private_set) == 0o600
    newest = [row["kid"] for row in list_json(private_set) if row["newest"]]
    assert newest == ["third"]


def test_add_refuses_a_kid_already_present(private_set: Path) -> None:
    before = private_set.read_bytes()
    assert OLD in fails("keys", "add", private_set, "--kid", OLD)
    assert private_set.read_bytes() == before


def test_add_to_a_missing_file_points_to_init(tmp_path: Path) -> None:
    message = fails("keys", "add", tmp_path / "missing.json", "--kid", "a")
    assert "keys init" in message
    assert not (tmp_path / "missing.json").exists()


def test_add_refuses_a_public_set(public_set: Path) -> None:
    before = public_set.read_bytes()
    assert "public set" in fails("keys", "add", public_set, "--kid", "x")
    assert public_set.read_bytes() == before


def test_add_to_an_empty_set(tmp_path: Path) -> None:
    path = tmp_path / "empty.json"
    path.write_text('{"keys": []}')
    ok("keys", "add", path, "--kid", "only")
    assert kids(path) == ["only"]
    assert mode(path) == 0o600


# ---------------------------------------------------------------------------------------------
# keys rotate


def test_rotate_prints_a_dated_kid_from_the_common_prefix(
    private_set: Path, fixed_today: date
) -> None:
    first = ok("keys", "rotate", private_set).stdout.strip()
    second = ok("keys", "rotate", private_set).stdout.strip()
    assert first == f"telemetry-{fixed_today.isoformat()}"
    assert second == f"{first}-2"
    assert kids(private_set) == [OLD, NEW, first, second]  # older keys stay, newest last
    assert mode(private_set) == 0o600


def test_rotate_with_kid_uses_it(private_set: Path) -> None:
    assert ok("keys", "rotate", private_set, "--kid", "chosen").stdout.strip() == "chosen"
    assert kids(private_set)[-1] == "chosen"


def test_rotate_refuses_a_kid_already_present(private_set: Path) -> None:
    before = private_set.read_bytes()
    fails("keys", "rotate", private_set, "--kid", NEW)
    assert private_set.read_bytes() == before


def test_rotate_an_empty_set_falls_back_to_a_default_prefix(
    tmp_path: Path, fixed_today: date
) -> None:
    path = tmp_path / "empty.json"
    path.write_text('{"keys": []}')
    kid = ok("keys", "rotate", path).stdout.strip()
    assert kid == f"{DEFAULT_KID_PREFIX}-{fixed_today.isoformat()}"


def test_rotated_bodies_and_old_bodies_both_decrypt(private_set: Path, tmp_path: Path) -> None:
    public = tmp_path / "public.json"
    ok("keys", "public", private_set, "-o", public)
    old_body = ok("encrypt", "--jwks", public, stdin="[1]").stdout
    new_kid = ok("keys", "rotate", private_set).stdout.strip()
    ok("keys", "public", private_set, "-o", public)
    new_body = ok("encrypt", "--jwks", public, stdin="[2]").stdout
    assert inspect_kid(private_set, new_body) == new_kid
    assert json.loads(ok("decrypt", "--jwks", private_set, stdin=old_body).stdout) == [1]
    assert json.loads(ok("decrypt", "--jwks", private_set, stdin=new_body).stdout) == [2]


TODAY = date(2026, 11, 23)


@pytest.mark.parametrize(
    ("existing", "expected"),
    [
        ([], "key-2026-11-23"),
        (["telemetry-2026-11-01"], "telemetry-2026-11-23"),
        (["telemetry-2026-11-01", "telemetry-2026-11-23"], "telemetry-2026-11-23-2"),
        (["telemetry-2026-11-23", "telemetry-2026-11-23-2"], "telemetry-2026-11-23-3"),
        (["telemetry-2026-11-23-2"], "telemetry-2026-11-23-3"),  # never sorts before a sibling
        (["kibana_1", "kibana_2"], "kibana-2026-11-23"),
        (["prod1", "prod2"], "prod-2026-11-23"),
        (["alpha", "alps"], "key-2026-11-23"),  # no whole word in common
        (["v12", "v13"], "v-2026-11-23"),
        (["telemetry"], "telemetry-2026-11-23"),
        (["eu-telemetry-2026-01-01", "eu-traces-2026-02-01"], "eu-2026-11-23"),
        (["a", "b"], "key-2026-11-23"),
    ],
)
def test_next_kid_examples(existing: list[str], expected: str) -> None:
    assert next_kid(existing, TODAY) == expected


kid_text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), max_size=12)


@settings(max_examples=200, deadline=None)
@given(
    existing=st.lists(kid_text.filter(bool), unique=True, max_size=6),
    rotations=st.integers(min_value=1, max_value=9),
)
def test_next_kid_is_new_and_sorts_after_the_kids_it_made(
    existing: list[str], rotations: int
) -> None:
    kids_now, made_today = list(existing), []
    for _ in range(rotations):
        kid = next_kid(kids_now, TODAY)
        assert kid not in kids_now
        assert kid.startswith(kid_prefix(kids_now))
        kids_now.append(kid)
        made_today.append(kid)
    assert sorted(made_today) == made_today


@given(st.lists(kid_text.filter(bool), min_size=1, max_size=5))
def test_kid_prefix_is_a_prefix_of_every_kid_or_the_default(kids_now: list[str]) -> None:
    prefix = kid_prefix(kids_now)
    assert prefix
    assert prefix == DEFAULT_KID_PREFIX or all(k.startswith(prefix) for k in kids_now)


# ---------------------------------------------------------------------------------------------
# keys list


def list_json(path: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(ok("keys", "list", path, "--json").stdout)
    return rows


def test_list_json_reports_every_field_of_every_key(made: SimpleNamespace) -> None:
    rows = list_json(made.private)
    document = load(made.private)
    assert [list(row) for row in rows] == [LIST_FIELDS] * len(document["keys"])
    for row, jwk in zip(rows, document["keys"], strict=True):
        public = {m: jwk[m] for m in PUBLIC_MEMBERS}
        assert row["kid"] == jwk["kid"]
        assert (row["kty"], row["alg"], row["use"]) == (jwk["kty"], jwk["alg"], jwk["use"])
        assert row["size"] == JWK(**public).get_op_key("wrapKey").key_size
        assert row["private"] is True
        assert row["thumbprint"] == JWK(**public).thumbprint()
    assert [row["newest"] for row in rows] == [False] * (len(rows) - 1) + [True]


def test_list_of_a_public_set_says_no_private_part(made: SimpleNamespace) -> None:
    rows = list_json(made.public)
    assert [row["kid"] for row in rows] == [OLD, NEW]
    assert [row["private"] for row in rows] == [False, False]
    assert [row["thumbprint"] for row in rows] == [r["thumbprint"] for r in list_json(made.private)]


def test_list_table_for_a_person(made: SimpleNamespace) -> None:
    lines = ok("keys", "list", made.private).stdout.splitlines()
    assert lines[0].split() == [field.upper() for field in LIST_FIELDS]
    rows = list_json(made.private)
    assert len(lines) == 1 + len(rows)
    for line, row in zip(lines[1:], rows, strict=True):
        cells = line.split()
        assert cells[:7] == [
            row["kid"],
            "RSA",
            row["alg"],
            "enc",
            str(row["size"]),
            "yes",
            row["thumbprint"],
        ]
        assert (cells[7:] == ["*"]) is row["newest"]


def test_list_of_an_empty_set(tmp_path: Path) -> None:
    path = tmp_path / "empty.json"
    path.write_text('{"keys": []}')
    assert list_json(path) == []
    result = ok("keys", "list", path)
    assert result.stdout == ""
    assert "no keys" in result.stderr


# ---------------------------------------------------------------------------------------------
# keys public


def test_public_writes_only_the_public_members_to_stdout(made: SimpleNamespace) -> None:
    shown = json.loads(ok("keys", "public", made.private).stdout)
    private = load(made.private)["keys"]
    assert shown == {"keys": [{m: jwk[m] for m in PUBLIC_MEMBERS} for jwk in private]}
    assert all(list(jwk) == PUBLIC_MEMBERS for jwk in shown["keys"])


def test_public_to_a_file_is_mode_0644_whatever_the_umask(
    private_set: Path, tmp_path: Path
) -> None:
    out = tmp_path / "public.json"
    previous = os.umask(0o077)
    try:
        result = ok("keys", "public", private_set, "-o", out)
    finally:
        os.umask(previous)
    assert result.stdout == ""
    assert mode(out) == 0o644
    assert load(out) == json.loads(ok("keys", "public", private_set).stdout)
    assert out.name in result.stderr


def test_public_long_option(private_set: Path, tmp_path: Path) -> None:
    ok("keys", "public", private_set, "--output", tmp_path / "p.json")
    assert kids(tmp_path / "p.json") == [OLD, NEW]


def test_public_refuses_to_overwrite_a_private_set(
    private_set: Path, made: SimpleNamespace, tmp_path: Path
) -> None:
    other = Path(shutil.copy2(made.other, tmp_path / "other.json"))
    for target in (private_set, other):
        before = target.read_bytes()
        assert "holds private keys" in fails("keys", "public", private_set, "-o", target)
        assert target.read_bytes() == before


def test_public_replaces_an_older_public_set(private_set: Path, public_set: Path) -> None:
    ok("keys", "add", private_set, "--kid", "third")
    ok("keys", "public", private_set, "-o", public_set)
    assert kids(public_set) == [OLD, NEW, "third"]


def test_public_of_an_empty_set_fails(tmp_path: Path) -> None:
    path = tmp_path / "empty.json"
    path.write_text('{"keys": []}')
    assert "no keys" in fails("keys", "public", path)


# ---------------------------------------------------------------------------------------------
# keys remove


def test_remove_asks_and_a_no_changes_nothing(private_set: Path) -> None:
    before = private_set.read_bytes()
    result = invoke("keys", "remove", private_set, "--kid", OLD, stdin="n\n")
    assert result.exit_code == 1
    assert "can no longer be decrypted" in result.output
    assert private_set.read_bytes() == before


def test_remove_after_a_yes(private_set: Path) -> None:
    result = ok("keys", "remove", private_set, "--kid", OLD, stdin="y\n")
    assert "can no longer be decrypted" in result.output
    assert kids(private_set) == [NEW]


def test_remove_with_yes_does_not_ask_and_keeps_the_others(private_set: Path) -> None:
    before = load(private_set)["keys"]
    result = ok("keys", "remove", private_set, "--kid", NEW, "--yes")
    assert "[y/N]" not in result.output
    assert "can no longer be decrypted" in result.stderr
    assert load(private_set)["keys"] == before[:1]
    assert mode(private_set) == 0o600


def test_remove_an_unknown_kid(private_set: Path) -> None:
    before = private_set.read_bytes()
    message = fails("keys", "remove", private_set, "--kid", "nope", "--yes")
    assert "'nope'" in message
    assert OLD in message
    assert private_set.read_bytes() == before


def test_removed_key_no_longer_decrypts(private_set: Path, body_file: Path) -> None:
    ok("keys", "remove", private_set, "--kid", NEW, "-y")
    assert "no key found" in fails("decrypt", "--jwks", private_set, body_file)
