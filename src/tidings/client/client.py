"""The connection: one WebSocket (or the HTTP fallback) shared by every joined session.

This is the asyncio adapter over the sans-I/O core (`client/protocol.py`): it owns the
tasks and sockets and does what the core decides. A supervisor task owns the link. It
connects, resubscribes every session from its replica's seq, re-sends every
unacknowledged send with its original client id (the server keeps one event per client
id, so a retry is exactly once), and reads until the link fails; then it waits
(exponential backoff, full jitter) and starts again. After `fallback_after` failed
attempts in a row it also starts the HTTP fallback (`client/fallback.py`) and keeps trying
the WebSocket; when one opens, the fallback is stopped first and the WebSocket resumes
from the replica's seq, so nothing is missed and the replica drops whatever arrives twice.

Every frame is handled synchronously, in arrival order, by the reader: a `subscribed`
snapshot is loaded before the events that follow it are looked at.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from websockets.exceptions import ConnectionClosed, InvalidHandshake

from tidings.client.backoff import Backoff
from tidings.client.errors import AuthError, ConnectError, OfflineQueueFull, TidingsError
from tidings.client.fallback import HttpFallback
from tidings.client.http_api import HttpApi
from tidings.client.link import Link, heartbeat_loop, open_link, read_loop, write_loop
from tidings.client.options import Options
from tidings.client.protocol import (
    Action,
    ConnectionMachine,
    ConnectionState,
    Input,
    Probe,
    Route,
    Startup,
    Transition,
    close_error,
    refresh_delay,
    resume_after,
    route,
    startup,
)
from tidings.client.session import Session
from tidings.client.urls import http_url_of, token_claims, token_user, ws_url_of
from tidings.protocol.client_frames import Frame

log = logging.getLogger("tidings.client")

T = TypeVar("T")
TokenProvider = Callable[[], Awaitable[str]]

TASK_PREFIX = "tidings-client:"
#: Pause after a refused token refresh before trying again.
REFRESH_RETRY_S = 1.0

__all__ = ["TASK_PREFIX", "Client", "ConnectionState", "Options", "TokenProvider", "connect"]


class Client:
    """Use `tidings.client.connect(...)`; see the module docstring."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        token_provider: TokenProvider | None = None,
        options: Options | None = None,
    ) -> None:
        if (token is None) == (token_provider is None):
            raise ValueError("pass exactly one of `token` and `token_provider`")
        self.options = options or Options()
        self.url = ws_url_of(url)
        self.http_url = self.options.http_url or http_url_of(self.url)
        self._provider = token_provider
        self._token = token or ""
        self.user: str | None = token_user(token) if token else None
        self.machine = ConnectionMachine(fallback_after=self.options.fallback_after)
        self.error: TidingsError | None = None
        self.closing = False
        self.sessions: dict[str, Session] = {}
        self.api = HttpApi(
            self.http_url, self._http_token, timeout_s=self.options.request_timeout_s
        )
        self.backoff = Backoff(self.options.reconnect_base_s, self.options.reconnect_cap_s)
        self._ids = itertools.count(1)
        self._link: Link | None = None
        self._state_callbacks: list[Callable[[ConnectionState], Any]] = []
        self._state_changed = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._supervisor: asyncio.Task[None] | None = None
        self._fallback = HttpFallback(self)
        #: The last connection attempt's failure (for error messages).
        self.last_error: BaseException | None = None
        # What the HTTP fallback's probe found, and its failure.
        self._probe = Probe.NOT_YET
        self._probe_error: BaseException | None = None

    @property
    def state(self) -> ConnectionState:
        return self.machine.state

    @property
    def reconnects(self) -> int:
        return self.machine.reconnects

    # ------------------------------------------------------------ life cycle

    async def __aenter__(self) -> Client:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Start connecting; returns once connected or in a working HTTP fallback.

        Raises `AuthError` for a refused token, and `ConnectError` when the server cannot
        be reached: within `connect_timeout_s`, or as soon as the fallback finds its HTTP
        API unreachable too.
        """
        started = time.monotonic()
        self._move(Input.START)
        self._supervisor = self.spawn(self._supervise(), "supervisor")
        timed_out = False
        try:
            async with asyncio.timeout(self.options.connect_timeout_s):
                while self._startup(timed_out=False) is Startup.WAIT:
                    await self._state_changed.wait()
        except TimeoutError:
            timed_out = True
        if self._startup(timed_out=timed_out) is Startup.READY:
            return
        error = self.error
        if error is None:
            last = self._probe_error or self.last_error
            error = ConnectError(
                self.url,
                waited_s=time.monotonic() - started,
                attempts=self.machine.failures,
                last=last,
            )
            error.__cause__ = last
        await self.close()
        raise error

    def _startup(self, *, timed_out: bool) -> Startup:
        return startup(self.state, self._probe, timed_out=timed_out)

    def fallback_probed(self, error: BaseException | None) -> None:
        """What the HTTP fallback's probe found (`start` waits for it)."""
        if error is not None:
            log.info("the HTTP API does not answer either: %r", error)
        self._probe = Probe.ANSWERED if error is None else Probe.FAILED
        self._probe_error = error
        self._wake()

    async def close(self) -> None:
        """Stop everything: no task or socket is left behind."""
        if self.closing and self.state is ConnectionState.CLOSED and not self._tasks:
            return
        self.closing = True
        if self._supervisor is not None:
            self._supervisor.cancel()
        self._fallback.cancel()
        for session in list(self.sessions.values()):
            await session.close()
            session.fail(self.error or TidingsError("closed", "the client was closed"))
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.api.aclose()
        self._move(Input.CLOSE)

    def _stopping(self) -> bool:
        # A method, not the attribute: `close()` sets it while the supervisor awaits, which
        # a type checker narrowing `self.closing` inside the loop cannot see.
        return self.closing

    def spawn(self, coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        """Run `coro` as one of the client's tasks (cancelled on close)."""
        task = asyncio.get_running_loop().create_task(coro, name=TASK_PREFIX + name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s failed", task.get_name(), exc_info=task.exception())

    # ------------------------------------------------------------ state

    def on_state(self, callback: Callable[[ConnectionState], Any]) -> Callable[[], None]:
        """Call `callback(state)` on each change of connection state."""
        self._state_callbacks.append(callback)
        return lambda: self._state_callbacks.remove(callback)

    def _apply(self, before: ConnectionState, transition: Transition) -> None:
        """Do what a transition of the machine asks, then tell the state's watchers."""
        for action in transition.actions:
            if action is Action.START_FALLBACK:
                self._fallback.start()
            elif action is Action.STOP_FALLBACK:
                self._fallback.cancel()
            elif action is Action.FAIL_EVERYTHING:
                self._fail_everything()
        if transition.to is before:
            return
        log.debug("connection state: %s → %s", before, transition.to)
        self._wake()
        for callback in list(self._state_callbacks):
            try:
                callback(transition.to)
            except Exception:
                log.exception("an on_state callback failed")

    def _wake(self) -> None:
        """Wake everything waiting for a change (of state, or of the fallback's probe)."""
        self._state_changed.set()
        self._state_changed = asyncio.Event()

    def _move(self, input: Input) -> None:
        self._apply(self.state, self.machine.on(input))

    async def wait_for(self, *states: ConnectionState, timeout: float | None = None) -> None:
        """Wait until the connection state is one of `states`."""
        async with asyncio.timeout(timeout):
            while self.state not in states:
                if self.state is ConnectionState.CLOSED:
                    raise self.error or TidingsError("closed", "the client is closed")
                await self._state_changed.wait()

    def _refuse(self, error: TidingsError) -> None:
        """Stop for good (4001/4003): surface `error` everywhere."""
        log.warning("the connection cannot go on: %s", error)
        self.error = error
        self._move(Input.REFUSED)

    def _fail_everything(self) -> None:
        error = self.error or TidingsError("closed", "the client was closed")
        for session in self.sessions.values():
            session.fail(error)
            self.spawn(session.feed.close(), "feed close")

    # ------------------------------------------------------------ tokens

    async def _fresh_token(self) -> str:
        if self._provider is not None:
            self._token = await self._provider()
            if self.user is None:
                self.user = token_user(self._token)
        return self._token

    async def _http_token(self, fresh: bool) -> str:
        if fresh or not self._token:
            return await self._fresh_token()
        return self._token

    # ------------------------------------------------------------ sessions

    async def join(self, session_id: str, *, timeout: float | None = None) -> Session:
        """Subscribe to a session; returns once its replica holds the current state.

        Raises `TidingsError` with code `forbidden` or `not_found` when you may not read
        it, and code `timeout` when it is not joined within `timeout` seconds (default:
        the `join_timeout_s` option), e.g. because the server cannot be reached.
        """
        if self.closing or self.state is ConnectionState.CLOSED:
            raise self.error or TidingsError("closed", "the client is closed")
        session = self.sessions.get(session_id)
        if session is None:
            session = Session(self, session_id, debounce_s=self.options.debounce_s)
            self.sessions[session_id] = session
            link = self._link
            if link is not None and link.live:
                self.spawn(self._subscribe(link, session), f"subscribe {session_id}")
            elif self._fallback.running:
                self._fallback.add(session)
        limit = timeout if timeout is not None else self.options.join_timeout_s
        try:
            error = await asyncio.wait_for(asyncio.shield(session.ready), limit)
        except TimeoutError:
            await self.leave(session)
            raise self._join_timeout(session_id, limit) from None
        if error is not None:
            self._forget(session)
            await session.close()
            raise error
        return session

    async def create_session(self, title: str = "", *, agent: str | None = None) -> str:
        """Create a session (you become its owner) and return its id; `join` it next.
        `agent` names one of the server's configured agents (default: the server's)."""
        info = await self.api.create_session(title, agent)
        return str(info["id"])

    async def add_member(self, session_id: str, user: str, role: str = "member") -> int:
        """Add `user` to a session (owners only); the seq of its `member.added` event.
        For a joined session, `Session.add_member` also waits for its state to show it."""
        return await self.api.add_member(session_id, user, role)

    async def remove_member(self, session_id: str, user: str) -> int:
        """Remove `user` from a session; the seq of its `member.removed` event."""
        return await self.api.remove_member(session_id, user)

    def _join_timeout(self, session_id: str, limit: float | None) -> TidingsError:
        why = f"the connection is {self.state}"
        if self.state is not ConnectionState.CONNECTED and self.last_error is not None:
            why += f" (the last failure: {self.last_error!r})"
        return TidingsError("timeout", f"could not join {session_id} within {limit} s: {why}")

    def _forget(self, session: Session) -> None:
        if self.sessions.get(session.id) is session:
            del self.sessions[session.id]

    def drop(self, session: Session, error: TidingsError) -> None:
        """`session` can go on no more (refused, or removed from it): fail and forget it."""
        session.fail(error)
        self._forget(session)

    async def leave(self, session: Session) -> None:
        """Unsubscribe `session` (what `Session.leave` calls); its sends without an outcome
        fail, and its HTTP fallback receive (if any) stops."""
        self._forget(session)
        session.fail(TidingsError("closed", f"left the session {session.id}"))
        link = self._link
        if link is not None and link.live:
            link.write(link.core.unsubscribe(session.id))
        await session.close()

    async def _subscribe(self, link: Link, session: Session) -> None:
        waiter: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        link.write(link.core.subscribe(session.id, resume_after(session.replica), waiter))
        reply = await waiter
        if reply.get("type") == "error":
            error = TidingsError.from_frame(reply)
            if error.code == "connection":
                return  # the next link resubscribes
            self.drop(session, error)

    # ------------------------------------------------------------ sends (for Session)

    def check_queue(self) -> None:
        """Raise when no send may be queued: closed, or `max_queue` without an outcome."""
        if self.closing or self.state is ConnectionState.CLOSED:
            raise self.error or TidingsError("closed", "the client is closed")
        waiting = sum(len(s.outgoing) for s in self.sessions.values())
        if waiting >= self.options.max_queue:
            raise OfflineQueueFull(self.options.max_queue)

    def queue_send(self, session: Session, client_id: str) -> None:
        """Transmit a new send now if the link is live (else the resume or fallback will)."""
        link = self._link
        if link is not None and link.live:
            self._transmit(link, session, client_id)
        elif self._fallback.running:
            self._fallback.wake()

    def _transmit(self, link: Link, session: Session, client_id: str) -> None:
        entry = session.outgoing.get(client_id)
        if entry is None:
            return
        kind, data = entry
        frame = link.core.send(session.id, client_id, kind, data)
        if frame is not None:
            link.write(frame)

    def _retry_later(self, link: Link, session_id: str, client_id: str, delay_s: float) -> None:
        def again() -> None:
            session = self.sessions.get(session_id)
            if session is not None and self._link is link and link.live:
                self._transmit(link, session, client_id)

        asyncio.get_running_loop().call_later(delay_s, again)

    def send_signal(self, session_id: str, name: str, data: dict[str, Any]) -> None:
        """An ephemeral signal, over a live WebSocket only (best effort)."""
        link = self._link
        if link is not None and link.live:
            link.write(link.core.signal(session_id, name, data))

    async def cancel_reply(self, session_id: str, message_id: str) -> None:
        """Ask the server to stop an assistant reply (WebSocket only)."""
        link = self._link
        if link is None or not link.live:
            raise TidingsError("connection", "cancel needs the WebSocket; not connected now")
        reply = await self._request(
            link, lambda waiter: link.core.cancel(session_id, message_id, waiter)
        )
        if reply.get("type") == "error":
            raise TidingsError.from_frame(reply)

    async def _request(self, link: Link, make: Callable[[asyncio.Future[Frame]], Any]) -> Frame:
        waiter: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        request = make(waiter)
        link.write(request)
        try:
            return await asyncio.wait_for(waiter, self.options.request_timeout_s)
        finally:
            link.core.forget(request.id)

    # ------------------------------------------------------------ the supervisor

    async def _supervise(self) -> None:
        while not self.closing:
            try:
                link = await open_link(self.url, await self._fresh_token(), self.options, self._ids)
                self.user = link.user or self.user or ""
            except AuthError as exc:
                self._refuse(exc)
                return
            except Exception as exc:  # the network, the server, or the token provider
                self.last_error = exc
                expected = (OSError, TimeoutError, InvalidHandshake, ConnectionClosed, TidingsError)
                level = logging.DEBUG if isinstance(exc, expected) else logging.WARNING
                failures = self.machine.failures + 1
                if failures == 1 and level == logging.DEBUG:
                    level = logging.INFO  # the first of a row says why; the rest are noise
                log.log(level, "connecting to %s failed (%d in a row): %r", self.url, failures, exc)
                self._apply(self.state, self.machine.attempt_failed())
                await asyncio.sleep(self.backoff.delay(self.machine.retry_attempt()))
                continue
            await self._fallback.stop()
            self._apply(self.state, self.machine.link_open())
            try:
                await self._serve(link)
            except AuthError as exc:
                self._refuse(exc)
                return
            except Exception:
                log.exception("the connection failed unexpectedly; reconnecting")
            finally:
                self._link = None
                if not self._stopping():
                    link.ws.transport.abort()  # broken: no closing handshake to wait for
                await link.ws.close()
            if self._stopping():
                return
            self._move(Input.LINK_LOST)
            await asyncio.sleep(self.backoff.delay(self.machine.retry_attempt()))

    async def _serve(self, link: Link) -> None:
        """Run one link: resume every session, re-send, then read until it fails."""
        self._link = link
        reader = self.spawn(read_loop(link, self._dispatch), "reader")
        helpers = [
            self.spawn(write_loop(link), "writer"),
            self.spawn(heartbeat_loop(link), "heartbeat"),
        ]
        if self._provider is not None:
            helpers.append(self.spawn(self._refresh(link), "refresh"))
        try:
            resume = self.spawn(self._resume(link), "resume")
            await asyncio.wait({reader, resume}, return_when=asyncio.FIRST_COMPLETED)
            if not reader.done():
                self._move(Input.RESUMED)
            await reader
        finally:
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
        error = close_error(link.ws.close_code, link.ws.close_reason or "")
        if error is not None:
            raise error
        log.debug("link closed (code %s)", link.ws.close_code)

    async def _resume(self, link: Link) -> None:
        # Resubscribe (sessions joined meanwhile too), then re-send what has no ack yet, in
        # order; then sends go straight out (`live`). No await between the last check and
        # `live`, so nothing slips between the two.
        core = link.core
        while True:
            missing = [self.sessions[sid] for sid in core.missing(self.sessions)]
            if missing:
                await asyncio.gather(*(self._subscribe(link, s) for s in missing))
                continue
            todo = core.unsent(
                (s.id, cid) for s in list(self.sessions.values()) for cid in s.unacked()
            )
            if not todo:
                break
            for session_id, client_id in todo:
                session = self.sessions.get(session_id)
                if session is not None:
                    self._transmit(link, session, client_id)
        core.live = True

    async def _refresh(self, link: Link) -> None:
        """Send a fresh token before the current one expires."""
        while True:
            exp = token_claims(self._token).get("exp")
            if not isinstance(exp, int | float):
                return
            await asyncio.sleep(refresh_delay(exp, time.time()))
            token = await self._fresh_token()
            try:
                reply = await self._request(link, functools.partial(link.core.refresh, token))
            except TimeoutError:
                continue
            if reply.get("type") == "error":
                log.warning("token refresh refused: %s", reply.get("message"))
                await asyncio.sleep(REFRESH_RETRY_S)

    # ------------------------------------------------------------ frames

    def dispatch(self, frame: Frame) -> None:
        """A frame that came over HTTP (the fallback's SSE)."""
        self._dispatch(frame, None)

    def _dispatch(self, frame: Frame, link: Link | None) -> None:
        routed = route(frame, link.core if link is not None else None)
        session = self.sessions.get(routed.session)
        what = routed.route
        client_id, error = routed.client_id, routed.error
        if what is Route.SEND_RETRY:
            if link is not None and session is not None and client_id is not None:
                self._retry_later(link, session.id, client_id, routed.retry_in_s or 0)
        elif what is Route.SEND_REFUSED:
            if session is not None and client_id is not None and error is not None:
                session.on_send_error(client_id, error)
        elif session is not None:
            self._deliver(session, what, frame, routed.error)
        if routed.waiter is not None and not routed.waiter.done():
            routed.waiter.set_result(frame)

    def _deliver(
        self, session: Session, what: Route, frame: Frame, error: TidingsError | None
    ) -> None:
        if what is Route.EVENT:
            session.on_event(frame)
        elif what is Route.STREAM:
            session.on_stream(frame)
        elif what is Route.ACK:
            session.on_ack(str(frame["client_id"]), int(frame["seq"]), str(frame["event_id"]))
        elif what is Route.SUBSCRIBED:
            session.on_subscribed(frame)
        elif what is Route.PRESENCE:
            session.on_presence(frame)
        elif what is Route.SIGNAL:
            session.on_signal(frame)
        elif what is Route.ENDED and error is not None:
            self.drop(session, error)
            self.spawn(session.feed.close(), "feed close")


@contextlib.asynccontextmanager
async def connect(
    url: str,
    *,
    token: str | None = None,
    token_provider: TokenProvider | None = None,
    http_url: str | None = None,
    **options: Any,
) -> AsyncIterator[Client]:
    """`async with connect(url, token=...) as client:` — a connected client, closed on exit.

    `url` is the server's WebSocket URL (`ws://host:port/v1/ws`) or its HTTP origin.
    `token_provider`, an async callable returning a JWT, is called at each connection and
    before the token expires. Other keyword arguments are `Options` fields.
    """
    client = Client(
        url,
        token=token,
        token_provider=token_provider,
        options=Options(http_url=http_url, **options),
    )
    await client.start()
    try:
        yield client
    finally:
        await client.close()
