"""A key source whose RSA private keys stay in AWS KMS: the unwrap is a KMS `Decrypt` call.

Opened from `aws-kms:` + a key ARN, a key id or `alias/NAME` (an alias ARN too), with optional
query attributes: `kid` (default: the alias name, else the RFC 7638 thumbprint), `alg`
(`RSA-OAEP`, the default, maps to RSAES_OAEP_SHA_1; `RSA-OAEP-256` to RSAES_OAEP_SHA_256) and
`region`. Credentials, region and endpoint come from boto3's standard chain
(`AWS_PROFILE`, `AWS_ACCESS_KEY_ID`..., `AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL_KMS` /
`AWS_ENDPOINT_URL`), exactly as for any other AWS client.

The public key is fetched once (`GetPublicKey`) when the source opens, which also checks the
key is an RSA ENCRYPT_DECRYPT key allowing the alg. Each answer of `Decrypt` is checked to
come from the configured key. Throttling is retried by botocore's standard retry mode
(exponential backoff with jitter); a KMS that still throttles, times out or cannot be
reached raises KeySourceUnavailableError (the receiver's 503), never DecryptionError: an
outage must not look like a bad body (the AWS Encryption SDK's KMS provider makes that
mistake).
"""

from __future__ import annotations

from typing import Any

import boto3
import botocore.config
import botocore.exceptions
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key

from ..errors import KeySourceError, KeySourceUnavailableError
from .external import ExternalKey, ExternalKeySource, check_alg, choose_kid, parse_attributes

__all__ = ["AWSKMSKeySource", "kms_call", "kms_client", "parse_kms_uri"]

#: JOSE alg -> the KMS encryption algorithm doing the same RSA-OAEP.
KMS_ALGORITHMS = {"RSA-OAEP": "RSAES_OAEP_SHA_1", "RSA-OAEP-256": "RSAES_OAEP_SHA_256"}
#: KMS errors meaning the ciphertext is not for this key: the one DecryptionError.
_NOT_THIS_KEY = frozenset({"InvalidCiphertextException", "IncorrectKeyException"})
#: Attempts (first call included) in botocore's standard retry mode, backoff between them.
DEFAULT_ATTEMPTS = 4
_QUERY = frozenset({"kid", "alg", "region"})


class AWSKMSKeySource(ExternalKeySource):
    """One RSA key in AWS KMS, unwrapping with KMS `Decrypt` (see the module docstring)."""

    def __init__(
        self,
        uri: str,
        *,
        client: Any = None,
        attempts: int = DEFAULT_ATTEMPTS,
        timeout: float = 5.0,
    ) -> None:
        """Parse `uri`, make a boto3 KMS client (or use `client`), read the public key."""
        key_id, query, alias = parse_kms_uri(uri)
        self.key_id = key_id
        self.alg = check_alg(query.get("alg", "RSA-OAEP"), uri)
        name = uri
        self._client = client or kms_client(name, query.get("region"), attempts, timeout)
        answer = self._call("GetPublicKey", name, KeyId=key_id)
        # The key's ARN, which every Decrypt answer must name (an alias resolves to it).
        self._arn = str(self._call("DescribeKey", name, KeyId=key_id)["KeyMetadata"]["Arn"])
        public = load_der_public_key(answer["PublicKey"])
        algorithm = KMS_ALGORITHMS[self.alg]
        if (
            not isinstance(public, rsa.RSAPublicKey)
            or answer.get("KeyUsage") != "ENCRYPT_DECRYPT"
            or algorithm not in answer.get("EncryptionAlgorithms", [])
        ):
            raise KeySourceError(
                f"{name}: KMS key {self._arn} is not an RSA ENCRYPT_DECRYPT key allowing "
                f"{algorithm} (it is {answer.get('KeySpec')} for {answer.get('KeyUsage')})"
            )
        numbers = public.public_numbers()
        kid = choose_kid(query.get("kid"), alias, numbers.n, numbers.e)
        super().__init__(name, [ExternalKey(kid, self.alg, numbers.n, numbers.e)])

    def _call(self, operation: str, name: str, **arguments: Any) -> dict[str, Any]:
        return kms_call(self._client, operation, name, **arguments)

    def _decrypt(self, key: ExternalKey, encrypted_key: bytes) -> bytes | None:
        """KMS `Decrypt` with the key's OAEP algorithm; None when KMS says it is not ours."""
        answer = self._call(
            "Decrypt",
            self.name,
            KeyId=self._arn,
            CiphertextBlob=encrypted_key,
            EncryptionAlgorithm=KMS_ALGORITHMS[key.alg],
        )
        if not answer:
            return None
        if answer.get("KeyId") != self._arn:
            raise KeySourceUnavailableError(
                self.name, f"KMS answered for key {answer.get('KeyId')!r}, not {self._arn}"
            )
        plaintext = answer.get("Plaintext")
        return plaintext if isinstance(plaintext, bytes) else None

    def health(self) -> None:
        """`DescribeKey`: KMS answers and the key is enabled, else KeySourceUnavailableError."""
        answer = self._call("DescribeKey", self.name, KeyId=self._arn)
        state = answer.get("KeyMetadata", {}).get("KeyState")
        if state != "Enabled":
            raise KeySourceUnavailableError(self.name, f"the KMS key is {state}")


