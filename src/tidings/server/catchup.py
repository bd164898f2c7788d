"""Reading a session for a user: the WebSocket `subscribe`, the SSE stream, the long-poll.

Each of the three awaits on its way in (the store reads the missed events, the socket
drains, the long-poll waits), and a member may be removed during any of those awaits.
One rule covers them all: the reader's role is checked again, from the channel's folded
state, after every await and before anything read is handed out. The folded state
follows every event of the session in `seq` order, the removal included, and every page
read is at or below the channel's `seq`, so a removal committed before the page was read
is already in the state that the check looks at. (A subscriber already live is dropped by
the channel itself, `Channel._drop_member`.)

Missed events are read and sent in pages (`missed`), as the socket drains: a resume at
any distance stays under the outbound bound and never holds the event loop for long. The
reader is not live while it catches up; live events committed meanwhile are read from
the store by the next page, and when the pages reach the channel's `seq` the reader goes
live with no await in between, so no event is missed and none is sent twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from typing import TYPE_CHECKING, Final

import msgspec

from tidings.core.model import Event, Kind
from tidings.core.rules import Action
from tidings.protocol import messages as wire
from tidings.protocol.codes import ErrorCode, ProtocolError
from tidings.server import limits

if TYPE_CHECKING:
    from tidings.server.connection import Connection
    from tidings.server.hub import Channel
    from tidings.server.node import Node

#: Events read from the store per page of a catch-up.
PAGE_EVENTS: Final = 200


class NotRetained(Exception):
    """The missed events are no longer in the log: the reader gets a snapshot instead."""


def check_reader(node: Node, channel: Channel, user: str) -> None:
    """`forbidden` unless `user` may read the session as of the channel's folded state."""
    node.check(channel.state.members.get(user), channel.session_id, Action.READ)


def _removes(event: Event, user: str) -> bool:
    return event.kind == Kind.MEMBER_REMOVED and event.data.get("user") == user


def cut_at_removal(events: list[Event], user: str) -> list[Event]:
    """`events` up to and including `user`'s removal: nothing after it is theirs to read."""
    for index, event in enumerate(events):
        if _removes(event, user):
            return events[: index + 1]
    return events


async def missed(
    node: Node, channel: Channel, user: str, after: int, *, page: int = PAGE_EVENTS
) -> AsyncGenerator[list[Event], None]:
    """The events after `after`, page by page, until the channel's `seq`.

    The role is checked after every await, the caller's between pages included; when the
    iteration ends, the reader is at the channel's `seq` and must go live before awaiting
    anything. Raises `NotRetained` when the log no longer holds the next event."""
    last = after
    while True:
        check_reader(node, channel, user)
        head = channel.seq
        if last >= head:
            return
        events = await node.store.read(channel.session_id, last, limit=min(page, head - last))
        check_reader(node, channel, user)
        if not events or events[0].seq != last + 1:
            raise NotRetained
        yield events
        last = events[-1].seq


async def subscribe(
    node: Node, conn: Connection, session_id: str, after: int | None, re: int
) -> None:
    """Subscribe `conn`: the `subscribed` reply, any missed events, then live events, in
    order, with no gap and no duplicate."""
    user = conn.user
    assert user is not None
    await node.require(session_id, user, Action.READ)
    channel = await node.session_channel(session_id)
    channel.joining[conn] = None
    try:
        recovered: bool | None = None
        if after is not None and after <= channel.seq:
            try:
                if await _catch_up(node, channel, conn, after, re):
                    node.go_live(conn, channel)
                return
            except NotRetained:
                recovered = False  # no longer in the log: a snapshot instead
        elif after is not None:
            recovered = False  # past the head: a snapshot says where the session is
        if conn.closed:
            return
        check_reader(node, channel, user)
        conn.socket.push(wire.encode(subscribed(node, channel, re, recovered)))
        node.go_live(conn, channel)
    finally:
        channel.joining.pop(conn, None)
        if conn not in channel.live:
            node.hub.release(channel)


