"""One WebSocket to the server: the opening handshake and the loops that run it.

The asyncio side of `LinkCore` (client/protocol.py): the core decides, these functions
do the I/O. The supervisor in client/client.py opens a link, runs these loops beside its
resume, and opens the next one when the reader ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from tidings.client.options import Options
from tidings.client.protocol import (
    LINK_GONE,
    Beat,
    LinkCore,
    connect_reply,
    connect_request,
    encode,
)
from tidings.protocol.client_frames import Frame, decode_server_frames

log = logging.getLogger("tidings.client")

SUBPROTOCOL = Subprotocol("tidings.v1")
#: The largest frame read from the server (a snapshot of a big session is large).
MAX_FRAME_BYTES = 2**24
#: How long closing a broken WebSocket may wait for the closing handshake.
CLOSE_TIMEOUT_S = 1.0

Waiter = asyncio.Future[Frame]


@dataclass(eq=False)
class Link:
    """One open WebSocket, its outbox, and the core's bookkeeping for it."""

    ws: ClientConnection
    core: LinkCore[Waiter]
    #: The user the server authenticated.
    user: str
    outbox: asyncio.Queue[str] = field(default_factory=asyncio.Queue)

    @property
    def live(self) -> bool:
        return self.core.live

    def write(self, frame: Any) -> None:
        self.outbox.put_nowait(encode(frame))


async def open_link(url: str, token: str, options: Options, ids: Iterator[int]) -> Link:
    """Open the WebSocket and authenticate; raises `AuthError` for a refused token."""
    ws = await ws_connect(
        url,
        subprotocols=[SUBPROTOCOL],
        open_timeout=options.open_timeout_s,
        ping_interval=None,
        close_timeout=CLOSE_TIMEOUT_S,
        max_size=MAX_FRAME_BYTES,
        max_queue=None,
    )
    try:
        await ws.send(encode(connect_request(next(ids), token, options.client_name)))
        async with asyncio.timeout(options.open_timeout_s):
            raw = await ws.recv()
        frames = decode_server_frames(raw)
        user, heartbeat_s = connect_reply(frames, heartbeat_s=options.heartbeat_s)
    except BaseException:
        ws.transport.abort()
        await ws.close()
        raise
    core: LinkCore[Waiter] = LinkCore(ids, heartbeat_s=heartbeat_s, last_rx=time.monotonic())
    return Link(ws=ws, core=core, user=user)


async def write_loop(link: Link) -> None:
    with contextlib.suppress(ConnectionClosed):
        while True:
            text = await link.outbox.get()
            await link.ws.send(text)


async def read_loop(link: Link, dispatch: Callable[[Frame, Link], None]) -> None:
    """Hand every frame to `dispatch`, in order; when the link ends, answer every request
    still waiting with a `connection` error."""
    try:
        async for raw in link.ws:
            link.core.received(time.monotonic())
            try:
                frames = decode_server_frames(raw)
            except ValueError:
                log.warning("dropping a malformed frame from the server")
                continue
            for frame in frames:
                dispatch(frame, link)
    except ConnectionClosed:
        pass
    finally:
        for waiter in link.core.lost():
            if not waiter.done():
                waiter.set_result(LINK_GONE)


async def heartbeat_loop(link: Link) -> None:
    """A silent server is dropped within two periods (the core decides when)."""
    while True:
        await asyncio.sleep(link.core.heartbeat_tick_s)
        beat = link.core.heartbeat(time.monotonic())
        if beat is Beat.DROP:
            log.info("the server is silent; reconnecting")
            link.ws.transport.abort()
            return
        if beat is Beat.PING:
            link.write(link.core.ping())
