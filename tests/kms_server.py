"""moto's standalone server for the KMS and S3 tests, with clearly labelled TEST SHIMS.

Run as `python tests/kms_server.py PORT CONTROL_DIR`. Everything is moto 5.2.5's own server
(pinned in the dev extra) except:

TEST SHIM 1 (RSA unwrap): moto 5.2.5 cannot `Decrypt` RSA-OAEP ciphertext made outside it
(its RSA keys decrypt only moto's own symmetric blobs), so `Decrypt` with
EncryptionAlgorithm RSAES_OAEP_SHA_1/_256 is answered here with the key's RSA private key and
OAEP, as AWS KMS does. Any other Decrypt goes to moto unchanged.

TEST SHIM 2 (faults): when CONTROL_DIR/throttle holds a number N > 0, the next N Decrypt and
DescribeKey calls (the unwrap and the health check) answer ThrottlingException (N is
decremented), so the tests see botocore's retries and what happens once they run out.
"""

from __future__ import annotations

import json
import sys
from base64 import b64encode
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from moto.core.exceptions import JsonRESTError
from moto.kms.exceptions import InvalidCiphertextException
from moto.kms.responses import KmsResponse
from moto.server import main

OAEP = {"RSAES_OAEP_SHA_1": hashes.SHA1, "RSAES_OAEP_SHA_256": hashes.SHA256}
CONTROL = Path(sys.argv[2])
moto_decrypt = KmsResponse.decrypt
moto_describe_key = KmsResponse.describe_key


def _throttled() -> bool:
    path = CONTROL / "throttle"
    left = int(path.read_text()) if path.exists() else 0
    if left > 0:
        path.write_text(str(left - 1))
    return left > 0


def decrypt(self: KmsResponse) -> str:
    """KMS Decrypt; RSA-OAEP done with the key's private key (see TEST SHIM 1)."""
    if _throttled():
        raise JsonRESTError("ThrottlingException", "Rate exceeded")
    algorithm = self._get_param("EncryptionAlgorithm")
    if algorithm not in OAEP:
        return moto_decrypt(self)
    key = self.kms_backend.describe_key(self._get_param("KeyId"))
    if key.key_usage != "ENCRYPT_DECRYPT" or algorithm not in (key.encryption_algorithms or []):
        raise JsonRESTError("InvalidKeyUsageException", f"{algorithm} is not valid for this key")
    hash_type = OAEP[algorithm]
    try:
        plaintext = key.private_key.private_key.decrypt(
            self._get_param("CiphertextBlob"),
            padding.OAEP(padding.MGF1(hash_type()), hash_type(), None),
        )
    except ValueError:
        raise InvalidCiphertextException() from None
    return json.dumps(
        {
            "Plaintext": b64encode(plaintext).decode(),
            "KeyId": key.arn,
            "EncryptionAlgorithm": algorithm,
        }
    )


def describe_key(self: KmsResponse) -> str:
    """KMS DescribeKey, throttled like Decrypt (see TEST SHIM 2)."""
    if _throttled():
        raise JsonRESTError("ThrottlingException", "Rate exceeded")
    answer: str = moto_describe_key(self)
    return answer


KmsResponse.decrypt = decrypt  # type: ignore[method-assign]
KmsResponse.describe_key = describe_key  # type: ignore[method-assign]

if __name__ == "__main__":
    main(["-H", "127.0.0.1", "-p", sys.argv[1]])
