"""Wire formats behind one interface, `WireFormat`, registered in one table.

`RequestEncryptor`/`RequestDecryptor` pick a format from `REGISTRY` (by name to seal, by
`detect_format` to open) and apply the size limits and the JSON budget themselves, the same
way for every format. A new format is one module with one `WireFormat` instance, added here.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import MalformedBodyError
from ._protocol import Format, Opened, WireFormat
from .elastic import ELASTIC, ElasticBody, pack_body, unpack_body
from .jwe import JWE

__all__ = [
    "REGISTRY",
    "ElasticBody",
    "Format",
    "Opened",
    "WireFormat",
    "detect_format",
    "pack_body",
    "unpack_body",
]

#: Every format by name, in the order `detect_format` tries them.
REGISTRY: Mapping[Format, WireFormat] = {Format.ELASTIC: ELASTIC, Format.JWE: JWE}


def detect_format(body: str | bytes) -> Format:
    """The format whose shape `body` has: no dot is `elastic`, five parts is `jwe`."""
    if not isinstance(body, (str, bytes, bytearray)):
        raise MalformedBodyError(f"a body must be str or bytes, not {type(body).__name__}")
    for wire_format in REGISTRY.values():
        if wire_format.detect(body):
            return wire_format.name
    dots = body.count(".") if isinstance(body, str) else body.count(b".")
    raise MalformedBodyError(
        f"the body has {dots + 1} dot-separated parts: neither an elastic body (one part) "
        "nor a compact JWE (five parts)"
    )
