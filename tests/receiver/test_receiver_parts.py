"""The receiver's per-body parts made cheap: ids and times (`_stamps`) and paired writes
(`protocol.PairedWrites`), each checked against what it replaces."""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from datetime import datetime, timezone
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from request_crypto.receiver._stamps import new_id, utc_now
from request_crypto.receiver.protocol import PairedWrites, http_protocol

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


class FakeTransport:
    """What a protocol writes, write by write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        assert not self.closing, "written after close"
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5000), "sockname": ("127.0.0.1", 80)}.get(name, default)

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def set_write_buffer_limits(self, *args: Any) -> None: ...


def test_paired_writes_join_a_head_and_its_body_and_flush_at_the_turns_end() -> None:
    async def run() -> None:
        transport = FakeTransport()
        paired = PairedWrites(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
        paired.write(b"head")
        paired.write(b"body")
        assert transport.writes == [b"headbody"]
        paired.write(b"alone")  # nothing follows in this turn
        assert transport.writes == [b"headbody"]
        await asyncio.sleep(0)
        assert transport.writes == [b"headbody", b"alone"]
        paired.write(b"last")
        paired.close()  # what is held goes first
        assert transport.writes[-1] == b"last" and transport.closing
        paired.write(b"late")  # after the transport closed: dropped, as a transport would
        await asyncio.sleep(0)
        assert transport.writes[-1] == b"last"

    asyncio.run(run())


@pytest.mark.parametrize("parser", ["h11", "httptools"])
def test_serves_protocols_write_a_small_answer_in_one_write(parser: str) -> None:
    """Through Uvicorn's own response cycle: head and body leave in one `transport.write`,
    byte for byte what two writes would have sent; keep-alive requests too."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        await receive()
        headers = [(b"x-a", b"1"), (b"content-length", b"11")]
        await send({"type": "http.response.start", "status": 202, "headers": headers})
        await send({"type": "http.response.body", "body": b'{"ok":true}'})

    async def run() -> list[bytes]:
        config = uvicorn.Config(app, http=http_protocol(parser), log_config=None)
        config.load()
        protocol = config.http_protocol_class(
            config=config, server_state=ServerState(), app_state={}
        )
        transport = FakeTransport()
        protocol.connection_made(transport)
        request = b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}"
        for _ in range(2):
            protocol.data_received(request)
            for _ in range(20):
                await asyncio.sleep(0)
        protocol.connection_lost(None)
        return transport.writes

    writes = asyncio.run(run())
    assert len(writes) == 2, writes  # one per answer
    for answer in writes:
        assert answer.startswith(b"HTTP/1.1 202 ")
        head, body = answer.split(b"\r\n\r\n", 1)
        assert b"\r\nx-a: 1" in head and b"content-length: 11" in head.lower()
        assert body == b'{"ok":true}'
