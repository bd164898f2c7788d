"""What a connection leaves behind once it is gone: nothing the cyclic GC must find.

Objects in reference cycles are only freed by the cyclic garbage collector, whose full
collections pause the event loop for every other connection; a closed connection must
be freed by reference counting alone, however it ended.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from tests.server.harness import RawClient, Server, make_token, message


@asynccontextmanager
async def _cyclic_gc_off() -> AsyncIterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _server_side(server: Server) -> list[weakref.ref[object]]:
    """Weak references to the one open connection's objects on the server."""
    assert server.node is not None
    [conn] = server.node.connections
    return [weakref.ref(conn), weakref.ref(conn.socket), weakref.ref(conn.socket.protocol)]


async def _until_gone(server: Server) -> None:
    assert server.node is not None
    async with asyncio.timeout(5):
        while server.node.connections:  # noqa: ASYNC110 (the node offers a set, no event)
            await asyncio.sleep(0.01)
    for _ in range(5):  # callbacks scheduled by the close run on later loop turns
        await asyncio.sleep(0)


async def test_a_connection_closed_with_a_handshake_is_freed_without_the_cyclic_gc(
    server: Server,
) -> None:
    session = await server.create_session("ann")
    async with _cyclic_gc_off():
        client = await server.client("ann")
        await client.subscribe(session)
        reply = await client.request(message("hello", session=session))
        assert reply["type"] == "ack", reply
        refs = _server_side(server)
        await client.close()
        await _until_gone(server)
        assert [r() for r in refs] == [None, None, None]


async def test_a_connection_dropped_without_a_close_frame_is_freed_without_the_cyclic_gc(
    server: Server,
) -> None:
    session = await server.create_session("ann")
    async with _cyclic_gc_off():
        client = await RawClient.open(server.ws_url)
        reply = await client.request({"type": "connect", "token": make_token("ann")})
        assert reply["type"] == "connected", reply
        reply = await client.request({"type": "subscribe", "session": session})
        assert reply["type"] == "subscribed", reply
        refs = _server_side(server)
        await client.close()  # a FIN with no close frame: the server sees end of stream
        await _until_gone(server)
        assert [r() for r in refs] == [None, None, None]