def subscribed(node: Node, channel: Channel, re: int, recovered: bool | None) -> wire.Subscribed:
    """The `subscribed` reply carrying a snapshot of the session as of the channel's seq."""
    snapshot = msgspec.Raw(wire.encode(node.hub.snapshot(channel)))
    return wire.Subscribed(
        re=re, session=channel.session_id, seq=channel.seq, snapshot=snapshot, recovered=recovered
    )


async def _catch_up(node: Node, channel: Channel, conn: Connection, after: int, re: int) -> bool:
    """Send `subscribed` (recovered) and the missed events, paced by the socket; False
    when the connection closed meanwhile. `NotRetained` before anything was sent."""
    user = conn.user
    assert user is not None
    socket = conn.socket
    head = channel.seq
    pages = missed(node, channel, user, after)
    first = await anext(pages, None)
    if conn.closed:
        return False
    socket.push(
        wire.encode(wire.Subscribed(re=re, session=channel.session_id, seq=head, recovered=True))
    )

    def check() -> None:
        check_reader(node, channel, user)

    try:
        if first is not None:
            if not await _send_paced(conn, first, check):
                return False
            async for page in pages:
                if not await _send_paced(conn, page, check):
                    return False
    except NotRetained:
        # Only the oldest events are ever dropped, so this is a log truncated under us.
        raise ProtocolError(
            ErrorCode.UNAVAILABLE,
            "the missed events could not be read; subscribe again",
            extra={"session": channel.session_id},
        ) from None
    finally:
        await pages.aclose()
    return not conn.closed


async def _send_paced(conn: Connection, events: list[Event], check: Callable[[], None]) -> bool:
    """Queue `events`, waiting for the socket to drain whenever half its bound is queued
    (the other half is room for replies and live traffic); False once it closed."""
    socket = conn.socket
    low = socket.queue_limit // 2
    for event in events:
        if socket.queued_bytes >= low or socket.paused:
            await socket.drain()
            if conn.closed:
                return False
            check()
        socket.push(wire.encode(event))
    return not conn.closed


async def long_poll(
    node: Node, user: str, session_id: str, *, after: int, limit: int, wait: float
) -> tuple[list[Event], int]:
    """Events after `after`; with `wait`, waits up to that many seconds for one."""
    await node.require(session_id, user, Action.READ)
    holds = wait > 0
    if holds:  # only a poll that may wait holds a request open
        limits.acquire(node.limits.long_polls, user, "long-polls")
    try:
        return await _poll(node, user, session_id, after=after, limit=limit, wait=wait)
    finally:
        if holds:
            node.limits.long_polls.release(user)


async def _poll(
    node: Node, user: str, session_id: str, *, after: int, limit: int, wait: float
) -> tuple[list[Event], int]:
    channel = await node.session_channel(session_id)
    key = object()  # keeps the channel in use (and its state current) while we wait
    channel.joining[key] = None
    try:
        events = await node.store.read(session_id, after, limit=limit)
        if not events and wait > 0:
            check_reader(node, channel, user)
            if node.draining:
                raise node.going_away()
            if channel.seq <= after:
                await _wait_for_event(channel, wait)
                check_reader(node, channel, user)
            events = await node.store.read(session_id, after, limit=limit)
            if not events and node.draining:
                # Woken by the shutdown: the poller retries elsewhere (or here, restarted).
                raise node.going_away()
        cut = cut_at_removal(events, user)
        if len(cut) < len(events) or (cut and _removes(cut[-1], user)):
            # The read reached the member's removal: they see it, and nothing after.
            return cut, cut[-1].seq
        head = await node.store.head(session_id)
        check_reader(node, channel, user)
        return events, head
    finally:
        channel.joining.pop(key, None)
        node.hub.release(channel)


async def _wait_for_event(channel: Channel, wait: float) -> None:
    waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    channel.waiters.append(waiter)
    try:
        await asyncio.wait_for(waiter, timeout=wait)
    except TimeoutError:
        pass
    finally:
        if waiter in channel.waiters:
            channel.waiters.remove(waiter)
