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
"""

from __future__ import annotations

import os
from types import ModuleType

__all__ = ["describe", "msgspec", "orjson", "pybase64"]


def _optional(name: str) -> ModuleType | None:
    if os.environ.get("REQUEST_CRYPTO_ACCELERATORS", "1").strip().lower() in {"0", "no", "off"}:
        return None
    try:
        return __import__(name)
    except ImportError:
        return None


orjson: ModuleType | None = _optional("orjson")
msgspec: ModuleType | None = _optional("msgspec")
pybase64: ModuleType | None = _optional("pybase64")


def describe() -> dict[str, str]:
    """Which implementation each hot path uses, for benchmark reports."""

    def version(module: ModuleType) -> str:
        return str(getattr(module, "__version__", "?"))

    return {
        "json": f"orjson {version(orjson)}" if orjson else "json (stdlib)",
        "json reading": f"msgspec {version(msgspec)}" if msgspec else "json (stdlib)",
        "base64": f"pybase64 {version(pybase64)}" if pybase64 else "binascii (stdlib)",
    }
