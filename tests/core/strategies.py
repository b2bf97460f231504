"""Hypothesis strategies shared by the common-path tests (tests/core/test_*_common_path.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hypothesis import strategies as st

#: Values a random protected-header member takes: every algorithm name either common path
#: accepts or refuses, the test sets' kids, and values of the wrong JSON type.
HEADER_VALUES: tuple[Any, ...] = (
    "RSA-OAEP",
    "RSA-OAEP-256",
    "A256GCM",
    "A128GCM",
    "A128CBC-HS256",
    "A256CBC-HS512",
    "dir",
    "DEF",
    "kibana_1",
    "oaep256",
    "nope",
    7,
    None,
    ["a"],
)


def header_members(names: Sequence[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Protected headers made of some of `names`, each with one of HEADER_VALUES."""
    return st.dictionaries(st.sampled_from(list(names)), st.sampled_from(HEADER_VALUES))
