"""A symmetric AWS KMS key as a sealed file's recipient: envelope encryption's data key.

`seal` asks KMS `GenerateDataKey` (AES_256) for the file key: KMS returns it in the clear
(used once, then dropped) and wrapped under the KMS key (the blob stored in the header).
`open` hands the blob to KMS `Decrypt`. Both name an EncryptionContext that binds the blob to
one file (the format version and the header's random salt), so a blob copied into another
file's header does not unwrap (docs/FILE-FORMAT.md).

Opened from `aws-kms:` + a key ARN, key id or `alias/NAME` (`?region=NAME` optional); the
client, its calls and their errors are `keys.aws_kms`'s: an unreachable or throttling KMS is
KeySourceUnavailableError, never a wrong answer. Least privilege: a sealer needs
`kms:GenerateDataKey`, an opener `kms:Decrypt`, on that key only.
"""

from __future__ import annotations

from typing import Any

from ..errors import KeySourceError, KeySourceUnavailableError, NoRecipientKeyError
from .aws_kms import DEFAULT_ATTEMPTS, kms_call, kms_client, parse_kms_uri

__all__ = ["KMSDataKey", "is_data_key_uri"]

DATA_KEY_SPEC = "AES_256"


def is_data_key_uri(uri: str) -> bool:
    """Whether `uri` names a symmetric KMS key (a sealed file's aws-kms recipient) rather than
    an RSA one (`keys.aws_kms`): `DescribeKey`'s KeySpec; a `kid` or `alg` attribute (RSA
    keys only) answers without asking. An unreachable KMS is KeySourceUnavailableError."""
    key_id, query, _alias = parse_kms_uri(uri)
    if set(query) - {"region"}:
        return False
    client = kms_client(uri, query.get("region"), DEFAULT_ATTEMPTS, 5.0)
    metadata = kms_call(client, "DescribeKey", uri, KeyId=key_id)["KeyMetadata"]
    return bool(metadata.get("KeySpec") == "SYMMETRIC_DEFAULT")


class KMSDataKey:
    """One symmetric KMS key making (GenerateDataKey) and unwrapping (Decrypt) file keys."""

    def __init__(
        self,
        uri: str,
        *,
        client: Any = None,
        attempts: int = DEFAULT_ATTEMPTS,
        timeout: float = 5.0,
    ) -> None:
        key_id, query, _alias = parse_kms_uri(uri)
        if set(query) - {"region"}:
            raise KeySourceError(
                f"{uri}: a sealed file's KMS recipient takes only ?region=NAME "
                "(kid and alg are for RSA keys in KMS)"
            )
        self.name = uri
        self.key_id = key_id
        self._client = client or kms_client(uri, query.get("region"), attempts, timeout)
        self._arn: str | None = None

    @property
    def arn(self) -> str:
        """The key's ARN (an alias resolved by `DescribeKey`, once, which also checks the key
        is a symmetric ENCRYPT_DECRYPT key: KMS refuses others anyway, less clearly)."""
        if self._arn is None:
            answer = kms_call(self._client, "DescribeKey", self.name, KeyId=self.key_id)
            metadata = answer.get("KeyMetadata", {})
            if (metadata.get("KeySpec"), metadata.get("KeyUsage")) != (
                "SYMMETRIC_DEFAULT",
                "ENCRYPT_DECRYPT",
            ):
                raise KeySourceError(
                    f"{self.name}: not a symmetric ENCRYPT_DECRYPT KMS key (it is "
                    f"{metadata.get('KeySpec')} for {metadata.get('KeyUsage')})"
                )
            self._arn = str(metadata["Arn"])
        return self._arn

    def generate(self, context: dict[str, str]) -> tuple[bytes, str, bytes]:
        """A new 32-byte data key: (plaintext, the KMS key's ARN, the wrapped blob)."""
        answer = kms_call(
            self._client,
            "GenerateDataKey",
            self.name,
            KeyId=self.arn,
            KeySpec=DATA_KEY_SPEC,
            EncryptionContext=context,
        )
        plaintext, arn, blob = (answer.get(k) for k in ("Plaintext", "KeyId", "CiphertextBlob"))
        if not (isinstance(plaintext, bytes) and len(plaintext) == 32 and arn == self.arn):
            raise KeySourceUnavailableError(
                self.name, "KMS GenerateDataKey answered no AES-256 key"
            )
        if not isinstance(blob, bytes) or not blob:
            raise KeySourceUnavailableError(self.name, "KMS GenerateDataKey answered no blob")
        return plaintext, arn, blob

    def unwrap(self, arn: str, blob: bytes, context: dict[str, str]) -> bytes | None:
        """The data key in `blob`, or None when KMS says it is not this key's or this file's.

        A header naming another key is refused before any Decrypt (NoRecipientKeyError);
        KMS is asked with this key's id and its answer must name this key too.
        """
        if arn != self.arn:
            raise NoRecipientKeyError([f"aws-kms:{arn}"])
        answer = kms_call(
            self._client,
            "Decrypt",
            self.name,
            KeyId=self.key_id,
            CiphertextBlob=blob,
            EncryptionContext=context,
        )
        if not answer:
            return None
        if answer.get("KeyId") != self.arn:
            return None
        plaintext = answer.get("Plaintext")
        return plaintext if isinstance(plaintext, bytes) else None

    def __repr__(self) -> str:
        return f"KMSDataKey({self.name!r})"
