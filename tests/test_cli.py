"""cli.py through Typer's CliRunner: every command, every flag of the contract, every error."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import stat
import sys
from datetime import date
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import typer
from hypothesis import given, settings
from hypothesis import strategies as st
from jwcrypto.jwk import JWK
from typer.testing import CliRunner, Result

from request_crypto import RequestDecryptor, __version__, detect_format, keyfile
from request_crypto.cli import _app as app_module
from request_crypto.cli import app, kid_prefix, next_kid
from request_crypto.cli import keys as keys_module
from request_crypto.cli.demo import DEMO_PAYLOAD
from request_crypto.kids import DEFAULT_KID_PREFIX

PUBLIC_MEMBERS = ["kty", "kid", "use", "alg", "e", "n"]
PRIVATE_MEMBERS = ["d", "p", "q", "dp", "dq", "qi"]
OLD, NEW = "telemetry-2026-11-01", "telemetry-2026-11-02"
PAYLOAD = {"cluster_uuid": "abc", "count": 3, "name": "café ☕", "nested": [1, {"x": None}]}
LIST_FIELDS = ["kid", "kty", "alg", "use", "size", "private", "thumbprint", "newest"]

runner = CliRunner()


def invoke(*args: object, stdin: str | bytes | None = None) -> Result:
    result = runner.invoke(app, [str(arg) for arg in args], input=stdin)
    # A crash would also exit 1: make sure every exit was on purpose.
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def ok(*args: object, stdin: str | bytes | None = None) -> Result:
    result = invoke(*args, stdin=stdin)
    assert result.exit_code == 0, result.stderr
    return result


def fails(*args: object, stdin: str | bytes | None = None) -> str:
    """Run a command that must fail: exit 1, one `error:` line on stderr, nothing on stdout."""
    result = invoke(*args, stdin=stdin)
    assert result.exit_code == 1, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    errors = [line for line in lines if not line.startswith("warning: ")]
    assert len(errors) == 1, lines
    assert errors[0].startswith("error: ")
    assert "Traceback" not in result.output
    assert result.stdout == ""
    return errors[0]


def usage_error(*args: object) -> Result:
    result = invoke(*args)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    return result


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def kids(path: Path) -> list[str]:
    return [jwk["kid"] for jwk in load(path)["keys"]]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ---------------------------------------------------------------------------------------------
# Key sets made once per session by the CLI; tests that change one work on a copy.


@pytest.fixture(scope="session")
def made(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    directory = tmp_path_factory.mktemp("cli-sets")
    private, public, other = (directory / name for name in ("private", "public", "other"))
    ok("keys", "init", private, "--kid", OLD)
    ok("keys", "add", private, "--kid", NEW)
    ok("keys", "public", private, "-o", public)
    ok("keys", "init", other, "--kid", "other-key")
    return SimpleNamespace(private=private, public=public, other=other)


@pytest.fixture
def private_set(made: SimpleNamespace, tmp_path: Path) -> Path:
    return Path(shutil.copy2(made.private, tmp_path / "private_jwks.json"))


@pytest.fixture
def public_set(made: SimpleNamespace, tmp_path: Path) -> Path:
    return Path(shutil.copy2(made.public, tmp_path / "public_jwks.json"))


@pytest.fixture
def body_file(made: SimpleNamespace, tmp_path: Path) -> Path:
    """A fresh `elastic` body of PAYLOAD to the newest key of the session set."""
    body = ok("encrypt", "--jwks", made.public, "-", stdin=json.dumps(PAYLOAD)).stdout
    path = tmp_path / "body.txt"
    path.write_text(body)
    return path


@pytest.fixture
def fixed_today(monkeypatch: pytest.MonkeyPatch) -> date:
    today = date(2026, 11, 23)
    monkeypatch.setattr(keys_module, "utc_today", lambda: today)
    return today


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


# ---------------------------------------------------------------------------------------------
# encrypt, decrypt, inspect


def inspect_kid(private: Path, body: str) -> str:
    kid: str = json.loads(ok("inspect", "--jwks", private, stdin=body).stdout)["key"]["kid"]
    return kid


@pytest.mark.parametrize("body_format", ["elastic", "jwe"])
def test_encrypt_then_decrypt_round_trips(
    made: SimpleNamespace, tmp_path: Path, body_format: str
) -> None:
    source = tmp_path / "payload.json"
    source.write_text(json.dumps(PAYLOAD, ensure_ascii=False), encoding="utf-8")
    body = ok("encrypt", "--jwks", made.public, "--format", body_format, source).stdout
    assert body.endswith("\n")
    assert detect_format(body.strip()).value == body_format
    decrypted = ok("decrypt", "--jwks", made.private, stdin=body).stdout
    assert json.loads(decrypted) == PAYLOAD
    assert "café ☕" in decrypted  # UTF-8, not \\u escapes, for a person reading it


def test_encrypt_and_decrypt_read_stdin_without_an_argument(made: SimpleNamespace) -> None:
    body = ok("encrypt", "--jwks", made.public, stdin=json.dumps(PAYLOAD)).stdout
    assert json.loads(ok("decrypt", "--jwks", made.private, stdin=body).stdout) == PAYLOAD


def test_decrypt_reads_a_file(made: SimpleNamespace, body_file: Path) -> None:
    assert json.loads(ok("decrypt", "--jwks", made.private, body_file).stdout) == PAYLOAD


def test_encrypt_uses_the_newest_key_unless_told(made: SimpleNamespace) -> None:
    newest = ok("encrypt", "--jwks", made.public, stdin="{}").stdout
    chosen = ok("encrypt", "--jwks", made.public, "--kid", OLD, stdin="{}").stdout
    assert inspect_kid(made.private, newest) == kids(made.public)[-1] == NEW
    assert inspect_kid(made.private, chosen) == OLD


def test_encrypt_with_the_private_set_uses_its_public_halves(made: SimpleNamespace) -> None:
    body = ok("encrypt", "--jwks", made.private, stdin="[true]").stdout
    assert json.loads(ok("decrypt", "--jwks", made.private, stdin=body).stdout) == [True]


@pytest.mark.parametrize("body_format", ["elastic", "jwe"])
def test_inspect_shows_the_metadata_and_the_format(made: SimpleNamespace, body_format: str) -> None:
    body = ok("encrypt", "--jwks", made.public, "--format", body_format, stdin="1").stdout
    shown = json.loads(ok("inspect", "--jwks", made.private, stdin=body).stdout)
    expected = RequestDecryptor.from_file(made.private).get_jwk_metadata(body.strip()).to_dict()
    assert shown == {"format": body_format, **expected}
    assert shown["key"]["kid"] == shown["header"]["kid"] == NEW
    if body_format == "elastic":  # the JavaScript library's shape
        assert shown["protected"] == ["zip", "enc", "alg", "kid"]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def tampered(body: str) -> str:
    """Flip one bit of the wrapped key's tag, keeping the body well formed."""
    envelope = json.loads(unb64url(body.strip()))
    parts = envelope["encryptedAESKey"].split(".")
    tag = bytearray(unb64url(parts[4]))
    tag[0] ^= 1
    envelope["encryptedAESKey"] = ".".join([*parts[:4], b64url(bytes(tag))])
    return b64url(json.dumps(envelope, separators=(",", ":")).encode())


