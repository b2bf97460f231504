"""Optional accelerators for large payloads: `orjson` (writing JSON), `msgspec` (reading
JSON) and `pybase64` (SIMD base64).

At 5 MB, JSON and base64 are most of the work: the standard library's json.dumps alone takes
longer than the JavaScript original's whole encrypt, and binascii decodes at a few hundred MB/s.
msgspec reads JSON ~1.7x faster than json and, unlike orjson (~12x the input in transient
memory), builds the result directly, so a large body costs no more memory than with json.
When these packages are installed (``pip install 'request_crypto[fast]'``), the hot paths use
them; every use is guarded so the result is the one the standard library gives, and anything
the guards cannot vouch for takes the standard path (see _json.py and _b64.py). Setting
``REQUEST_CRYPTO_ACCELERATORS=0`` turns them off (tests and scripts/bench.py compare both).

Each is imported on first use (PEP 562): orjson and msgspec together cost ~20 ms of start-up,
which `request-crypto seal`, whose header needs neither, should not pay.
"""

from __future__ import annotations

import os
import sys
from types import ModuleType
from typing import TYPE_CHECKING

__all__ = ["describe", "msgspec", "orjson", "pybase64"]

_ACCELERATORS = ("orjson", "msgspec", "pybase64")


def _optional(name: str) -> ModuleType | None:
    if os.environ.get("REQUEST_CRYPTO_ACCELERATORS", "1").strip().lower() in {"0", "no", "off"}:
        return None
    try:
        return __import__(name)
    except ImportError:
        return None


if TYPE_CHECKING:
    orjson: ModuleType | None
    msgspec: ModuleType | None
    pybase64: ModuleType | None
else:

    def __getattr__(name: str) -> ModuleType | None:
        """Import an accelerator on first use and keep it (or None) as a plain attribute."""
        if name not in _ACCELERATORS:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        module = _optional(name)
        setattr(sys.modules[__name__], name, module)
        return module


def describe() -> dict[str, str]:
    """Which implementation each hot path uses, for benchmark reports."""

    def version(module: ModuleType) -> str:
        return str(getattr(module, "__version__", "?"))

    this = sys.modules[__name__]
    orjson, msgspec, pybase64 = (getattr(this, name) for name in _ACCELERATORS)
    return {
        "json": f"orjson {version(orjson)}" if orjson else "json (stdlib)",
        "json reading": f"msgspec {version(msgspec)}" if msgspec else "json (stdlib)",
        "base64": f"pybase64 {version(pybase64)}" if pybase64 else "binascii (stdlib)",
    }
