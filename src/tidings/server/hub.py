"""The local fan-out: session → subscribed connections on this node.

Every event reaches the hub through the broker as already-encoded bytes and is pushed, as
those same bytes, onto each subscriber's queue: encoded once, whatever the fan-out, and
never awaiting a receiver. The hub keeps each active session's state folded from its
events (for snapshots and roles) and delivers events strictly in `seq` order: a frame that
arrives ahead of a gap waits while the missing events are read from the store, so a lost
or late broker message costs latency, never order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import msgspec

from tidings.core.fold import SessionState, checkpoint, restore
from tidings.core.model import Event, Kind, SessionInfo
from tidings.core.ordering import OrderingBuffer
from tidings.protocol import messages as wire

if TYPE_CHECKING:
    from tidings.server.connection import Connection
    from tidings.server.node import Node

log = logging.getLogger("tidings.hub")

_event_decoder = msgspec.json.Decoder(Event)

#: A channel saves its folded state every this many events, so opening a session later
#: reads the log from there instead of from seq 1.
CHECKPOINT_EVERY = 500

#: How long an unused session channel stays warm (its folded state kept) after its last
#: subscriber leaves, so a client that resubscribes at once does not refold the log.
IDLE_GRACE_S = 30.0


class Channel:
    """One session's local subscribers and its folded state, in `seq` order."""

    def __init__(self, hub: Hub, session_id: str) -> None:
        self.hub = hub
        self.session_id = session_id
        self.state: SessionState = SessionState(session_id)
        self.agent = "none"
        self.order: OrderingBuffer[tuple[int, bytes]] = OrderingBuffer()
        #: Live subscribers, in subscription order (a dict used as an ordered set).
        self.live: dict[Connection, None] = {}
        #: Subscribers (and long-polls) being set up: catching up from the store page by
        #: page (`server.catchup`). They get no frames here; they keep the channel in use.
        self.joining: dict[object, None] = {}
        #: Long-poll waiters: woken at the next delivered event.
        self.waiters: list[asyncio.Future[None]] = []
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.early: list[tuple[int | None, bytes, str | None]] = []
        self.gap_task: asyncio.Task[None] | None = None
        #: The seq of the latest checkpoint saved (or loaded) for this session.
        self.checkpointed = 0
        self.checkpoint_task: asyncio.Task[None] | None = None
        self.idle_timer: asyncio.TimerHandle | None = None
        self.last_used = time.monotonic()

    @property
    def seq(self) -> int:
        return self.state.seq

    def in_use(self) -> bool:
        return bool(self.live or self.joining or self.waiters)

    # Called by the broker (possibly before `ready`): must not block.
    def on_frame(self, session_id: str, seq: int | None, frame: bytes, origin: str | None) -> None:
        if not self.ready.done():
            self.early.append((seq, frame, origin))
            return
        if seq is None:
            self._deliver_ephemeral(frame, origin)
            return
        for item_seq, item in self.order.push(seq, (seq, frame)):
            self._deliver(item_seq, item)
        if self.order.gap is not None and self.gap_task is None:
            self.gap_task = asyncio.get_running_loop().create_task(self._fill_gap())

    def _deliver_ephemeral(self, frame: bytes, origin: str | None) -> None:
        for conn in self.live:
            if conn.id != origin:
                conn.socket.push(frame)

    def _deliver(self, seq: int, frame: bytes) -> None:
        event = _event_decoder.decode(frame)
        self.state.apply(event)
        for conn in self.live:
            conn.socket.push(frame)
        if self.waiters:
            waiters, self.waiters = self.waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
        if (
            self.state.seq - self.checkpointed >= self.hub.checkpoint_every
            and self.checkpoint_task is None
        ):
            self.checkpoint_task = asyncio.get_running_loop().create_task(
                self._save_checkpoint(self.state.seq, checkpoint(self.state))
            )
        metrics = self.hub.node.metrics
        metrics.fanout_seconds.observe(max(0.0, time.time() - event.ts / 1000))
        metrics.deliveries.inc(len(self.live))
        if event.kind == Kind.MEMBER_REMOVED:
            self._drop_member(str(event.data.get("user", "")))

    def _drop_member(self, user: str) -> None:
        """A removed member's subscriptions end at once, with `forbidden` naming the session.

        Subscriptions still being set up are refused by their own re-check of the role,
        made after every await of the set-up (`server.catchup`)."""
        for conn in [c for c in self.live if c.user == user]:
            conn.subscription_ended(self.session_id, "you are no longer a member of this session")

    async def _save_checkpoint(self, seq: int, state: bytes) -> None:
        try:
            await self.hub.node.store.save_checkpoint(self.session_id, seq, state)
            self.checkpointed = seq
        except Exception:
            log.warning("could not save a checkpoint of session %s", self.session_id)
        finally:
            self.checkpoint_task = None

    async def _fill_gap(self) -> None:
        try:
            while (gap := self.order.gap) is not None:
                first, last = gap
                events = await self.hub.node.store.read(
                    self.session_id, first - 1, limit=last - first + 1
                )
                if not events:
                    # Not readable yet (another node's commit is still in flight): retry soon.
                    await asyncio.sleep(0.05)
                    continue
                for event in events:
                    pair = (event.seq, wire.encode(event))
                    for item_seq, item in self.order.push(event.seq, pair):
                        self._deliver(item_seq, item)
        except Exception:
            log.exception("filling a gap in session %s failed", self.session_id)
        finally:
            self.gap_task = None