def test_body_errors_are_one_line_a_person_can_act_on(
    made: SimpleNamespace, body_file: Path, tmp_path: Path
) -> None:
    body = body_file.read_text()
    for command in ("decrypt", "inspect"):
        message = fails(command, "--jwks", made.public, body_file)
        assert "no private keys" in message
        assert f"{command} needs the private set" in message

        message = fails(command, "--jwks", made.other, body_file)
        assert "no key found" in message
        assert repr(NEW) in message  # which kid the body wants
        assert "'other-key'" in message  # and which kids this set has

        assert "unable to decrypt" in fails(command, "--jwks", made.private, stdin=tampered(body))
        assert "dot-separated" in fails(command, "--jwks", made.private, stdin="a.b.c")
        assert "base64url" in fails(command, "--jwks", made.private, stdin="not*base64")
        assert "empty" in fails(command, "--jwks", made.private, stdin="\n")
        assert "no such file" in fails(command, "--jwks", made.private, tmp_path / "nope")


def test_a_hostile_kid_cannot_break_the_error_line(made: SimpleNamespace) -> None:
    header = b64url(b'{"alg":"RSA-OAEP","enc":"A256GCM","kid":"x\\ny"}')
    token = header + ".AAAA.AAAA.AAAA.AAAA"
    assert "x\\ny" in fails("decrypt", "--jwks", made.private, stdin=token)


def test_a_path_with_a_newline_stays_on_one_line(tmp_path: Path) -> None:
    message = fails("keys", "list", tmp_path / "two\nlines.json")
    assert "two\\nlines.json" in message


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "no such key-set file"),
        ("{not json", "not valid JSON"),
        ('{"keys": []}', "holds no keys"),
        ('{"keys": {}}', '{"keys": [...]}'),
        ('{"keys": [{"kty": "EC", "kid": "e"}]}', "only RSA keys"),
    ],
    ids=["missing", "malformed", "empty", "not-a-set", "invalid-key"],
)
@pytest.mark.parametrize("command", ["encrypt", "decrypt", "inspect"])
def test_key_set_errors(
    tmp_path: Path, body_file: Path, command: str, content: str | None, expected: str
) -> None:
    path = tmp_path / "set.json"
    if content is not None:
        path.write_text(content)
    source = body_file if command != "encrypt" else "-"
    message = fails(command, "--jwks", path, source, stdin="{}")
    assert expected in message
    assert str(path) in message


