"""One exception hierarchy: every failure the library raises on purpose is a RequestCryptoError.

Messages are written for the person reading a log: they say what is wrong and what to do, and
never carry key material, passphrases or plaintext. Every failure of a cryptographic step
(RSA unwrap, tag, inflate, passphrase length, payload decryption) raises the same
DecryptionError with the same message, so an attacker learns nothing about which step
rejected a body.

The hierarchy (`receiver` classes live in `request_crypto.receiver`; the rest here)::

    RequestCryptoError
    ├── MissingKidError (LookupError)       encrypt to a kid the set lacks
    ├── NoKeyFoundError (LookupError)       a body for a kid this receiver cannot open
    │   ├── MissingKidInBodyError           a kid-less `jwe` body no single key fits
    │   └── NoRecipientKeyError             a sealed file for none of the set's keys
    ├── DecryptionError                     any cryptographic failure, one message
    │   ├── HeaderAuthenticationError       a sealed header that does not authenticate
    │   └── SegmentError                    a sealed segment that does not authenticate
    │       └── TruncatedError              sealed data cut at a segment boundary
    ├── MalformedBodyError (ValueError)     not shaped like either wire format
    │   ├── UnsupportedAlgorithmError       alg/enc outside the allow-list, `crit`
    │   └── SealedFormatError               not a sealed file, or an absurd header
    ├── PayloadTooLargeError (ValueError)   over a size limit
    │   └── JSONBudgetError                 more JSON values than the budget
    ├── InvalidJWKSError (ValueError)       an unusable key set or key
    ├── SignatureError                      a signed body whose signature does not verify
    │   ├── UnknownSignerError              signed with a kid the verification set lacks
    │   └── UnsignedBodyError               no signature where one is required
    ├── ClaimsError                         a verified JWT whose claims are refused
    │   └── TokenExpiredError               its `exp` has passed
    ├── KeySetUnavailableError              a remote verification key set cannot be fetched
    ├── InvalidArgumentError (ValueError)   a caller's argument (a kid, a size, a setting)
    │   └── receiver.sinks.SinkURLError     a sink URL naming no known sink
    ├── KeyFileError (OSError)              a key-set file cannot be read, written, locked
    │   ├── WrongPasswordError              an encrypted key-set file the password cannot open
    │   └── WrongWrappingKeyError           a KMS-wrapped key-set file its KMS key cannot open
    ├── KeySourceError                      an HSM/KMS key source that cannot work as configured
    │   └── KeySourceUnavailableError       an HSM/KMS that is down, slow or throttling (retry)
    ├── PinInURIWarning (UserWarning)       a warning: a PKCS#11 PIN written into a URI
    ├── BatchError                          some items of a batch failed
    ├── UsageError (alias CLIError)         what a command line was given
    ├── SinkUnavailableError                the receiver could not store a payload
    ├── OutputFileError (OSError)           an output file cannot be made or put in place
    ├── InputError (OSError)                INPUT cannot be read, or stdout closed early
    ├── S3Error (OSError)                   an s3:// INPUT/OUTPUT: bad URI, missing, denied, down
    └── InternalSignal                      private control flow, never escapes the package
        (the receiver's refusals, a fast path declining an input, a duplicate JSON member)
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "BatchError",
    "CLIError",
    "ClaimsError",
    "DecryptionError",
    "HeaderAuthenticationError",
    "InputError",
    "InternalSignal",
    "InvalidArgumentError",
    "InvalidJWKSError",
    "JSONBudgetError",
    "KeyFileError",
    "KeySetUnavailableError",
    "KeySourceError",
    "KeySourceUnavailableError",
    "MalformedBodyError",
    "MissingKidError",
    "MissingKidInBodyError",
    "NoKeyFoundError",
    "NoRecipientKeyError",
    "OutputFileError",
    "PayloadTooLargeError",
    "PinInURIWarning",
    "RequestCryptoError",
    "S3Error",
    "SealedFormatError",
    "SegmentError",
    "SignatureError",
    "SinkUnavailableError",
    "TokenExpiredError",
    "TruncatedError",
    "UnknownSignerError",
    "UnsignedBodyError",
    "UnsupportedAlgorithmError",
    "UsageError",
    "WrongPasswordError",
    "WrongWrappingKeyError",
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


class WrongPasswordError(KeyFileError):
    """An encrypted key-set file did not open: the password is wrong or the file was altered."""

    def __init__(self, path: object) -> None:
        super().__init__(
            f"{path}: the password does not open this encrypted key set (wrong password, "
            "or the file was altered)"
        )


class WrongWrappingKeyError(KeyFileError):
    """A KMS-wrapped key-set file did not open: KMS says the data key is not its key's (or not
    for this purpose), or the file was altered. Never an outage (KeySourceUnavailableError)."""

    def __init__(self, path: object, key: str) -> None:
        super().__init__(
            f"{path}: KMS key {key} does not open this key set (it was wrapped by another "
            "key or for another purpose, or the file was altered)"
        )


class KeySourceError(RequestCryptoError):
    """A key source (HSM, KMS) cannot work as configured: a bad URI, no such token or key,
    a wrong PIN, or an algorithm the module cannot do. Fix the configuration; retrying won't."""


