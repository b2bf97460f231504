"""A signing key that stays in AWS KMS: ES256 through KMS `Sign`, HS256 through `GenerateMac`.

Opened from `aws-kms:` + a key ARN, key id or `alias/NAME`, with optional query attributes
`alg` (`ES256` or `HS256`; without it one `DescribeKey` call reads the key spec), `kid`
(default: the alias name, else the key id) and `region`; client, endpoint, retries and
errors are those of `keys.aws_kms`. Least privilege: an ES256 sender needs `kms:Sign`, its
receiver `kms:GetPublicKey` (the signature is checked locally); an HS256 sender needs
`kms:GenerateMac` and its receiver `kms:VerifyMac`, so neither can do the other's part.
A KMS outage is KeySourceUnavailableError, never a bad signature. Each answer of `Sign`,
`GenerateMac` and `VerifyMac` must name the configured key (its ARN, read once with
`DescribeKey`), as `Decrypt`'s must in `keys.aws_kms`: a signature or MAC made by another
key is never used.
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, utils
from cryptography.hazmat.primitives.serialization import load_der_public_key
from jwcrypto.jwk import JWK

from ..errors import KeySourceError, KeySourceUnavailableError
from .aws_kms import DEFAULT_ATTEMPTS, kms_call, kms_client, parse_kms_uri
from .signing import SigningKey

__all__ = ["KMS_SIGNING_ALGORITHMS", "AWSKMSSigningKey", "is_signing_uri"]

#: JOSE alg -> (KMS key spec, KMS signing or MAC algorithm).
KMS_SIGNING_ALGORITHMS = {
    "ES256": ("ECC_NIST_P256", "ECDSA_SHA_256"),
    "HS256": ("HMAC_256", "HMAC_SHA_256"),
}
_COORDINATE = 32  # bytes of r and of s in an ES256 signature
_MAC_BYTES = 32


class AWSKMSSigningKey(SigningKey):
    """One KMS signing key with `SigningKey`'s interface (see the module docstring).

    Like any `SigningKey` it is a one-key `VerificationKeys`: a `Verifier` takes it directly.
    """

    def __init__(
        self,
        uri: str,
        *,
        client: Any = None,
        attempts: int = DEFAULT_ATTEMPTS,
        timeout: float = 5.0,
    ) -> None:
        """Parse `uri` and make the boto3 client (or use `client`); KMS is asked only for
        the key spec when `alg` is not given."""
        key_id, query, alias = parse_kms_uri(uri)
        self.name = uri
        self.key_id = key_id
        self._client = client or kms_client(uri, query.get("region"), attempts, timeout)
        self._described: dict[str, Any] | None = None
        alg = query.get("alg") or self._alg_of_key()
        if alg not in KMS_SIGNING_ALGORITHMS:
            raise KeySourceError(f"{uri}: alg {alg!r} refused; use ES256 or HS256")
        self.alg = alg
        self.kty = "EC" if alg == "ES256" else "oct"
        self.kid = query.get("kid") or alias or key_id.rsplit("/", 1)[-1]
        self._secret = None
        self._private = None
        self._public = None
        self.jwk = {"kty": self.kty, "kid": self.kid, "use": "sig", "alg": self.alg}

    def _call(self, operation: str, **arguments: Any) -> dict[str, Any]:
        return kms_call(self._client, operation, self.name, KeyId=self.key_id, **arguments)

    def _metadata(self) -> dict[str, Any]:
        """`DescribeKey` once: the key's spec and ARN (an alias resolves to it)."""
        metadata = self._described
        if metadata is None:
            metadata = dict(self._call("DescribeKey")["KeyMetadata"])
            self._described = metadata
        return metadata

    def _answered(self, operation: str, **arguments: Any) -> dict[str, Any]:
        """`operation` on the key, its answer checked to come from the key (not another one)."""
        metadata = self._metadata()
        arn = metadata.get("Arn")
        answer = kms_call(self._client, operation, self.name, KeyId=arn, **arguments)
        # AWS names the key by its ARN; moto's GenerateMac/VerifyMac by its bare key id.
        if answer and answer.get("KeyId") not in (arn, metadata.get("KeyId")):
            raise KeySourceUnavailableError(
                self.name, f"KMS answered {operation} for key {answer.get('KeyId')!r}, not {arn}"
            )
        return answer

    def _alg_of_key(self) -> str:
        spec = self._metadata().get("KeySpec")
        for alg, (key_spec, _) in KMS_SIGNING_ALGORITHMS.items():
            if spec == key_spec:
                return alg
        raise KeySourceError(
            f"{self.name}: KMS key is {spec}; signing needs ECC_NIST_P256 (ES256) or "
            "HMAC_256 (HS256)"
        )

    @property
    def has_private(self) -> bool:
        """KMS signs (whether this caller may is KMS's IAM decision)."""
        return True

    @property
    def is_secret(self) -> bool:
        """HS256: no public half."""
        return self.alg == "HS256"

    def sign(self, data: bytes) -> bytes:
        """KMS `Sign` (DER turned into JOSE r || s) or `GenerateMac` over `data`."""
        algorithm = KMS_SIGNING_ALGORITHMS[self.alg][1]
        if self.alg == "HS256":
            answer = self._answered("GenerateMac", Message=data, MacAlgorithm=algorithm)
            return bytes(answer["Mac"])
        answer = self._answered("Sign", Message=data, MessageType="RAW", SigningAlgorithm=algorithm)
        r, s = utils.decode_dss_signature(answer["Signature"])
        return r.to_bytes(_COORDINATE, "big") + s.to_bytes(_COORDINATE, "big")

    def verify(self, data: bytes, signature: bytes) -> bool:
        """HS256: KMS `VerifyMac`; ES256: locally with the public key from `GetPublicKey`."""
        if self.alg == "HS256":
            if len(signature) != _MAC_BYTES:  # KMS would call it invalid input, not a bad MAC
                return False
            answer = self._answered(
                "VerifyMac", Message=data, Mac=signature, MacAlgorithm="HMAC_SHA_256"
            )
            return bool(answer.get("MacValid"))
        if self._public is None:
            self._public = self._public_key()
        return super().verify(data, signature)

    def _public_key(self) -> Any:
        answer = self._call("GetPublicKey")
        public = load_der_public_key(answer["PublicKey"])
        if not isinstance(public, ec.EllipticCurvePublicKey) or public.curve.name != "secp256r1":
            raise KeySourceError(f"{self.name}: the KMS key is not ECC_NIST_P256")
        return public

    @property
    def public_jwk(self) -> dict[str, Any]:
        """The ES256 public JWK (one `GetPublicKey` call); refused for HS256."""
        if self.is_secret:
            return super().public_jwk
        if self._public is None:
            self._public = self._public_key()
        members = JWK.from_pyca(self._public).export(as_dict=True)
        return {**{m: members[m] for m in ("kty", "crv", "x", "y")}, **self.jwk}

    def __repr__(self) -> str:
        return f"<AWS KMS {self.alg} signing key {self.kid!r} ({self.key_id})>"


def is_signing_uri(uri: str) -> bool:
    """Whether the KMS key `uri` names signs or makes MACs (`DescribeKey`'s KeyUsage)."""
    key_id, query, _ = parse_kms_uri(uri)
    client = kms_client(uri, query.get("region"), DEFAULT_ATTEMPTS, 5.0)
    usage = kms_call(client, "DescribeKey", uri, KeyId=key_id)["KeyMetadata"].get("KeyUsage")
    return usage in ("SIGN_VERIFY", "GENERATE_VERIFY_MAC")
