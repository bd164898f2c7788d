"""The connection: one WebSocket (or the HTTP fallback) shared by every joined session.

A supervisor task owns the link. It connects, resubscribes every session from its
replica's seq, re-sends every unacknowledged send with its original client id (the
server keeps one event per client id, so a retry is exactly once), and reads until the
link fails; then it waits (exponential backoff, full jitter) and starts again. After
`fallback_after` failed attempts in a row it also starts the HTTP fallback — sends over
`POST …/events`, receives over long-poll or SSE — and keeps trying the WebSocket; when
one opens, the fallback is stopped first and the WebSocket resumes from the replica's seq,
so nothing is missed and the replica drops whatever arrives twice.

Every frame is handled synchronously, in arrival order, by the reader: a `subscribed`
snapshot is loaded before the events that follow it are looked at.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

import jwt
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.typing import Subprotocol

import tidings
from tidings.client.backoff import Backoff
from tidings.client.errors import AuthError, OfflineQueueFull, TidingsError
from tidings.client.http_api import HttpApi
from tidings.client.session import Session
from tidings.protocol.client_frames import (
    Frame,
    decode_server_frames,
    encode_request,
    send_frame,
    subscribe_frame,
)

log = logging.getLogger("tidings.client")

T = TypeVar("T")
TokenProvider = Callable[[], Awaitable[str]]

#: Close codes after which retrying cannot help: the client stops and reports.
FATAL_CLOSE_CODES = frozenset({4001, 4003})
#: Send errors that are worth retrying as they are.
RETRYABLE_CODES = frozenset({"rate_limited", "unavailable"})
TASK_PREFIX = "tidings-client:"


class ConnectionState(StrEnum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    FALLBACK = "fallback"
    CLOSED = "closed"


@dataclass(frozen=True, kw_only=True)
class Options:
    """Tuning knobs of `connect` (every one has a sensible default)."""

    http_url: str | None = None
    reconnect_base_s: float = 0.5
    reconnect_cap_s: float = 30.0
    #: Failed connection attempts in a row before the HTTP fallback starts (None: never).
    fallback_after: int | None = 5
    #: How the fallback receives: `poll` (long-poll `GET …/events`) or `sse`.
    fallback_receive: Literal["poll", "sse"] = "poll"
    poll_wait_s: float = 20.0
    #: Sends without an outcome at most (queued offline or in flight).
    max_queue: int = 1000
    debounce_s: float = 0.05
    #: Heartbeat period; None takes the server's `heartbeat_ms`.
    heartbeat_s: float | None = None
    open_timeout_s: float = 10.0
    request_timeout_s: float = 10.0
    client_name: str = f"tidings-py/{tidings.__version__}"

    def __post_init__(self) -> None:
        if self.max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        if self.fallback_after is not None and self.fallback_after < 1:
            raise ValueError("fallback_after must be at least 1 (or None)")
        if self.fallback_receive not in ("poll", "sse"):
            raise ValueError("fallback_receive is 'poll' or 'sse'")


@dataclass(eq=False)
class _Link:
    """One open WebSocket and what belongs to it alone."""

    ws: ClientConnection
    heartbeat_s: float
    outbox: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    live: bool = False
    sent: set[str] = field(default_factory=set)
    subscribed: set[str] = field(default_factory=set)
    sends: dict[int, tuple[str, str]] = field(default_factory=dict)
    waiters: dict[int, asyncio.Future[Frame]] = field(default_factory=dict)
    last_rx: float = field(default_factory=time.monotonic)
    ping_out: bool = False

    def write(self, frame: Frame) -> None:
        self.outbox.put_nowait(encode_request(frame))


def ws_url_of(url: str) -> str:
    """`http://h:p` → `ws://h:p/v1/ws`; a ws(s) URL is kept (its path defaults too)."""
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss"):
        raise ValueError(f"not a WebSocket or HTTP URL: {url!r}")
    path = parts.path if parts.path not in ("", "/") else "/v1/ws"
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


def http_url_of(ws_url: str) -> str:
    """The origin of a ws(s) URL, as http(s)."""
    parts = urlsplit(ws_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, "", "", ""))


def token_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT, unverified (the server verifies; we only read `exp`, `sub`)."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return {}
    return claims if isinstance(claims, dict) else {}


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
        self._static_token = token
        self._provider = token_provider
        self._token = token or ""
        self.user: str | None = str(token_claims(token).get("sub") or "") or None if token else None
        self.state = ConnectionState.CONNECTING
        self.error: TidingsError | None = None
        self.closing = False
        self.sessions: dict[str, Session] = {}
        self.api = HttpApi(
            self.http_url, self._http_token, timeout_s=self.options.request_timeout_s
        )
        self.backoff = Backoff(self.options.reconnect_base_s, self.options.reconnect_cap_s)
        self._ids = itertools.count(1)
        self._link: _Link | None = None
        self._state_callbacks: list[Callable[[ConnectionState], Any]] = []
        self._state_changed = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._supervisor: asyncio.Task[None] | None = None
        self._fallback: list[asyncio.Task[None]] = []
        self._fallback_wakeup = asyncio.Event()
        self.reconnects = 0

    # ------------------------------------------------------------ life cycle

    async def __aenter__(self) -> Client:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Start connecting; returns once connected, in fallback, or failed (raises)."""
        self._supervisor = self._spawn(self._supervise(), "supervisor")
        await self.wait_for(
            ConnectionState.CONNECTED, ConnectionState.FALLBACK, ConnectionState.CLOSED
        )
        if self.error is not None:
            error = self.error
            await self.close()
            raise error

    async def close(self) -> None:
        """Stop everything: no task or socket is left behind."""
        if self.closing and self.state is ConnectionState.CLOSED and not self._tasks:
            return
        self.closing = True
        for task in [self._supervisor, *self._fallback]:
            if task is not None:
                task.cancel()
        for session in list(self.sessions.values()):
            await session.close()
            session.fail(self.error or TidingsError("closed", "the client was closed"))
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.api.aclose()
        self._set_state(ConnectionState.CLOSED)

    def _stopping(self) -> bool:
        return self.closing

    def _spawn(self, coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
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

    def _set_state(self, state: ConnectionState) -> None:
        if state is self.state:
            return
        if self.state is ConnectionState.CLOSED:
            return
        log.debug("connection state: %s → %s", self.state, state)
        self.state = state
        self._state_changed.set()
        self._state_changed = asyncio.Event()
        for callback in list(self._state_callbacks):
            try:
                callback(state)
            except Exception:
                log.exception("an on_state callback failed")

    async def wait_for(self, *states: ConnectionState, timeout: float | None = None) -> None:
        """Wait until the connection state is one of `states`."""
        async with asyncio.timeout(timeout):
            while self.state not in states:
                if self.state is ConnectionState.CLOSED:
                    raise self.error or TidingsError("closed", "the client is closed")
                await self._state_changed.wait()

    def _fail(self, error: TidingsError) -> None:
        """Stop for good (4001/4003): surface `error` everywhere."""
        log.warning("the connection cannot go on: %s", error)
        self.error = error
        for session in self.sessions.values():
            session.fail(error)
            self._spawn(session.feed.close(), "feed close")
        for task in self._fallback:
            task.cancel()
        self._set_state(ConnectionState.CLOSED)

    # ------------------------------------------------------------ tokens

    async def _fresh_token(self) -> str:
        if self._provider is not None:
            self._token = await self._provider()
            if self.user is None:
                self.user = str(token_claims(self._token).get("sub") or "") or None
        return self._token

    async def _http_token(self, fresh: bool) -> str:
        if fresh or not self._token:
            return await self._fresh_token()
        return self._token

    # ------------------------------------------------------------ sessions

    async def join(self, session_id: str) -> Session:
        """Subscribe to a session; returns once its replica holds the current state."""
        if self.closing or self.state is ConnectionState.CLOSED:
            raise self.error or TidingsError("closed", "the client is closed")
        session = self.sessions.get(session_id)
        if session is None:
            session = Session(self, session_id, debounce_s=self.options.debounce_s)
            self.sessions[session_id] = session
            link = self._link
            if link is not None and link.live:
                link.subscribed.add(session_id)
                self._spawn(self._subscribe(link, session), f"subscribe {session_id}")
            elif self._fallback:
                self._fallback.append(
                    self._spawn(self._receive_http(session), f"receive {session_id}")
                )
        error = await asyncio.shield(session.ready)
        if error is not None:
            if self.sessions.get(session_id) is session:
                del self.sessions[session_id]
            await session.close()
            raise error
        return session

    async def _leave(self, session: Session) -> None:
        if self.sessions.get(session.id) is session:
            del self.sessions[session.id]
        link = self._link
        if link is not None and link.live:
            link.write({"type": "unsubscribe", "id": next(self._ids), "session": session.id})
        await session.close()

    async def _subscribe(self, link: _Link, session: Session) -> None:
        replica = session.replica
        request_id = next(self._ids)
        waiter = asyncio.get_running_loop().create_future()
        link.waiters[request_id] = waiter
        after = replica.seq if replica.loaded else None
        link.write(subscribe_frame(request_id, session.id, after))
        reply = await waiter
        if reply.get("type") == "error":
            error = TidingsError.from_frame(reply)
            if error.code == "connection":
                return  # the next link resubscribes
            session.fail(error)
            if self.sessions.get(session.id) is session:
                del self.sessions[session.id]

    # ------------------------------------------------------------ sends

    def _check_queue(self) -> None:
        if self.closing or self.state is ConnectionState.CLOSED:
            raise self.error or TidingsError("closed", "the client is closed")
        waiting = sum(len(s.outgoing) for s in self.sessions.values())
        if waiting >= self.options.max_queue:
            raise OfflineQueueFull(self.options.max_queue)

    def _queue_send(self, session: Session, client_id: str) -> None:
        link = self._link
        if link is not None and link.live:
            self._transmit(link, session, client_id)
        elif self._fallback:
            self._fallback_wakeup.set()

    def _transmit(self, link: _Link, session: Session, client_id: str) -> None:
        entry = session.outgoing.get(client_id)
        if entry is None or client_id in link.sent:
            return
        kind, data = entry
        request_id = next(self._ids)
        link.sends[request_id] = (session.id, client_id)
        link.sent.add(client_id)
        link.write(send_frame(request_id, session.id, client_id, kind, data))

    def _retry_later(self, link: _Link, session_id: str, client_id: str, delay_s: float) -> None:
        link.sent.discard(client_id)

        def again() -> None:
            session = self.sessions.get(session_id)
            if session is not None and self._link is link and link.live:
                self._transmit(link, session, client_id)

        asyncio.get_running_loop().call_later(delay_s, again)

    def _signal(self, session_id: str, name: str, data: dict[str, Any]) -> None:
        link = self._link
        if link is not None and link.live:
            link.write({"type": "signal", "session": session_id, "name": name, "data": data})

    async def _cancel(self, session_id: str, message_id: str) -> None:
        link = self._link
        if link is None or not link.live:
            raise TidingsError("connection", "cancel needs the WebSocket; not connected now")
        reply = await self._request(
            link, {"type": "cancel", "session": session_id, "message_id": message_id}
        )
        if reply.get("type") == "error":
            raise TidingsError.from_frame(reply)

    async def _request(self, link: _Link, frame: Frame) -> Frame:
        request_id = next(self._ids)
        waiter: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        link.waiters[request_id] = waiter
        link.write({**frame, "id": request_id})
        try:
            return await asyncio.wait_for(waiter, self.options.request_timeout_s)
        finally:
            link.waiters.pop(request_id, None)

    # ------------------------------------------------------------ the supervisor

    async def _supervise(self) -> None:
        failures = 0
        while not self.closing:
            try:
                link = await self._open()
            except AuthError as exc:
                self._fail(exc)
                return
            except Exception as exc:  # the network, the server, or the token provider
                failures += 1
                expected = (OSError, TimeoutError, InvalidHandshake, ConnectionClosed, TidingsError)
                level = logging.DEBUG if isinstance(exc, expected) else logging.WARNING
                log.log(level, "connecting failed (%d in a row): %r", failures, exc)
                fallback_after = self.options.fallback_after
                if not self._fallback and fallback_after is not None and failures >= fallback_after:
                    self._start_fallback()
                elif not self._fallback:
                    self._set_state(ConnectionState.RECONNECTING)
                await asyncio.sleep(self.backoff.delay(failures - 1))
                continue
            failures = 0
            await self._stop_fallback()
            try:
                await self._serve(link)
            except AuthError as exc:
                self._fail(exc)
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
            self.reconnects += 1
            self._set_state(ConnectionState.RECONNECTING)
            await asyncio.sleep(self.backoff.delay(0))

    async def _open(self) -> _Link:
        token = await self._fresh_token()
        ws = await ws_connect(
            self.url,
            subprotocols=[Subprotocol("tidings.v1")],
            open_timeout=self.options.open_timeout_s,
            ping_interval=None,
            close_timeout=1,
            max_size=2**24,
            max_queue=None,
        )
        try:
            request_id = next(self._ids)
            await ws.send(
                encode_request(
                    {
                        "type": "connect",
                        "id": request_id,
                        "token": token,
                        "client": self.options.client_name,
                    }
                )
            )
            async with asyncio.timeout(self.options.open_timeout_s):
                raw = await ws.recv()
            frames = decode_server_frames(raw)
            reply = frames[0] if frames else {}
            if reply.get("type") == "error":
                code = str(reply.get("code", ""))
                if code == "unauthorized":
                    raise AuthError(code, str(reply.get("message", "")), close_code=4001)
                raise TidingsError.from_frame(reply)
            if reply.get("type") != "connected":
                raise TidingsError("bad_reply", f"expected `connected`, got {reply!r:.200}")
        except BaseException:
            ws.transport.abort()
            await ws.close()
            raise
        self.user = str(reply.get("user") or self.user or "")
        heartbeat = self.options.heartbeat_s or int(reply.get("heartbeat_ms", 30000)) / 1000
        return _Link(ws=ws, heartbeat_s=heartbeat)

    async def _serve(self, link: _Link) -> None:
        """Run one link: resume every session, re-send, then read until it fails."""
        self._link = link
        reader = self._spawn(self._read(link), "reader")
        helpers = [
            self._spawn(self._write(link), "writer"),
            self._spawn(self._heartbeat(link), "heartbeat"),
        ]
        if self._provider is not None:
            helpers.append(self._spawn(self._refresh(link), "refresh"))
        try:
            resume = self._spawn(self._resume(link), "resume")
            await asyncio.wait({reader, resume}, return_when=asyncio.FIRST_COMPLETED)
            if not reader.done():
                self._set_state(ConnectionState.CONNECTED)
            await reader
        finally:
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
        code = link.ws.close_code
        if code in FATAL_CLOSE_CODES:
            reason = link.ws.close_reason or "refused by the server"
            name = "unauthorized" if code == 4001 else "forbidden"
            raise AuthError(name, reason, close_code=code)
        log.debug("link closed (code %s)", code)

    async def _resume(self, link: _Link) -> None:
        # Resubscribe (sessions joined meanwhile too), then re-send what has no ack yet, in
        # order; then sends go straight out (`live`). No await between the last check and
        # `live`, so nothing slips between the two.
        while True:
            missing = [s for s in self.sessions.values() if s.id not in link.subscribed]
            if missing:
                link.subscribed.update(s.id for s in missing)
                await asyncio.gather(*(self._subscribe(link, s) for s in missing))
                continue
            todo = [
                (s, cid)
                for s in list(self.sessions.values())
                for cid in s.unacked()
                if cid not in link.sent
            ]
            if not todo:
                break
            for session, client_id in todo:
                self._transmit(link, session, client_id)
        link.live = True

    async def _write(self, link: _Link) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                text = await link.outbox.get()
                await link.ws.send(text)

    async def _read(self, link: _Link) -> None:
        try:
            async for raw in link.ws:
                link.last_rx = time.monotonic()
                link.ping_out = False
                try:
                    frames = decode_server_frames(raw)
                except ValueError:
                    log.warning("dropping a malformed frame from the server")
                    continue
                for frame in frames:
                    self._dispatch(frame, link)
        except ConnectionClosed:
            pass
        finally:
            link.live = False
            gone = {"type": "error", "code": "connection", "message": "the connection closed"}
            for waiter in link.waiters.values():
                if not waiter.done():
                    waiter.set_result(gone)
            link.waiters.clear()

    async def _heartbeat(self, link: _Link) -> None:
        """A silent server is dropped within two periods: ping after half a period of
        silence, give up after one and a half."""
        period = link.heartbeat_s
        while True:
            await asyncio.sleep(period / 4)
            silent = time.monotonic() - link.last_rx
            if silent > 1.5 * period:
                log.info("the server is silent; reconnecting")
                link.ws.transport.abort()
                return
            if silent > period / 2 and not link.ping_out:
                link.ping_out = True
                link.write({"type": "ping", "id": next(self._ids)})

    async def _refresh(self, link: _Link) -> None:
        """Send a fresh token before the current one expires."""
        while True:
            exp = token_claims(self._token).get("exp")
            if not isinstance(exp, int | float):
                return
            remaining = exp - time.time()
            await asyncio.sleep(max(0.05, remaining - 60, remaining * 2 / 3))
            token = await self._fresh_token()
            try:
                reply = await self._request(link, {"type": "refresh", "token": token})
            except TimeoutError:
                continue
            if reply.get("type") == "error":
                log.warning("token refresh refused: %s", reply.get("message"))
                await asyncio.sleep(1)

    # ------------------------------------------------------------ frames

    def _dispatch(self, frame: Frame, link: _Link | None) -> None:
        kind = frame.get("type")
        session = self.sessions.get(str(frame.get("session", "")))
        re = frame.get("re")
        if kind == "event":
            if session is not None:
                session.on_event(frame)
        elif kind == "stream":
            if session is not None:
                session.on_stream(frame)
        elif kind == "ack":
            if link is not None and isinstance(re, int):
                link.sends.pop(re, None)
            if session is not None:
                session.on_ack(str(frame["client_id"]), int(frame["seq"]), str(frame["event_id"]))
        elif kind == "subscribed":
            if session is not None:
                session.on_subscribed(frame)
        elif kind == "presence":
            if session is not None:
                session.on_presence(frame)
        elif kind == "signal":
            if session is not None:
                session.on_signal(frame)
        elif kind == "error" and link is not None and isinstance(re, int) and re in link.sends:
            self._send_error(link, re, frame)
            return
        elif kind == "error" and re is None and session is not None:
            # A subscription ended by the server (membership removed).
            error = TidingsError.from_frame(frame)
            session.fail(error)
            if self.sessions.get(session.id) is session:
                del self.sessions[session.id]
            self._spawn(session.feed.close(), "feed close")
        if link is not None and isinstance(re, int):
            waiter = link.waiters.pop(re, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(frame)

    def _send_error(self, link: _Link, re: int, frame: Frame) -> None:
        session_id, client_id = link.sends.pop(re)
        session = self.sessions.get(session_id)
        if session is None:
            return
        error = TidingsError.from_frame(frame)
        if error.code in RETRYABLE_CODES:
            self._retry_later(link, session_id, client_id, (error.retry_after_ms or 500) / 1000)
        else:
            session.on_send_error(client_id, error)

    # ------------------------------------------------------------ the HTTP fallback

    def _start_fallback(self) -> None:
        log.info("switching to the HTTP fallback (%s)", self.options.fallback_receive)
        self._fallback_wakeup = asyncio.Event()
        self._fallback = [self._spawn(self._send_http(), "send over HTTP")]
        for session in list(self.sessions.values()):
            self._fallback.append(self._spawn(self._receive_http(session), f"receive {session.id}"))
        self._set_state(ConnectionState.FALLBACK)

    async def _stop_fallback(self) -> None:
        tasks, self._fallback = self._fallback, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _receive_http(self, session: Session) -> None:
        failures = 0
        while session.error is None:
            try:
                if not session.replica.loaded:
                    seq, snapshot = await self.api.session(session.id)
                    session.load_snapshot(seq, snapshot)
                if self.options.fallback_receive == "sse":
                    async for frame in self.api.sse(session.id, after=session.replica.seq):
                        self._dispatch(frame, None)
                        failures = 0
                else:
                    events, _ = await self.api.events(
                        session.id, after=session.replica.seq, wait_s=self.options.poll_wait_s
                    )
                    session.on_events(events)
                failures = 0
                continue
            except TidingsError as exc:
                if exc.code in ("forbidden", "not_found", "unauthorized"):
                    session.fail(exc)
                    if self.sessions.get(session.id) is session:
                        del self.sessions[session.id]
                    return
                failures += 1
            except Exception as exc:  # the network
                log.debug("receiving over HTTP failed: %r", exc)
                failures += 1
            await asyncio.sleep(self.backoff.delay(min(failures, 4)))

    async def _send_http(self) -> None:
        failures = 0
        while True:
            todo = [(s, cid) for s in list(self.sessions.values()) for cid in s.unacked()]
            if not todo:
                self._fallback_wakeup.clear()
                await self._fallback_wakeup.wait()
                continue
            session, client_id = todo[0]
            entry = session.outgoing.get(client_id)
            if entry is None:
                continue
            kind, data = entry
            try:
                ack = await self.api.send(session.id, client_id, kind, data)
            except TidingsError as exc:
                if exc.code in RETRYABLE_CODES:
                    await asyncio.sleep((exc.retry_after_ms or 500) / 1000)
                else:
                    session.on_send_error(client_id, exc)
                continue
            except Exception as exc:  # the network
                failures += 1
                log.debug("sending over HTTP failed: %r", exc)
                await asyncio.sleep(self.backoff.delay(min(failures, 4)))
                continue
            failures = 0
            session.on_ack(client_id, int(ack["seq"]), str(ack["event_id"]))


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