class Hub:
    """This node's channels, created on first subscription and dropped when idle."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.channels: dict[str, Channel] = {}
        #: Events between checkpoints of a session's folded state.
        self.checkpoint_every = CHECKPOINT_EVERY

    async def channel(self, session_id: str) -> Channel:
        """The session's channel, subscribed to the broker and folded up to date."""
        channel = self.channels.get(session_id)
        if channel is None:
            channel = Channel(self, session_id)
            self.channels[session_id] = channel
            try:
                await self._open(channel)
            except BaseException as exc:
                del self.channels[session_id]
                # Else every request naming an unknown session would leave a handler behind.
                await self.node.broker.unsubscribe(session_id, channel.on_frame)
                if not channel.ready.done():
                    channel.ready.set_exception(exc)
                    channel.ready.exception()  # retrieved: awaiters get their own raise
                raise
        else:
            await asyncio.shield(channel.ready)
        channel.last_used = time.monotonic()
        return channel

    def ready_channel(self, session_id: str) -> Channel | None:
        """The session's channel if it is open and folded, without waiting; else None."""
        channel = self.channels.get(session_id)
        if channel is None or not channel.ready.done() or channel.ready.exception():
            return None
        channel.last_used = time.monotonic()
        return channel

    async def _open(self, channel: Channel) -> None:
        node = self.node
        session_id = channel.session_id
        # Subscribe first, then read: an event committed in between arrives twice (from
        # the read and the broker) and the ordering buffer drops the second copy.
        await node.broker.subscribe(session_id, channel.on_frame)
        info = await node.store.get_session(session_id)
        state = await self._restore(info)
        for event in await node.store.read(session_id, state.seq):
            state.apply(event)
        channel.agent = info.agent
        channel.state = state
        channel.checkpointed = state.seq
        channel.order.reset(channel.state.seq + 1)
        channel.ready.set_result(None)
        early, channel.early = channel.early, []
        for seq, frame, origin in early:
            channel.on_frame(session_id, seq, frame, origin)

    async def _restore(self, info: SessionInfo) -> SessionState:
        """The session's state from its latest checkpoint, or a fresh one to fold from
        seq 1 (the title is set at creation, not by an event)."""
        saved = await self.node.store.load_checkpoint(info.id)
        if saved is not None:
            try:
                state = restore(saved[1])
                if state.session_id == info.id and state.seq == saved[0] <= info.seq:
                    return state
            except (msgspec.DecodeError, msgspec.ValidationError):
                pass
            log.warning("ignoring a damaged checkpoint of session %s", info.id)
        state = SessionState(info.id)
        state.title = info.title
        return state

    def release(self, channel: Channel) -> None:
        """Called when a channel may have become unused; drops it after a grace period
        without use (one timer per idle channel, not one per use)."""
        if channel.in_use() or channel.idle_timer is not None:
            return
        loop = asyncio.get_running_loop()
        channel.idle_timer = loop.call_later(IDLE_GRACE_S, self._drop_if_idle, channel)

    def _drop_if_idle(self, channel: Channel) -> None:
        channel.idle_timer = None
        if channel.in_use() or self.channels.get(channel.session_id) is not channel:
            return
        unused_for = time.monotonic() - channel.last_used
        if unused_for < IDLE_GRACE_S:
            loop = asyncio.get_running_loop()
            channel.idle_timer = loop.call_later(
                IDLE_GRACE_S - unused_for, self._drop_if_idle, channel
            )
            return
        del self.channels[channel.session_id]
        asyncio.get_running_loop().create_task(
            self.node.broker.unsubscribe(channel.session_id, channel.on_frame)
        )

    async def close(self) -> None:
        for channel in list(self.channels.values()):
            if channel.idle_timer is not None:
                channel.idle_timer.cancel()
            if channel.gap_task is not None:
                channel.gap_task.cancel()
            for waiter in channel.waiters:
                waiter.cancel()
            await self.node.broker.unsubscribe(channel.session_id, channel.on_frame)
        self.channels.clear()

    def snapshot(self, channel: Channel) -> dict[str, Any]:
        node = self.node
        partials = {
            message_id: text
            for message_id in channel.state.streaming_message_ids()
            if (text := node.partial(channel.session_id, message_id)) is not None
        }
        return channel.state.snapshot(
            presence=node.presence.online(channel.session_id), partials=partials
        )