def test_keys_commands_report_key_set_errors_too(tmp_path: Path) -> None:
    path = tmp_path / "set.json"
    path.write_text("[]")
    for args in (["list"], ["public"], ["add", "--kid", "k"], ["rotate"], ["remove", "--kid", "k"]):
        assert str(path) in fails("keys", args[0], path, *args[1:])
    assert path.read_text() == "[]"


def test_encrypt_errors(made: SimpleNamespace, tmp_path: Path) -> None:
    message = fails("encrypt", "--jwks", made.public, "--kid", "nope", stdin="{}")
    assert "'nope'" in message
    assert NEW in message  # the kids it could have used
    assert "line 1 column 9" in fails("encrypt", "--jwks", made.public, stdin='{"a": 1,}')
    assert "JSON value" in fails("encrypt", "--jwks", made.public, stdin='{"a": NaN}')
    assert "not UTF-8" in fails("encrypt", "--jwks", made.public, stdin=b"\xff\xfe\xfa")
    assert "no such file" in fails("encrypt", "--jwks", made.public, tmp_path / "nope.json")


def test_deeply_nested_json_is_an_error_not_a_traceback(
    made: SimpleNamespace, private_set: Path, tmp_path: Path
) -> None:
    deep = "[" * 100_000
    assert "nested too deeply" in fails("encrypt", "--jwks", made.public, stdin=deep)
    # `keys public -o` looks into the file it would replace: such a file is no key set
    target = tmp_path / "deep.json"
    target.write_text(deep)
    ok("keys", "public", private_set, "-o", target)
    assert kids(target) == [OLD, NEW]


