"""Attacks on the WebSocket framing of `/v1/ws` (issue 9, points 2, 5 and 13).

The server's own protocol output (pongs, close frames) counts against the outbound bound
and reading pauses while the peer does not read; a message may come in at most
`TIDINGS_MAX_FRAGMENTS` fragments and `TIDINGS_MAX_FRAME` bytes in all; RFC 6455's close
codes are used and sent before the socket goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest
from websockets.frames import Close, Frame, Opcode

from tests.security.attacks import RSS_BUDGET_MIB, ServerErrors
from tests.security.memory import sampled_rss
from tests.server.harness import RawClient, Server, make_token, running_server

#: What a ping flood may write before the test stops it (the server stops reading long
#: before: its write buffer's mark and the kernel's buffers are a few MiB at most).
FLOOD_BYTES = 48 * 1024 * 1024


def wire(opcode: Opcode, data: bytes = b"", *, fin: bool = True) -> bytes:
    """One masked client frame, as bytes on the wire."""
    return Frame(opcode, data, fin=fin).serialize(mask=True)


async def connected_raw(server: Server, *, rcvbuf: int | None = None) -> RawClient:
    raw = await RawClient.open(server.ws_url, rcvbuf=rcvbuf)
    reply = await raw.request({"type": "connect", "token": make_token("alice")})
    assert reply["type"] == "connected"
    return raw


def buffered_output(server: Server) -> int:
    """The most output the server holds for any one socket: its queue plus what its
    transport has not written yet."""
    assert server.node is not None
    most = 0
    for conn in server.node.connections:
        socket = conn.socket
        if socket.transport is not None and not socket.transport.is_closing():
            most = max(most, socket.queued_bytes + socket.transport.get_write_buffer_size())
    return most


async def ping_flood(raw: RawClient, server: Server, *, seconds: float = 5.0) -> tuple[int, bool]:
    """Send pings for up to `seconds` without reading a pong. Returns the most output the
    server held for one socket meanwhile, and whether the server stopped reading (a
    drain of our 260 KB rounds made no progress for over a second)."""
    payload = b"p" * 125
    sent = 0
    most = 0
    deadline = time.monotonic() + seconds
    try:
        while sent < FLOOD_BYTES and time.monotonic() < deadline:
            for _ in range(2000):
                raw.protocol.send_ping(payload)
            raw._write()
            sent += 2000 * 131
            async with asyncio.timeout(1.5):
                await raw.writer.drain()
            most = max(most, buffered_output(server))
    except (TimeoutError, ConnectionError):
        return max(most, buffered_output(server)), True
    return max(most, buffered_output(server)), False


@pytest.mark.parametrize("connected", [True, False], ids=["after connect", "before connect"])
async def test_unread_pongs_make_the_server_stop_reading_with_memory_bounded(
    tmp_path: Path, connected: bool, server_errors: ServerErrors
) -> None:
    async with running_server(tmp_path) as server:
        if connected:
            raw = await connected_raw(server, rcvbuf=4096)
        else:
            raw = await RawClient.open(server.ws_url, rcvbuf=4096)
        async with sampled_rss() as rss:
            held, stopped = await ping_flood(raw, server)
        raw.abort()
        await raw.close()
    # Reading paused at the transport's mark, so the pongs owed stay within the bound.
    assert stopped, "the server went on reading pings whose pongs nobody read"
    assert held <= server.config.queue_bytes, held
    assert rss.growth_mib < RSS_BUDGET_MIB, rss.growth_mib
    assert not server_errors.lines()


async def test_pongs_over_the_outbound_bound_close_4009(tmp_path: Path) -> None:
    # A bound below the transport's own mark: the pongs pass it before writing pauses.
    async with running_server(tmp_path, queue_bytes=16_384) as server:
        raw = await connected_raw(server, rcvbuf=4096)
        await ping_flood(raw, server, seconds=1.0)
        try:
            assert await raw.wait_closed(timeout=10) == 4009
        finally:
            raw.abort()
            await raw.close()
        assert server.node is not None
        registry = server.node.metrics.registry
        assert registry.get_sample_value("tidings_slow_consumer_closes_total") == 1.0


async def test_a_message_in_more_fragments_than_the_limit_closes_1009_with_memory_bounded(
    server: Server, server_errors: ServerErrors
) -> None:
    raw = await connected_raw(server)
    empty = wire(Opcode.CONT, fin=False)
    async with sampled_rss() as rss:
        raw.writer.write(wire(Opcode.TEXT, b"[", fin=False))
        with contextlib.suppress(ConnectionError):
            # 200,000 empty continuations: before the limit they all piled up.
            for _ in range(20):
                raw.writer.write(empty * 10_000)
                await raw.writer.drain()
        try:
            assert await raw.wait_closed() == 1009
        finally:
            raw.abort()
            await raw.close()
    assert rss.growth_mib < RSS_BUDGET_MIB, rss.growth_mib
    assert not server_errors.lines()


async def test_the_fragment_limit_is_a_setting_and_a_message_within_it_is_handled(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path, max_fragments=8) as server:
        raw = await connected_raw(server)
        text = b'{"type": "ping", "id": 99}'
        parts = [text[i : i + 4] for i in range(0, len(text), 4)]  # 7 fragments
        raw.writer.write(wire(Opcode.TEXT, parts[0], fin=False))
        for part in parts[1:-1]:
            raw.writer.write(wire(Opcode.CONT, part, fin=False))
        raw.writer.write(wire(Opcode.CONT, parts[-1]))
        assert [f["re"] for f in await raw.frames()] == [99]
        raw.writer.write(wire(Opcode.TEXT, b"[", fin=False))
        for _ in range(9):
            raw.writer.write(wire(Opcode.CONT, b" ", fin=False))
        try:
            assert await raw.wait_closed() == 1009
        finally:
            raw.abort()
            await raw.close()


async def test_the_frame_limit_applies_to_the_whole_fragmented_message(tmp_path: Path) -> None:
    async with running_server(tmp_path, max_frame=1024) as server:
        raw = await connected_raw(server)
        raw.writer.write(wire(Opcode.TEXT, b"[" + b" " * 599, fin=False))
        raw.writer.write(wire(Opcode.CONT, b" " * 600))
        try:
            assert await raw.wait_closed() == 1009
        finally:
            raw.abort()
            await raw.close()


@pytest.mark.parametrize("connected", [True, False], ids=["after connect", "before connect"])
async def test_invalid_utf8_in_a_text_frame_closes_1007(
    server: Server, connected: bool, server_errors: ServerErrors
) -> None:
    raw = await connected_raw(server) if connected else await RawClient.open(server.ws_url)
    raw.writer.write(wire(Opcode.TEXT, b'{"type": "ping", "id": 1, "x": "\xff\xfe"}'))
    try:
        assert await raw.wait_closed() == 1007
    finally:
        raw.abort()
        await raw.close()
    assert not server_errors.lines()


async def test_a_close_between_fragments_is_answered_with_a_normal_close(server: Server) -> None:
    raw = await connected_raw(server)
    raw.writer.write(wire(Opcode.TEXT, b'{"type": ', fin=False))
    raw.writer.write(wire(Opcode.CLOSE, Close(1000, "bye").serialize()))
    try:
        assert await raw.wait_closed() == 1000
    finally:
        raw.abort()
        await raw.close()


async def test_a_large_oversized_message_gets_its_1009_before_the_socket_goes(
    server: Server, server_errors: ServerErrors
) -> None:
    """The peer is still sending when the server refuses the frame by its header: the
    server must not close with unread input (a reset that can wipe out its 1009)."""
    raw = await connected_raw(server)
    size = 8 * 1024 * 1024
    # A 64-bit length header, then the payload (its mask is irrelevant: it is refused).
    raw.writer.write(bytes((0x81, 0xFF)) + size.to_bytes(8, "big") + b"mask")
    with contextlib.suppress(ConnectionError):
        chunk = b"x" * 65536
        for _ in range(size // len(chunk)):
            raw.writer.write(chunk)
        await raw.writer.drain()
    try:
        assert await raw.wait_closed() == 1009
    finally:
        raw.abort()
        await raw.close()
    assert not server_errors.lines()
