"""The receiver's limits: only the body size is its own; the rest are the library's."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("starlette")  # the `server` extra; CI installs it, so this runs there

from request_crypto import DEFAULT_LIMITS, Limits
from request_crypto.receiver import create_app


@pytest.mark.parametrize("max_body", [1024 * 1024, 64 * 1024 * 1024])
def test_the_receiver_changes_only_the_body_limit(
    private_jwks: dict[str, Any], max_body: int
) -> None:
    app = create_app(private_jwks, sink="-", max_body=max_body)
    limits = app.state.receiver.keys.decryptor.limits
    assert limits == Limits(max_body_size=max_body)
    # The plaintext bound stays the library's 16 MiB, not the body's (it was max_body).
    assert limits.max_inflated_size == DEFAULT_LIMITS.max_inflated_size == 16 * 1024 * 1024
