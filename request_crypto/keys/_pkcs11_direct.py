"""PKCS#11 calls made straight through the module's function list: the RSA-OAEP unwrap's two,
and C_Finalize/C_Initialize to initialise the module with OS locking.

OS locking: python-pkcs11 calls C_Initialize(NULL), which tells the module the application
does not call it from several threads (SoftHSM then takes no locks, and two threads in it
crash). `_pkcs11_session.Module` initialises it again with CKF_OS_LOCKING_OK, so that the
decrypt threads can each use their own session at once; python-pkcs11's own `initialized`
flag stays true throughout, which is the module's state again once this succeeds.

The unwrap: python-pkcs11's decrypt releases the GIL three times (C_DecryptInit, a length
query, C_Decrypt); on the serialised path each short release let a woken decrypt thread take
the GIL for its ~60 µs of Python while the token waited. Here C_DecryptInit runs holding the
GIL, the output is one modulus long (no query) and only C_Decrypt releases it, so the GIL
changes hands once, while the token works (docs/performance.md). Same loaded library, session
and key handles as python-pkcs11's (one dlopen per process); answers become python-pkcs11's
exception classes, so callers classify them as before. Where the ABI assumed here does not
hold (Windows packs PKCS#11 structures to one byte) or the function list cannot be read,
`direct_calls` is None: python-pkcs11 decrypts, and the module keeps its lock.
"""

from __future__ import annotations

import ctypes
import sys
import threading
from collections.abc import Callable

from pkcs11 import exceptions as p11

__all__ = ["CKR_CRYPTOKI_NOT_INITIALIZED", "DirectCalls", "direct_calls", "oaep_mechanism"]

_ULONG = ctypes.c_ulong  # CK_ULONG is `unsigned long` on every platform
_CKM_RSA_PKCS_OAEP = 0x9
_CKZ_DATA_SPECIFIED = 0x1
_CKF_OS_LOCKING_OK = 0x2
#: C_Finalize's answer for a module that is not initialised (then C_Initialize may follow).
CKR_CRYPTOKI_NOT_INITIALIZED = 0x190
#: C_Initialize, C_Finalize, C_DecryptInit and C_Decrypt in CK_FUNCTION_LIST (PKCS#11 2.40 and
#: 3.x, 0-based, after the version): the order is fixed by the standard.
_INITIALIZE, _FINALIZE, _DECRYPT_INIT, _DECRYPT = 0, 1, 33, 34


class _Mechanism(ctypes.Structure):
    _fields_ = (("mechanism", _ULONG), ("parameter", ctypes.c_void_p), ("length", _ULONG))


class _OAEPParams(ctypes.Structure):
    _fields_ = (
        ("hash", _ULONG),
        ("mgf", _ULONG),
        ("source", _ULONG),
        ("source_data", ctypes.c_void_p),
        ("source_length", _ULONG),
    )


class _InitializeArgs(ctypes.Structure):
    """CK_C_INITIALIZE_ARGS: no mutex callbacks, the flags, pReserved."""

    _fields_ = (
        ("create_mutex", ctypes.c_void_p),
        ("destroy_mutex", ctypes.c_void_p),
        ("lock_mutex", ctypes.c_void_p),
        ("unlock_mutex", ctypes.c_void_p),
        ("flags", _ULONG),
        ("reserved", ctypes.c_void_p),
    )


class _FunctionList(ctypes.Structure):
    _fields_ = (
        ("major", ctypes.c_ubyte),
        ("minor", ctypes.c_ubyte),
        ("functions", ctypes.c_void_p * (_DECRYPT + 1)),
    )


class OAEPMechanism:
    """A CKM_RSA_PKCS_OAEP mechanism with its parameters, built once and only read after."""

    def __init__(self, hash_mechanism: int, mgf: int) -> None:
        self.params = _OAEPParams(hash_mechanism, mgf, _CKZ_DATA_SPECIFIED, None, 0)
        self.mechanism = _Mechanism(
            _CKM_RSA_PKCS_OAEP,
            ctypes.cast(ctypes.pointer(self.params), ctypes.c_void_p),
            ctypes.sizeof(self.params),
        )
        self.reference = ctypes.byref(self.mechanism)


def oaep_mechanism(hash_mechanism: int, mgf: int) -> OAEPMechanism:
    """CKM_RSA_PKCS_OAEP with this hash (a CKM_SHA* value) and MGF1 (a CKG_MGF1_* value)."""
    return OAEPMechanism(hash_mechanism, mgf)


