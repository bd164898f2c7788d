"""The heartbeat: ping every WebSocket once a period, drop those silent for two periods."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Final

from tidings.protocol.codes import CloseCode

if TYPE_CHECKING:
    from tidings.server.connection import Connection

#: A period's connections are visited in this many slices.
HEARTBEAT_SLICES: Final = 10


async def heartbeats(
    connections: Collection[Connection],
    period_s: float,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Run for ever (cancel to stop). The connections are visited a slice at a time through
    the period, so 10,000 of them cost ten small bursts of pings rather than one stall of
    the event loop."""
    while True:
        round_ = list(connections)
        size = max(-(-len(round_) // HEARTBEAT_SLICES), 1)  # ceiling division
        for start in range(0, HEARTBEAT_SLICES * size, size):
            await asyncio.sleep(period_s / HEARTBEAT_SLICES)
            deadline = clock() - 2 * period_s
            for conn in round_[start : start + size]:
                if conn.closed:
                    continue
                socket = conn.socket
                if socket.last_seen < deadline:
                    socket.close(CloseCode.INTERNAL_ERROR, "heartbeat timeout")
                    socket.abort()
                else:
                    socket.ping()