def parse_kms_uri(uri: str) -> tuple[str, dict[str, str], str | None]:
    """`aws-kms:KEY[?kid=..&alg=..&region=..]`: the key id, the attributes, the alias name."""
    if not uri.startswith("aws-kms:"):
        raise KeySourceError(f"{uri!r} is not an aws-kms: URI")
    key_id, _, query_text = uri[len("aws-kms:") :].partition("?")
    query = parse_attributes(query_text, "&", uri)
    unknown = set(query) - _QUERY
    if unknown or not key_id:
        raise KeySourceError(
            f"{uri}: use aws-kms:ARN-OR-alias/NAME[?kid=..&alg=..&region=..]"
            + (f"; unknown attribute(s) {', '.join(sorted(unknown))}" if unknown else "")
        )
    alias = key_id.rsplit("alias/", 1)[1] if "alias/" in key_id else None
    return key_id, query, alias


def kms_call(client: Any, operation: str, name: str, **arguments: Any) -> dict[str, Any]:
    """One KMS call, its failures sorted: the key refused it, configuration, or outage.

    {} means KMS said the input is not this key's (Decrypt) or the MAC is wrong (VerifyMac).
    """
    method = getattr(client, _snake(operation))
    try:
        answer: dict[str, Any] = method(**arguments)
    except botocore.exceptions.ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        return _refused(code, operation, name)
    except (
        botocore.exceptions.BotoCoreError,
        botocore.exceptions.ConnectionError,
        OSError,
    ) as exc:
        raise KeySourceUnavailableError(name, f"{operation} failed: {type(exc).__name__}") from None
    return answer


def kms_client(name: str, region: str | None, attempts: int, timeout: float) -> Any:
    """A boto3 KMS client: standard credential chain and endpoint settings, standard retries."""
    config = botocore.config.Config(
        retries={"mode": "standard", "total_max_attempts": attempts},
        connect_timeout=timeout,
        read_timeout=timeout,
    )
    try:
        return boto3.client("kms", region_name=region, config=config)
    except botocore.exceptions.NoRegionError:
        raise KeySourceError(
            f"{name}: no AWS region: set AWS_DEFAULT_REGION (or a profile's region) "
            "or add region=NAME"
        ) from None


def _snake(operation: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in operation).lstrip("_")


def _refused(code: str, operation: str, name: str) -> dict[str, Any]:
    """What a KMS error means here: {} (not this key's ciphertext), or an exception."""
    if operation == "Decrypt" and code in _NOT_THIS_KEY:
        return {}
    if operation == "VerifyMac" and code == "KMSInvalidMacException":
        return {}
    if operation in ("GetPublicKey", "DescribeKey", "GenerateDataKey") and code in (
        "NotFoundException",
        "InvalidArnException",
    ):
        raise KeySourceError(f"{name}: KMS has no such key ({code})")
    if operation == "GenerateDataKey" and code in (
        "InvalidKeyUsageException",
        "ValidationException",
    ):
        raise KeySourceError(
            f"{name}: KMS refused GenerateDataKey ({code}): wrapping needs a symmetric "
            "ENCRYPT_DECRYPT key (aws kms create-key with the default key spec)"
        )
    if code in ("AccessDeniedException", "UnrecognizedClientException"):
        # Permissions can be fixed without a restart: retryable, and never a body's fault.
        raise KeySourceUnavailableError(name, f"KMS refused {operation} ({code}): check IAM")
    raise KeySourceUnavailableError(name, f"KMS answered {operation} with {code or 'an error'}")
