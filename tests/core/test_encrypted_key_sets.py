"""Private key-set files encrypted at rest (PBES2-HS512+A256KW, A256GCM), read by JOSE libraries."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest

from request_crypto import KeySetFile, RequestDecryptor, RequestEncryptor
from request_crypto.errors import KeyFileError, WrongPasswordError
from request_crypto.keyfile import read_jwks
from request_crypto.keys.pbes2 import (
    DEFAULT_ITERATIONS,
    MAX_ITERATIONS,
    encrypt_key_set,
    read_password_file,
)

PASSWORD = b"correct horse battery staple"


@pytest.fixture
def encrypted(tmp_path: Path) -> KeySetFile:
    return KeySetFile.init(tmp_path / "private.jwe", "recv-1", password=PASSWORD)


def _header(path: Path) -> dict[str, Any]:
    from request_crypto._b64 import b64url_decode

    return dict(json.loads(b64url_decode(path.read_text().split(".")[0], "header")))


def test_the_file_is_a_pbes2_jwe_with_owasp_iterations(encrypted: KeySetFile) -> None:
    text = encrypted.path.read_text()
    assert text.startswith("ey") and text.count(".") == 4
    assert '"d"' not in text and "recv-1" not in text
    header = _header(encrypted.path)
    assert header["alg"] == "PBES2-HS512+A256KW" and header["enc"] == "A256GCM"
    assert header["p2c"] >= 210_000 == DEFAULT_ITERATIONS
    from request_crypto._b64 import b64url_decode

    assert len(b64url_decode(header["p2s"], "p2s")) >= 16
    assert stat.S_IMODE(encrypted.path.stat().st_mode) == 0o600


def test_add_rotate_publish_and_decrypt_keep_it_encrypted(encrypted: KeySetFile) -> None:
    encrypted.add("recv-2")
    new = encrypted.rotate()
    assert encrypted.kids() == ["recv-1", "recv-2", new]
    assert encrypted.path.read_text().startswith("ey")  # rewritten encrypted
    public = encrypted.publish()
    body = RequestEncryptor(public, format="jwe").encrypt(new, {"a": 1})
    decryptor = RequestDecryptor.from_file(encrypted.path, password=PASSWORD)
    assert decryptor.decrypt(body) == {"a": 1}
    # publish never writes over the encrypted private set
    with pytest.raises(KeyFileError, match="holds private keys"):
        encrypted.publish(encrypted.path)


def test_a_wrong_password_is_one_clear_error(encrypted: KeySetFile) -> None:
    with pytest.raises(WrongPasswordError, match="password does not open") as caught:
        read_jwks(encrypted.path, password=b"wrong")
    assert caught.value.__context__ is None
    with pytest.raises(WrongPasswordError):
        KeySetFile(encrypted.path, password=b"wrong").add("x")
    with pytest.raises(KeyFileError, match="encrypted at rest; give its password"):
        read_jwks(encrypted.path)


def test_an_altered_file_is_refused(encrypted: KeySetFile) -> None:
    parts = encrypted.path.read_text().strip().split(".")
    parts[3] = ("A" if parts[3][0] != "A" else "B") + parts[3][1:]
    encrypted.path.write_text(".".join(parts))
    with pytest.raises(WrongPasswordError):
        read_jwks(encrypted.path, password=PASSWORD)


def test_a_planted_iteration_count_is_refused_before_any_work(tmp_path: Path) -> None:
    import request_crypto.keys.pbes2 as pbes2

    path = tmp_path / "planted.jwe"
    path.write_bytes(encrypt_key_set({"keys": []}, PASSWORD))
    header = _header(path)
    header["p2c"] = MAX_ITERATIONS + 1
    rest = path.read_text().split(".", 1)[1]
    path.write_text(pbes2.b64url_encode(json.dumps(header).encode()) + "." + rest)
    with pytest.raises(KeyFileError, match="p2c"):
        read_jwks(path, password=PASSWORD)


def test_joserfc_and_jwcrypto_open_the_file(encrypted: KeySetFile) -> None:
    """Standard JOSE libraries read it with the password (jwcrypto after lifting its cap)."""
    from joserfc import jwe
    from joserfc.jwk import OctKey

    token = encrypted.path.read_text().strip()
    registry = jwe.JWERegistry(algorithms=["PBES2-HS512+A256KW", "A256GCM"])
    opened = jwe.decrypt_compact(token, OctKey.import_key(PASSWORD), registry=registry)
    assert opened.plaintext is not None
    assert [k["kid"] for k in json.loads(opened.plaintext)["keys"]] == ["recv-1"]

    from jwcrypto import jwa, jwk
    from jwcrypto import jwe as jwcrypto_jwe

    saved = jwa.default_max_pbkdf2_iterations
    jwa.default_max_pbkdf2_iterations = DEFAULT_ITERATIONS
    try:
        message = jwcrypto_jwe.JWE()
        message.deserialize(token, key=jwk.JWK.from_password(PASSWORD.decode()))
    finally:
        jwa.default_max_pbkdf2_iterations = saved
    assert json.loads(message.payload)["keys"][0]["kid"] == "recv-1"


def test_password_files(tmp_path: Path) -> None:
    path = tmp_path / "password"
    path.write_bytes(PASSWORD + b"\n")
    assert read_password_file(path) == PASSWORD
    path.write_bytes(b"\n")
    with pytest.raises(KeyFileError, match="empty"):
        read_password_file(path)
    with pytest.raises(KeyFileError, match="cannot read"):
        read_password_file(tmp_path / "absent")
