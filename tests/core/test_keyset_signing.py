"""KeySetFile with signing sets and dir secret sets: init, add, rotate, remove, publish."""

from __future__ import annotations

import json
import os
import stat
from datetime import date

import pytest

from request_crypto import KeySetFile, RequestDecryptor, RequestEncryptor
from request_crypto.errors import InvalidArgumentError
from request_crypto.keys.signing import SIGNING_ALGORITHMS


@pytest.mark.parametrize("alg", [*SIGNING_ALGORITHMS, "dir"])
def test_init_writes_a_private_file_of_the_kind(tmp_path, alg) -> None:
    path = tmp_path / "set.json"
    keys = KeySetFile.init(path, "k1", alg=alg)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600  # secrets too (`k`), not only `d`
    jwk = json.loads(path.read_text())["keys"][0]
    assert jwk["alg"] == alg and jwk["use"] == ("enc" if alg == "dir" else "sig")
    assert keys.kind() == ("dir" if alg == "dir" else "sig")
    assert keys.kids() == ["k1"]


@pytest.mark.parametrize("alg", ["ES256", "ES384", "EdDSA", "RS256", "PS256"])
def test_publish_writes_public_members_only(tmp_path, alg) -> None:
    keys = KeySetFile.init(tmp_path / "set.json", "k1", alg=alg)
    public = keys.publish(tmp_path / "public.json")
    jwk = public["keys"][0]
    assert "d" not in jwk and jwk["use"] == "sig"
    assert ("crv" in jwk and "x" in jwk) or ("n" in jwk and "e" in jwk)
    assert stat.S_IMODE(os.stat(tmp_path / "public.json").st_mode) == 0o644


@pytest.mark.parametrize("alg", ["HS256", "dir"])
def test_publish_refuses_a_set_of_secrets(tmp_path, alg) -> None:
    keys = KeySetFile.init(tmp_path / "set.json", "k1", alg=alg)
    with pytest.raises(InvalidArgumentError, match="no public half"):
        keys.publish(tmp_path / "public.json")
    assert not (tmp_path / "public.json").exists()


def test_add_rotate_remove_in_a_signing_set(tmp_path) -> None:
    keys = KeySetFile.init(tmp_path / "set.json", "sender-2026-11-01", alg="ES256")
    public = keys.add("sender-b", alg="ES256")
    assert set(public) == {"kty", "kid", "use", "alg", "crv", "x", "y"}
    assert keys.rotate(alg="ES256", today=date(2026, 11, 27)) == "sender-2026-11-27"
    with pytest.raises(InvalidArgumentError, match="set of its own kind"):
        keys.add("rsa", alg="RSA-OAEP")
    assert keys.remove("sender-b") == ["sender-2026-11-01", "sender-2026-11-27"]
    secret = KeySetFile.init(tmp_path / "dir.json", "d1", alg="dir").add("d2", alg="dir")
    assert "k" not in secret  # a secret's description, never the secret


def test_files_drive_a_signed_dir_round_trip(tmp_path) -> None:
    shared = KeySetFile.init(tmp_path / "dir.json", "shared", alg="dir")
    sender = KeySetFile.init(tmp_path / "sender.json", "producer", alg="ES256")
    sender.publish(tmp_path / "sender-public.json")
    encryptor = RequestEncryptor.from_file(shared.path, sign_with=sender.path.read_text())
    body = encryptor.encrypt("shared", {"event": 1})
    decryptor = RequestDecryptor.from_file(
        shared.path, verify_with=(tmp_path / "sender-public.json").read_text()
    )
    assert decryptor.decrypt_request(body).signer.kid == "producer"
