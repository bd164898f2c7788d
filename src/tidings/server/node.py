"""One Tidings node: the store, the broker, the hub, the agents and the rules, wired.

Both front doors — the WebSocket connections and the HTTP API — call the same methods
here, so a send has one meaning whichever way it arrives.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from functools import partial
from typing import TYPE_CHECKING, Any

import msgspec

from tidings.agents.base import Agent, AgentContext, close_agent
from tidings.agents.loader import BUILT_IN, load_agent
from tidings.agents.runner import AgentRunner
from tidings.backends.base import (
    Broker,
    CommitUncertain,
    EventStore,
    NotFound,
    ReportsCommits,
    StoreUnavailable,
)
from tidings.backends.factory import open_store
from tidings.backends.memory_broker import MemoryBroker
from tidings.core import rules
from tidings.core.auth import AuthConfig, AuthError, Claims, jwks_key, verify, verify_with_key
from tidings.core.model import Appended, Conflict, Draft, Event, Kind, Message, Role, SessionInfo
from tidings.core.presence import PresenceTracker
from tidings.core.rules import Action
from tidings.protocol import messages as wire
from tidings.protocol.codes import CloseCode, ErrorCode, ProtocolError
from tidings.server import catchup, commits, limits
from tidings.server.config import Config
from tidings.server.heartbeats import heartbeats
from tidings.server.hub import Channel, Hub
from tidings.server.metrics import AgentMetrics, Metrics
from tidings.server.websocket import Flusher, WebSocket

if TYPE_CHECKING:
    from tidings.server.connection import Connection

log = logging.getLogger("tidings.node")


class Ack(msgspec.Struct, kw_only=True):
    """The fields of an `ack`, shared by the WebSocket and HTTP send paths."""

    session: str
    client_id: str
    seq: int
    event_id: str
    duplicate: bool


def _store_error(exc: Exception, session_id: str) -> ProtocolError:
    if isinstance(exc, NotFound):
        return ProtocolError(ErrorCode.NOT_FOUND, f"no session {session_id!r}")
    return ProtocolError(ErrorCode.UNAVAILABLE, "storage is unavailable; retry later")


#: What a long-poll answered during a shutdown is told to wait before it polls again.
RETRY_AFTER_SHUTDOWN_MS = 1000


def _going_away() -> ProtocolError:
    return ProtocolError(
        ErrorCode.UNAVAILABLE,
        "the server is shutting down; retry",
        extra={"retry_after_ms": RETRY_AFTER_SHUTDOWN_MS},
    )


def _seq_of(message_id: str) -> int:
    """The `seq` a message id was made from (`m_42` → 42)."""
    try:
        return int(message_id.split("_", 1)[1])
    except (IndexError, ValueError):
        return 0


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class Node:
    def __init__(
        self,
        config: Config,
        *,
        store: EventStore | None = None,
        broker: Broker | None = None,
    ) -> None:
        self.config = config
        self.clock = wall_clock_ms
        self.store: EventStore = store or open_store(config.database_url, self.clock)
        self.broker: Broker = broker or MemoryBroker()
        self.metrics = Metrics()
        self.hub = Hub(self)
        self.presence = PresenceTracker()
        self.limits = limits.user_limits(config)
        self.auth = AuthConfig(
            algorithm=config.jwt_algorithm,
            secret=config.jwt_secret or None,
            public_key=config.jwt_public_key,
            jwks_url=config.jwt_jwks_url,
            audience=config.jwt_audience,
            issuer=config.jwt_issuer,
        )
        self.runner = AgentRunner(
            self,
            concurrency=config.agent_concurrency,
            timeout_s=config.agent_timeout_s,
            observer=AgentMetrics(self.metrics),
        )
        if isinstance(self.store, ReportsCommits):
            self.store.on_commit = self.metrics.observe_commit
        self.metrics.watch(
            "agent_queue_depth",
            "Assistant replies queued and not started yet",
            lambda: self.runner.pending(),
        )
        self.connections: set[Connection] = set()
        self._agents: dict[str, Agent | None] = {}
        self._ids = itertools.count(1)
        self._prefix = os.urandom(3).hex()
        self._heartbeat: asyncio.Task[None] | None = None
        self._flusher: Flusher | None = None
        #: Tasks resolving uncertain commits, or checking that a retried message's reply
        #: started (kept so they are not collected while they run).
        self._pending_checks: set[asyncio.Task[Any]] = set()
        self.writes = commits.WriteHealth(self.metrics)
        self.started = False
        #: Set once shutdown begins (`drain`): no long-poll waits, streams are ended.
        self.draining = False
        #: Open SSE streams, told by `drain` that the server is going away.
        self.streams: set[Any] = set()

    # ------------------------------------------------------------ life cycle

    @property
    def flusher(self) -> Flusher:
        if self._flusher is None:
            self._flusher = Flusher(asyncio.get_running_loop(), self.metrics)
        return self._flusher

    async def start(self) -> None:
        await self.store.open()
        await self.broker.start()
        orphans = await commits.orphaned_replies(self.store)
        if orphans:
            log.info("marking %d interrupted replies as failed", len(orphans))
            await self.runner.recover(orphans)
        self._heartbeat = asyncio.get_running_loop().create_task(
            heartbeats(self.connections, self.config.heartbeat_ms / 1000)
        )
        self.started = True

    def drain(self) -> None:
        """Shutdown begins: answer every long-poll now (503), end every SSE stream.

        WebSocket connections are told apart (uvicorn calls each socket's `shutdown`):
        each closes with 1001 once the acks of its sends already accepted are out."""
        if self.draining:
            return
        self.draining = True
        for channel in self.hub.channels.values():
            waiters, channel.waiters = channel.waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
        for stream in list(self.streams):
            stream.going_away()

    async def close(self) -> None:
        self.drain()
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
        for conn in list(self.connections):
            conn.socket.close(CloseCode.GOING_AWAY, "server shutting down")
        for task in list(self._pending_checks):
            task.cancel()
        await asyncio.gather(*self._pending_checks, return_exceptions=True)
        await self.runner.close()
        for agent in self._agents.values():
            if agent is not None:
                await close_agent(agent)
        await self.hub.close()
        await self.broker.close()
        await self.store.close()
        self.started = False

    def new_conn_id(self) -> str:
        return f"c_{self._prefix}{next(self._ids):x}"

    def ws_protocol(self) -> type[WebSocket]:
        """The class uvicorn instantiates for each WebSocket upgrade, bound to this node."""
        node = self

        class BoundWebSocket(WebSocket):
            def __init__(
                self, config: Any, server_state: Any, app_state: Any = None, **_: Any
            ) -> None:
                super().__init__(node, server_state)

        return BoundWebSocket

    # ------------------------------------------------------------ auth

    def origin_allowed(self, origin: str | None, host: str | None) -> bool:
        from tidings.server.origins import origin_allowed

        return origin_allowed(self.config, origin, host)

    async def authenticate(self, token: str | None) -> Claims:
        if not token:
            raise ProtocolError(ErrorCode.UNAUTHORIZED, "a token is required")
        try:
            if self.auth.needs_jwks:
                assert self.auth.jwks_url is not None
                # The key set is fetched (and cached) off the event loop.
                key = await asyncio.to_thread(jwks_key, token, self.auth.jwks_url)
                return verify_with_key(token, key, self.auth, int(time.time()))
            return verify(token, self.auth, now_s=int(time.time()))
        except AuthError as exc:
            raise ProtocolError(ErrorCode.UNAUTHORIZED, str(exc)) from None

    # ------------------------------------------------------------ roles and agents

    async def role(self, session_id: str, user: str) -> Role | None:
        """`user`'s role, from the session's folded state in memory.

        A member's first request opens the session's channel (kept warm for a while, even
        for a sender that does not subscribe): it follows every event of the session,
        member changes included, so checks are current without a store read per request.
        Who is not a member is told so from the member row alone: a stranger naming a
        session never makes the node load and fold it."""
        channel = self.hub.ready_channel(session_id)
        if channel is None:
            try:
                if await self.store.role(session_id, user) is None:
                    return None
            except NotFound:
                raise ProtocolError(ErrorCode.NOT_FOUND, f"no session {session_id!r}") from None
            channel = await self._channel(session_id)
        role = channel.state.members.get(user)
        return Role(role) if role is not None else None

    def check(self, role: str | None, session_id: str, action: Action) -> Role:
        """`role` if it may do `action` in the session; else `forbidden` naming it."""
        if role is None or not rules.allowed(Role(role), action):
            what = "not a member of" if role is None else f"a {role} and may not {action} in"
            raise ProtocolError(
                ErrorCode.FORBIDDEN,
                f"you are {what} session {session_id!r}",
                extra={"session": session_id},
            )
        return Role(role)

    async def require(self, session_id: str, user: str, action: Action) -> Role:
        return self.check(await self.role(session_id, user), session_id, action)

    def agent(self, name: str) -> Agent | None:
        if name not in self._agents:
            settings = dict(self.config.settings)
            settings.setdefault("TIDINGS_ECHO_DELAY_MS", str(self.config.echo_delay_ms))
            self._agents[name] = load_agent(name, settings)
        return self._agents[name]

    def partial(self, session_id: str, message_id: str) -> str | None:
        return self.runner.partial(session_id, message_id)

    # ------------------------------------------------------------ the log

    async def append(self, session_id: str, draft: Draft) -> Event:
        """Append durably and publish; raises `ProtocolError(conflict)` on a failed CAS.

        Returns the stored event (the original one for a duplicate `client_id`).
        """
        event, _ = await self._append(session_id, draft)
        return event

    async def _append(self, session_id: str, draft: Draft) -> tuple[Event, bool]:
        try:
            try:
                result: Appended | Conflict = await self.store.append(session_id, draft)
            except CommitUncertain as exc:
                result = await self._resolve(session_id, draft, exc)
        except (NotFound, StoreUnavailable) as exc:
            raise self._write_failed(exc, session_id) from None
        return self._settle(session_id, draft, result)

    def _resolve(
        self, session_id: str, draft: Draft, uncertain: CommitUncertain
    ) -> asyncio.Task[Appended]:
        """Find out whether an uncertain commit happened (`server.commits`)."""
        self.writes.failed(uncertain)
        timeout_s = self.config.uncertain_commit_ms / 1000
        work = commits.resolve(self.store, session_id, draft, uncertain, timeout_s=timeout_s)
        return self._track(work)

    def _track(self, work: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(work)
        self._pending_checks.add(task)
        task.add_done_callback(self._pending_checks.discard)
        return task

    def _write_failed(self, exc: Exception, session_id: str) -> ProtocolError:
        self.writes.failed(exc)
        return _store_error(exc, session_id)

    def _settle(
        self, session_id: str, draft: Draft, result: Appended | Conflict
    ) -> tuple[Event, bool]:
        """After an append: refuse a conflict, publish a new event (encoded once)."""
        if isinstance(result, Conflict):
            raise ProtocolError(
                ErrorCode.CONFLICT,
                f"the session's version is {result.version}, not {draft.base_version}",
                extra={"version": result.version},
            )
        event = result.event
        if self.writes.error is not None:
            self.writes.succeeded()
        if result.duplicate:
            self.metrics.duplicates.inc()
        else:
            self.metrics.events_appended.inc()
            self.broker.publish(session_id, event.seq, wire.encode(event))
        return event, result.duplicate

    async def send(
        self, user: str, session_id: str, *, client_id: str, kind: str, data: dict[str, Any]
    ) -> Ack:
        """A client's `send`: check, append (deduped by client id), publish, start the agent."""
        ack = self.send_nowait(user, session_id, client_id=client_id, kind=kind, data=data)
        while ack is None:
            await self.warm(session_id, user)
            ack = self.send_nowait(user, session_id, client_id=client_id, kind=kind, data=data)
        return await ack

    async def warm(self, session_id: str, user: str) -> None:
        """Open the session's channel (its folded state), so `send_nowait` can serve it;
        `forbidden` (from the member row, nothing folded) when `user` may not send."""
        await self.require(session_id, user, Action.SEND)

    def send_nowait(
        self, user: str, session_id: str, *, client_id: str, kind: str, data: dict[str, Any]
    ) -> asyncio.Future[Ack] | None:
        """`send` without a coroutine, the hot path: checks, queues the append and returns
        a future of the ack at once; None when the session's state is not in memory yet
        (call `warm` first). Sends queued one after another keep their order."""
        channel = self.hub.ready_channel(session_id)
        if channel is None:
            return None
        draft = rules.draft_for_send(kind, data, author=user, client_id=client_id)
        self.check(channel.state.members.get(user), session_id, Action.SEND)
        if kind == "message" and channel.agent != "none":
            self._check_backlog(session_id)
        try:
            stored = self.store.submit(session_id, draft)
        except (NotFound, StoreUnavailable) as exc:
            raise self._write_failed(exc, session_id) from None
        ack: asyncio.Future[Ack] = asyncio.get_running_loop().create_future()
        stored.add_done_callback(partial(self._sent, session_id, draft, channel.agent, ack))
        return ack

    def _check_backlog(self, session_id: str) -> None:
        """Refuse a message (before it is stored) while the session's assistant has its
        whole backlog queued: the queue of replies stays bounded."""
        bound = self.config.max_agent_backlog
        if bound and self.runner.backlog(session_id) >= bound:
            raise ProtocolError(
                ErrorCode.RATE_LIMITED,
                f"the assistant has {bound} replies queued in this session; retry later",
                extra={"retry_after_ms": limits.HELD_RETRY_MS, "session": session_id},
            )

    def _sent(
        self,
        session_id: str,
        draft: Draft,
        agent_name: str,
        ack: asyncio.Future[Ack],
        stored: asyncio.Future[Appended | Conflict],
    ) -> None:
        if ack.cancelled():
            return
        if stored.cancelled():  # a lookup stopped by shutdown: no answer to give
            ack.cancel()
            return
        try:
            try:
                result = stored.result()
            except CommitUncertain as exc:
                # Settled again by the lookup's outcome, as if the commit had answered.
                done = partial(self._sent, session_id, draft, agent_name, ack)
                self._resolve(session_id, draft, exc).add_done_callback(done)
                return
            except (NotFound, StoreUnavailable) as exc:
                raise self._write_failed(exc, session_id) from None
            event, duplicate = self._settle(session_id, draft, result)
        except Exception as exc:
            ack.set_exception(exc)
            return
        if event.kind == Kind.MESSAGE_CREATED and agent_name != "none":
            agent = self.agent(agent_name)
            if agent is not None and not duplicate:
                self.runner.submit(session_id, agent, event)
            elif agent is not None:  # a retry: its reply may never have started
                self._track(commits.start_reply_if_missing(self, session_id, agent, event))
        assert draft.client_id is not None
        ack.set_result(
            Ack(
                session=session_id,
                client_id=draft.client_id,
                seq=event.seq,
                event_id=event.event_id,
                duplicate=duplicate,
            )
        )

    # ------------------------------------------------------------ subscriptions

    async def subscribe(
        self, conn: Connection, session_id: str, after: int | None, re: int
    ) -> None:
        """Subscribe `conn` (`server.catchup`: paced catch-up, role checked after awaits)."""
        await catchup.subscribe(self, conn, session_id, after, re)

    async def session_channel(self, session_id: str) -> Channel:
        """The session's channel, opened if needed; `not_found` for an unknown session."""
        try:
            return await self.hub.channel(session_id)
        except NotFound:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no session {session_id!r}") from None

    def go_live(self, conn: Connection, channel: Channel) -> None:
        channel.live[conn] = None
        conn.subscriptions.add(channel.session_id)
        self.metrics.subscriptions.inc()
        assert conn.user is not None
        online = self.presence.join(channel.session_id, conn.user, conn.id)
        if online is not None:
            self._publish_presence(channel.session_id, online)

    def unsubscribe(self, conn: Connection, session_id: str) -> bool:
        channel = self.hub.channels.get(session_id)
        if session_id not in conn.subscriptions:
            return False
        conn.subscriptions.discard(session_id)
        self.metrics.subscriptions.dec()
        if channel is not None:
            channel.live.pop(conn, None)
            self.hub.release(channel)
        assert conn.user is not None
        online = self.presence.leave(session_id, conn.user, conn.id)
        if online is not None:
            self._publish_presence(session_id, online)
        return True

    def _publish_presence(self, session_id: str, online: list[str]) -> None:
        frame = wire.encode(wire.Presence(session=session_id, online=online))
        self.broker.publish(session_id, None, frame)

    def signal(self, conn: Connection, session_id: str, name: str, data: dict[str, Any]) -> None:
        if session_id not in conn.subscriptions:
            raise ProtocolError(
                ErrorCode.FORBIDDEN,
                f"subscribe to session {session_id!r} before signalling in it",
                extra={"session": session_id},
            )
        assert conn.user is not None
        channel = self.hub.channels.get(session_id)
        role = channel.state.members.get(conn.user) if channel is not None else None
        self.check(role, session_id, Action.SIGNAL)
        frame = wire.encode(
            wire.SignalOut(session=session_id, name=name, data=data, sender=conn.user)
        )
        self.broker.publish(session_id, None, frame, conn.id)

    async def cancel(self, user: str, session_id: str, message_id: str) -> None:
        await self.require(session_id, user, Action.CANCEL)
        if not await self.runner.cancel(session_id, message_id):
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no reply in progress with id {message_id!r}")

    def connection_closed(self, conn: Connection) -> None:
        for session_id in list(conn.subscriptions):
            self.unsubscribe(conn, session_id)
        for channel in self.hub.channels.values():
            if conn in channel.joining:
                channel.joining.pop(conn, None)
                self.hub.release(channel)
        self.connections.discard(conn)

    # ------------------------------------------------------------ ReplyHost, for agents

    def stream(self, session_id: str, message_id: str, offset: int, text: str) -> None:
        frame = wire.encode(
            wire.Stream(session=session_id, message_id=message_id, offset=offset, text=text)
        )
        self.broker.publish(session_id, None, frame)

    async def save_partial(self, session_id: str, message_id: str, content: str) -> None:
        await self.store.save_partial(session_id, message_id, content)

    async def _channel(self, session_id: str) -> Channel:
        """The session's channel, opened (and left to idle out) if this node had none."""
        channel = self.hub.ready_channel(session_id)
        if channel is None:
            try:
                channel = await self.hub.channel(session_id)
            except NotFound:
                raise ProtocolError(ErrorCode.NOT_FOUND, f"no session {session_id!r}") from None
            self.hub.release(channel)
        return channel

    async def context(self, session_id: str, trigger: Event) -> AgentContext:
        snap = (await self._channel(session_id)).state.snapshot(presence=[], partials={})
        # Messages after the trigger (queued behind this reply) are not its context.
        return AgentContext(
            session_id=session_id,
            messages=[
                m
                for m in snap["messages"]
                if m.get("status") != "streaming" and _seq_of(m.get("id", "")) <= trigger.seq
            ],
            cards=list(snap["cards"]),
            trigger=dict(trigger.data.get("message", {})),
        )

    # ------------------------------------------------------------ HTTP helpers

    async def create_session(self, user: str, *, title: str, agent: str | None) -> SessionInfo:
        limits.take(self.limits.creations, user, "sessions created")
        name = agent or self.config.agent
        allowed = {*BUILT_IN, self.config.agent, *self.config.agents}
        if name not in allowed:
            # A request must never name code to import: only configured agents may run.
            raise ProtocolError(
                ErrorCode.BAD_REQUEST,
                f"unknown agent {name[:80]!r}; this server offers {', '.join(sorted(allowed))}",
            )
        if name != "none":
            try:
                self.agent(name)
            except ValueError as exc:
                raise ProtocolError(ErrorCode.BAD_REQUEST, str(exc)) from None
        session_id = f"s_{os.urandom(8).hex()}"
        return await self.store.create_session(session_id, title=title, agent=name, owner=user)

    async def snapshot(self, user: str, session_id: str) -> tuple[SessionInfo, int, dict[str, Any]]:
        await self.require(session_id, user, Action.READ)
        info = await self.store.get_session(session_id)
        channel = await self._channel(session_id)
        return info, channel.seq, self.hub.snapshot(channel)

    async def events(
        self, user: str, session_id: str, *, after: int, limit: int, wait: float
    ) -> tuple[list[Event], int]:
        """Events after `after`; with `wait`, long-polls up to that many seconds for one."""
        return await catchup.long_poll(self, user, session_id, after=after, limit=limit, wait=wait)

    def going_away(self) -> ProtocolError:
        """What a long-poll is answered during a shutdown."""
        return _going_away()

    async def message(self, user: str, session_id: str, message_id: str) -> Message:
        await self.require(session_id, user, Action.READ)
        try:
            message = await self.store.message(session_id, message_id)
        except NotFound:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"no message {message_id!r}") from None
        if message.status == "streaming":
            text = self.partial(session_id, message_id)
            if text is not None and len(text) >= len(message.content):
                message.content = text
                message.offset = len(text)
        return message

    async def add_member(self, user: str, session_id: str, member: str, role: Role) -> Event:
        await self.require(session_id, user, Action.MANAGE_MEMBERS)
        return await self.append(session_id, rules.draft_member_added(member, role, author=user))

    async def remove_member(self, user: str, session_id: str, member: str) -> Event:
        await self.require(session_id, user, Action.MANAGE_MEMBERS)
        members = await self.store.members(session_id)
        role = members.get(member)
        if role is None:
            raise ProtocolError(ErrorCode.NOT_FOUND, f"{member!r} is not a member")
        return await self.append(session_id, rules.draft_member_removed(member, role, author=user))