class KeySourceUnavailableError(KeySourceError):
    """The HSM or KMS holding a key is unreachable, slow or throttling: retry later.

    Never a verdict on the body: the receiver answers 503 with Retry-After, not 400.
    `source` names the source (a URI without secrets); `retry_after` is in seconds.
    """

    def __init__(self, source: str, reason: str, *, retry_after: int = 5) -> None:
        super().__init__(f"key source {source} is unavailable: {reason}; retry later")
        self.source = source
        self.retry_after = retry_after


class PinInURIWarning(RequestCryptoError, UserWarning):
    """A warning, not raised: a PKCS#11 PIN given as `pin-value` sits in a command line or
    config file; `pin-source=file:PATH` keeps it out of both."""


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


class UsageError(RequestCryptoError):
    """A problem with what a command line was given (an INPUT, a kid, a path, an option)."""


#: The name the CLI modules used first.
CLIError = UsageError


class SinkUnavailableError(RequestCryptoError):
    """The receiver's sink writer is stopped or the sink raised: the payload was not stored."""


class InternalSignal(RequestCryptoError):
    """Private control flow inside the package (a refusal, a fast path declining an input).

    Always caught where it is raised; it subclasses RequestCryptoError only so that every
    exception class the package defines does.
    """


# Sealed files (request_crypto.sealed) and the outputs commands write.


class SealedFormatError(MalformedBodyError):
    """Not a sealed file, or one whose header or size no writer produces (checked keyless)."""


class SegmentError(DecryptionError):
    """A segment failed authentication: the sealed file is damaged, cut short or altered."""

    MESSAGE = (
        "unable to open the sealed file: a segment failed authentication (the file is "
        "damaged, cut short or altered, or its data belongs to another file)"
    )


class TruncatedError(SegmentError):
    """The sealed data ends early: it stops at a segment boundary before the final segment."""

    MESSAGE = (
        "the sealed file ends early: its data stops before the final segment "
        "(truncated in transit or on disk); fetch the whole file again"
    )


class HeaderAuthenticationError(DecryptionError):
    """The file key did not unwrap, or the header's MAC does not match it."""

    MESSAGE = (
        "unable to open the sealed file: its header does not authenticate with this key set "
        "(the file was not sealed to this key, or its header was altered)"
    )


class NoRecipientKeyError(NoKeyFoundError):
    """None of the file's recipients is a private key the given set holds."""

    def __init__(self, kids: Iterable[str]) -> None:
        self.kids = list(kids)
        Exception.__init__(
            self,
            f"the sealed file is for kid(s) {', '.join(map(repr, self.kids))}; the key set "
            "holds the private key of none of them",
        )
        self.kid = None


class OutputFileError(RequestCryptoError, OSError):
    """The output file could not be created, written or put in place."""


class InputError(RequestCryptoError, OSError):
    """INPUT cannot be read, or stdout was closed early."""


class S3Error(RequestCryptoError, OSError):
    """An s3:// INPUT or OUTPUT failed: a bad URI, no such bucket or object, access denied,
    an unreachable endpoint. The message names the object and what to fix."""


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


# Signed bodies (nested JWT: a JWS inside the `jwe` format).


class SignatureError(RequestCryptoError):
    """A signed body's JWS is refused: bad signature, disallowed header, wrong key type.

    The message says what the receiver expected (a key's alg, a header it refuses), never which
    byte of a signature failed.
    """


class UnknownSignerError(SignatureError):
    """The JWS names a kid (or an alg) that no key of the verification set fits."""


class UnsignedBodyError(SignatureError):
    """The body carries no signature, and the receiver requires one."""

    def __init__(self, detail: str = "") -> None:
        super().__init__(
            "the body is not signed, and this receiver requires a signed body (a JWT inside "
            "the jwe, cty 'JWT'): senders must sign with their key set"
            + (f" ({detail})" if detail else "")
        )


class ClaimsError(RequestCryptoError):
    """A JWT whose signature verified, but whose claims (iss, aud, nbf, exp...) are refused."""

    def __init__(self, message: str, claim: str) -> None:
        super().__init__(message)
        self.claim = claim


class TokenExpiredError(ClaimsError):
    """The JWT's `exp` (plus the leeway) has passed: the sender must make a new body."""


class KeySetUnavailableError(RequestCryptoError):
    """A remote key set could not be fetched and no earlier copy is held (retry later)."""