#: PKCS#11 answers to C_DecryptInit/C_Decrypt -> python-pkcs11's exception (as it maps them).
_ERRORS: dict[int, type[p11.PKCS11Error]] = {
    0x02: p11.HostMemory,
    0x05: p11.GeneralError,
    0x06: p11.FunctionFailed,
    0x07: p11.ArgumentsBad,
    0x20: p11.DataInvalid,
    0x21: p11.DataLenRange,
    0x30: p11.DeviceError,
    0x31: p11.DeviceMemory,
    0x32: p11.DeviceRemoved,
    0x40: p11.EncryptedDataInvalid,
    0x41: p11.EncryptedDataLenRange,
    0x50: p11.FunctionCancelled,
    0x60: p11.KeyHandleInvalid,
    0x62: p11.KeySizeRange,
    0x63: p11.KeyTypeInconsistent,
    0x70: p11.MechanismInvalid,
    0x71: p11.MechanismParamInvalid,
    0x82: p11.ObjectHandleInvalid,
    0x90: p11.OperationActive,
    0x91: p11.OperationNotInitialized,
    0xA3: p11.PinExpired,
    0xB0: p11.SessionClosed,
    0xB3: p11.SessionHandleInvalid,
    0xE0: p11.TokenNotPresent,
    0xE1: p11.TokenNotRecognised,
    0x101: p11.UserNotLoggedIn,
}


def _error(rv: int) -> p11.PKCS11Error:
    kind = _ERRORS.get(rv)
    return kind() if kind is not None else p11.PKCS11Error(f"Unmapped error code {hex(rv)}")


_ARGS_TYPE = ctypes.CFUNCTYPE(_ULONG, ctypes.c_void_p)  # C_Initialize, C_Finalize
_INIT_TYPE = ctypes.PYFUNCTYPE(_ULONG, _ULONG, ctypes.c_void_p, _ULONG)  # keeps the GIL
_DECRYPT_TYPE = ctypes.CFUNCTYPE(  # releases the GIL
    _ULONG, _ULONG, ctypes.c_char_p, _ULONG, ctypes.c_void_p, ctypes.POINTER(_ULONG)
)


class DirectCalls:
    """C_Initialize, C_Finalize, C_DecryptInit and C_Decrypt of one loaded module."""

    def __init__(self, library: ctypes.CDLL) -> None:
        functions = ctypes.POINTER(_FunctionList)()
        rv = library.C_GetFunctionList(ctypes.byref(functions))
        if rv != 0 or not functions:
            raise OSError(f"C_GetFunctionList answered {hex(rv)}")
        table = functions.contents.functions
        if not all(table[i] for i in (_INITIALIZE, _FINALIZE, _DECRYPT_INIT, _DECRYPT)):
            raise OSError("the module's function list lacks C_Initialize/C_Finalize/C_Decrypt")
        self._library = library  # keeps the module loaded while the pointers are in use
        self._initialize: Callable[..., int] = _ARGS_TYPE(table[_INITIALIZE])
        self._finalize: Callable[..., int] = _ARGS_TYPE(table[_FINALIZE])
        self._init: Callable[..., int] = _INIT_TYPE(table[_DECRYPT_INIT])
        self._decrypt: Callable[..., int] = _DECRYPT_TYPE(table[_DECRYPT])

    def initialize(self, *, os_locking: bool) -> int:
        """C_Initialize with CKF_OS_LOCKING_OK (or NULL: no locking); its CKR_ answer."""
        if not os_locking:
            return self._initialize(None)
        args = _InitializeArgs(None, None, None, None, _CKF_OS_LOCKING_OK, None)
        return self._initialize(ctypes.byref(args))

    def finalize(self) -> int:
        """C_Finalize(NULL); its CKR_ answer."""
        return self._finalize(None)

    def decrypt(
        self, session: int, key: int, mechanism: OAEPMechanism, data: bytes, size: int
    ) -> bytes:
        """The plaintext of `data` under `key`; `size` bytes are room enough (the modulus)."""
        rv = self._init(session, mechanism.reference, key)
        if rv:
            raise _error(rv)
        out = ctypes.create_string_buffer(size)
        length = _ULONG(size)
        rv = self._decrypt(session, data, len(data), out, ctypes.byref(length))
        if rv:  # any answer but CKR_BUFFER_TOO_SMALL ends the operation (PKCS#11 5.2)
            if rv == 0x150:  # never for an OAEP plaintext: ask for its size, then read it
                out = ctypes.create_string_buffer(length.value)
                rv = self._decrypt(session, data, len(data), out, ctypes.byref(length))
            if rv:
                raise _error(rv)
        return out.raw[: length.value]


_LOCK = threading.Lock()
_DIRECT: dict[str, DirectCalls | None] = {}


def direct_calls(module_path: str) -> DirectCalls | None:
    """The module's `DirectCalls`, or None where only python-pkcs11 is used (see above)."""
    with _LOCK:
        if module_path not in _DIRECT:
            _DIRECT[module_path] = _load(module_path)
        return _DIRECT[module_path]


def _load(module_path: str) -> DirectCalls | None:
    if sys.platform == "win32":  # CK_ULONG is 32-bit and structures are packed to 1 byte
        return None
    try:
        return DirectCalls(ctypes.CDLL(module_path))
    except (OSError, AttributeError):
        return None
