"""open_key_source's scheme table, and sources merged by kid (`serve --jwks A --jwks B`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from request_crypto import KeySetFile, RequestDecryptor, RequestEncryptor
from request_crypto.errors import (
    InvalidJWKSError,
    KeySourceError,
    KeySourceUnavailableError,
    NoKeyFoundError,
)
from request_crypto.keys import JWKManager, MergedKeySource
from request_crypto.keys.aws_kms import AWSKMSKeySource
from request_crypto.keys.pkcs11 import PKCS11KeySource
from request_crypto.keys.uri import open_key_source, open_key_sources


def test_a_path_is_a_key_set_file_plain_or_encrypted(tmp_path: Path) -> None:
    KeySetFile.init(tmp_path / "plain.json", "file-1")
    KeySetFile.init(tmp_path / "sealed.jwe", "file-2", password=b"pw")
    assert isinstance(open_key_source(tmp_path / "plain.json"), JWKManager)
    assert open_key_source(str(tmp_path / "sealed.jwe"), password=b"pw").kids() == ["file-2"]


def test_uris_pick_their_source(softhsm: Any, kms: Any) -> None:
    assert isinstance(open_key_source(softhsm.uri("recv-1")), PKCS11KeySource)
    assert isinstance(open_key_source(f"aws-kms:{kms.rsa_key()}"), AWSKMSKeySource)


def test_an_unknown_scheme_is_refused_not_read_as_a_file() -> None:
    with pytest.raises(KeySourceError, match="unknown key source scheme 'vault'"):
        open_key_source("vault:secret/keys")


def test_merged_sources_answer_by_kid(tmp_path: Path, softhsm: Any) -> None:
    KeySetFile.init(tmp_path / "a.json", "file-1")
    merged = open_key_sources([tmp_path / "a.json", softhsm.uri("recv-1")])
    assert isinstance(merged, MergedKeySource)
    assert merged.kids() == ["file-1", "recv-1"]
    decryptor = RequestDecryptor(merged)
    public = decryptor.get_well_knowns()
    for kid in ("file-1", "recv-1"):
        body = RequestEncryptor(public, format="jwe").encrypt(kid, {"kid": kid})
        assert decryptor.decrypt(body) == {"kid": kid}
    with pytest.raises(NoKeyFoundError):
        merged.unwrap("absent", "RSA-OAEP", b"")
    merged.health()


def test_a_kid_in_two_sources_is_refused(tmp_path: Path) -> None:
    KeySetFile.init(tmp_path / "a.json", "same")
    KeySetFile.init(tmp_path / "b.json", "same")
    with pytest.raises(InvalidJWKSError, match="kid 'same' is in both"):
        open_key_sources([tmp_path / "a.json", tmp_path / "b.json"])


class _Down:
    """A source whose module is down: health and unwrap say so, naming it."""

    name = "pkcs11:token=down"

    def kids(self) -> list[str]:
        return ["down-1"]

    def can_decrypt(self, kid: str) -> bool:
        return True

    def public_jwk(self, kid: str) -> None:
        return None

    def key_metadata(self, kid: str) -> None:
        return None

    def unwrap(self, kid: str, alg: str, encrypted_key: bytes) -> bytes:
        raise KeySourceUnavailableError(self.name, "the token answered DeviceRemoved")

    def health(self) -> None:
        raise KeySourceUnavailableError(self.name, "the token answered DeviceRemoved")

    def close(self) -> None:
        pass


def test_merged_health_names_the_failing_source(tmp_path: Path) -> None:
    KeySetFile.init(tmp_path / "a.json", "file-1")
    merged = MergedKeySource([open_key_source(tmp_path / "a.json"), _Down()])
    with pytest.raises(KeySourceUnavailableError, match="pkcs11:token=down"):
        merged.health()
