"""One exception hierarchy: every failure the library raises on purpose is a RequestCryptoError.

Messages are written for the person reading a log: they say what is wrong and what to do, and
never carry key material, passphrases or plaintext. Every failure of a cryptographic step
(RSA unwrap, tag, inflate, passphrase length, payload decryption) raises the same
DecryptionError with the same message, so an attacker learns nothing about which step
rejected a body.
"""

from __future__ import annotations

__all__ = [
    "BatchError",
    "DecryptionError",
    "InvalidArgumentError",
    "InvalidJWKSError",
    "JSONBudgetError",
    "KeyFileError",
    "MalformedBodyError",
    "MissingKidError",
    "MissingKidInBodyError",
    "NoKeyFoundError",
    "PayloadTooLargeError",
    "RequestCryptoError",
    "UnsupportedAlgorithmError",
]


class RequestCryptoError(Exception):
    """Base class: catch this to handle every failure of the library."""


class MissingKidError(RequestCryptoError, LookupError):
    """The sender asked to encrypt to a kid that is not in its public key set."""

    def __init__(self, kid: str) -> None:
        # The exact text of the JavaScript original, which callers match on.
        super().__init__(f"Missing kid ({kid}).")
        self.kid = kid


class NoKeyFoundError(RequestCryptoError, LookupError):
    """The body names a kid this receiver holds no private key for (or names none)."""

    def __init__(self, kid: str | None = None) -> None:
        # The exact text of the JavaScript original; the kid is kept as an attribute only,
        # because it comes from the (untrusted) body.
        super().__init__("no key found")
        self.kid = kid


class DecryptionError(RequestCryptoError):
    """A body failed authentication or decryption. Deliberately says nothing about which step."""

    MESSAGE = (
        "unable to decrypt the body: it was not encrypted to this key, or it was altered in transit"
    )

    def __init__(self) -> None:
        super().__init__(self.MESSAGE)


class MalformedBodyError(RequestCryptoError, ValueError):
    """The body is not shaped like either wire format (bad base64, JSON, part count, types)."""


class UnsupportedAlgorithmError(MalformedBodyError):
    """The JWE header names an algorithm outside the allow-list, or a `crit` extension."""


class PayloadTooLargeError(RequestCryptoError, ValueError):
    """A body, wrapped key or decompressed plaintext is over its configured limit."""

    def __init__(self, what: str, size: int, limit: int) -> None:
        super().__init__(
            f"{what} is {size} bytes, over the limit of {limit} bytes; "
            "raise the limit if such sizes are expected"
        )
        self.size = size
        self.limit = limit


class JSONBudgetError(PayloadTooLargeError):
    """A decrypted payload holds more JSON values than the receiver's budget allows."""

    def __init__(self, what: str, count: int, limit: int, setting: str) -> None:
        RequestCryptoError.__init__(
            self,
            f"{what} holds {count} JSON values (member names included), over the limit of "
            f"{limit}; raise {setting} if such payloads are expected",
        )
        self.size = count
        self.limit = limit


class InvalidJWKSError(RequestCryptoError, ValueError):
    """A key set (or one key in it) is not a usable RSA JWK set."""


class InvalidArgumentError(RequestCryptoError, ValueError):
    """A caller passed something the library cannot use (empty passphrase, non-JSON value...)."""


class KeyFileError(RequestCryptoError, OSError):
    """A key-set file could not be read, written or locked."""


class BatchError(RequestCryptoError):
    """Some items of a batch failed; `results` holds every item's value or exception, in order."""

    def __init__(self, results: list[object], failures: dict[int, RequestCryptoError]) -> None:
        first = min(failures)
        super().__init__(
            f"{len(failures)} of {len(results)} items failed (first at index {first}: "
            f"{failures[first]}); see .failures and .results"
        )
        self.results = results
        self.failures = failures


class MissingKidInBodyError(NoKeyFoundError):
    """A `jwe` body names no kid, and not exactly one key of the set fits its `alg`.

    A kid-less JWE (as RFC 7516 A.1 and most JOSE libraries write it) is opened with the one
    private key that fits; with none or several, the sender has to name its kid.
    """

    def __init__(self, fitting: int, alg: str) -> None:
        keys = "no key" if fitting == 0 else f"{fitting} keys"
        RequestCryptoError.__init__(
            self,
            f"the body names no kid and {keys} of this set could open it ({alg}); "
            "senders must set the kid header",
        )
        self.kid = None
        self.fitting = fitting