@pytest.mark.parametrize(
    "args",
    [
        ["decrypt"],
        ["inspect"],
        ["encrypt"],
        ["encrypt", "--jwks", "x", "--format", "xml"],
        ["keys", "remove", "x"],
        ["keys", "add", "x"],
        ["keys", "frobnicate"],
        ["frobnicate"],
    ],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    usage_error(*args)


class FailingDirectorySync:
    """`os` for keyfile, where fsync of a directory fails (as on some network file systems)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def fsync(self, fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(5, "Input/output error")
        os.fsync(fd)


def test_a_failed_directory_sync_is_one_error_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keyfile, "os", FailingDirectorySync())
    message = fails("keys", "init", tmp_path / "keys.json", "--kid", "a")
    assert "syncing its directory" in message
    assert "Input/output error" in message


# ---------------------------------------------------------------------------------------------
# Safety: warnings, and no private parameter anywhere


def test_a_readable_private_set_warns_once_on_stderr(private_set: Path, body_file: Path) -> None:
    private_set.chmod(0o644)
    commands = [
        ["decrypt", "--jwks", private_set, body_file],
        ["keys", "list", private_set],
        ["keys", "remove", private_set, "--kid", OLD, "--yes"],  # reads the file twice
    ]
    for args in commands:
        result = ok(*args)
        warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
        assert len(warnings) == 1, result.stderr
        assert f"chmod 600 {private_set}" in warnings[0]
        assert "warning" not in result.stdout


root_only = pytest.mark.skipif(
    os.geteuid() != 0,
    reason="giving a file to another owner needs root (CI runs these tests as root)",
)
SERVICE_UID, SERVICE_GID = 12345, 12346


def owner(path: Path) -> tuple[int, int]:
    return path.stat().st_uid, path.stat().st_gid


@root_only
def test_keys_rotate_and_add_keep_the_owner_of_a_service_key_file(private_set: Path) -> None:
    """A root-run rotation must leave the receiver service (its owner) able to read its keys."""
    os.chown(private_set, SERVICE_UID, SERVICE_GID)
    for args in (["rotate", private_set], ["add", private_set, "--kid", "added"]):
        result = ok("keys", *args)
        assert "warning" not in result.stderr
        assert owner(private_set) == (SERVICE_UID, SERVICE_GID)
        assert mode(private_set) == 0o600
    assert len(kids(private_set)) == 4


@root_only
def test_keys_rotate_that_cannot_keep_the_owner_still_rotates_and_warns_once(
    private_set: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(fd: int, uid: int, gid: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(keyfile.os, "fchown", refuse)
    os.chown(private_set, SERVICE_UID, SERVICE_GID)
    result = ok("keys", "rotate", private_set)
    assert len(kids(private_set)) == 3
    assert owner(private_set) == (os.geteuid(), os.getegid())
    assert mode(private_set) == 0o600
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, result.stderr
    assert f"run: chown {SERVICE_UID}:{SERVICE_GID} {private_set}" in warnings[0]
    assert "warning" not in result.stdout


def test_a_0600_private_set_and_a_public_set_do_not_warn(
    made: SimpleNamespace, body_file: Path
) -> None:
    assert "warning" not in ok("decrypt", "--jwks", made.private, body_file).stderr
    assert "warning" not in ok("keys", "list", made.public).stderr


def test_no_command_prints_private_key_parameters(
    private_set: Path, body_file: Path, tmp_path: Path
) -> None:
    secrets = [jwk[m] for jwk in load(private_set)["keys"] for m in PRIVATE_MEMBERS]
    outputs = [
        ok("keys", "list", private_set),
        ok("keys", "list", private_set, "--json"),
        ok("keys", "public", private_set),
        ok("keys", "public", private_set, "-o", tmp_path / "public.json"),
        ok("encrypt", "--jwks", private_set, stdin="{}"),
        ok("decrypt", "--jwks", private_set, body_file),
        ok("inspect", "--jwks", private_set, body_file),
        ok("keys", "rotate", private_set),
        ok("keys", "add", private_set, "--kid", "added"),
        ok("keys", "remove", private_set, "--kid", OLD, "--yes"),
    ]
    assert load(tmp_path / "public.json")  # the public file was written, and holds no secret
    texts = [result.output for result in outputs] + [(tmp_path / "public.json").read_text()]
    leaked = [s for s in secrets for text in texts if s in text or s[:40] in text]
    assert not leaked


def test_a_library_bug_is_not_swallowed_as_a_clean_error(
    made: SimpleNamespace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only RequestCryptoError is turned into a one-line error; anything else is a bug."""

    def boom(*_args: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(keys_module, "key_rows", boom)
    result = runner.invoke(app, ["keys", "list", str(made.private)])
    assert isinstance(result.exception, RuntimeError)


# ---------------------------------------------------------------------------------------------
# help, version, demo, receiver hook


CONTRACT = {
    ("keys", "init"): ["--kid", "--size", "--alg", "--force", "2048", "3072", "4096"],
    ("keys", "add"): ["--kid", "--size", "--alg", "RSA-OAEP-256"],
    ("keys", "rotate"): ["--kid", "--size", "--alg"],
    ("keys", "list"): ["--json"],
    ("keys", "public"): ["-o"],
    ("keys", "remove"): ["--kid", "--yes"],
    ("encrypt",): ["--jwks", "--kid", "--format", "elastic", "jwe"],
    ("decrypt",): ["--jwks"],
    ("inspect",): ["--jwks"],
    ("demo",): [],
}


@pytest.mark.parametrize("command", list(CONTRACT), ids=" ".join)
def test_help_shows_every_flag_of_the_contract(
    command: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # no wrapping inside the help table
    shown = ok(*command, "--help").stdout
    for flag in CONTRACT[command]:
        # a whole word: "-o" inside "--output" does not count
        assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", shown), flag


def test_version() -> None:
    assert ok("--version").stdout.strip() == f"request-crypto {__version__}"


def test_demo_runs_the_whole_flow() -> None:
    result = ok("demo")
    out = result.stdout
    for step in ("keys init", "keys public", "encrypt", "decrypt", "inspect", "keys rotate"):
        assert f"$ request-crypto {step}" in out
    assert out.count("ok: the same payload") == 3  # first decrypt, old after rotation, jwe
    assert json.dumps(DEMO_PAYLOAD) in out
    assert result.stderr == ""


def test_receiver_commands_are_registered_when_present(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[typer.Typer] = []
    monkeypatch.setitem(sys.modules, "fake_receiver_cli", SimpleNamespace(register=calls.append))
    app_module._register_receiver_commands("fake_receiver_cli")
    assert calls == [app]


def test_receiver_commands_are_optional() -> None:
    before = list(app.registered_commands)
    app_module._register_receiver_commands("request_crypto.receiver.no_such_module")
    app_module._register_receiver_commands("no_such_package.cli")
    assert app.registered_commands == before


def test_a_broken_receiver_module_is_not_mistaken_for_a_missing_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "broken_receiver_cli.py").write_text("import no_such_dependency_of_it\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = list(app.registered_commands)
    with pytest.raises(ImportError) as raised:
        app_module._register_receiver_commands("broken_receiver_cli")
    assert raised.value.name == "no_such_dependency_of_it"
    assert app.registered_commands == before
