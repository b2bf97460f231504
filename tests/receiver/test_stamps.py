"""The receiver's per-body ids and times (`_stamps`), checked against what they replace."""

from __future__ import annotations

import os
import re
import uuid
from datetime import datetime, timezone

import pytest

from request_crypto.receiver._stamps import new_id, utc_now

UUID_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def test_new_id_is_a_random_uuid4_text() -> None:
    ids = [new_id() for _ in range(3000)]  # several blocks of random bytes
    assert len(set(ids)) == len(ids)
    for text in ids:
        assert UUID_TEXT.fullmatch(text), text
        parsed = uuid.UUID(text)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122 and str(parsed) == text
    # every random bit varies: no byte of the block is reused or fixed
    assert len({text[:8] for text in ids}) == len(ids)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    new_id()  # the parent holds a block
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, then leave at once
        os.write(write, " ".join(new_id() for _ in range(4)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 4096).decode().split()
    os.close(read)
    parent = [new_id() for _ in range(4)]
    assert len(child) == 4 and not set(child) & set(parent)


def test_utc_now_is_datetimes_text() -> None:
    for _ in range(200):
        before = datetime.now(timezone.utc)
        text = utc_now()
        after = datetime.now(timezone.utc)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", text), text
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        assert before <= parsed <= after
