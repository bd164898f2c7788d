"""One client connection of `/v1/ws`: the protocol's rules over one socket.

Frames arrive from `WebSocket.on_message` and their requests are handled in order, each
after the previous one completed. Requests that await (connect, subscribe, cancel, a send
to a cold session) run on a worker task that exists only while there is such work, and
the requests behind one wait for it; a `send` completes as soon as its append is queued,
so a client may pipeline many sends while each is acknowledged once durable, in order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Final

from tidings import PROTOCOL_VERSION
from tidings.backends.base import StoreUnavailable
from tidings.core.ratelimit import Strikes, TokenBucket
from tidings.protocol import messages as wire
from tidings.protocol.codes import CloseCode, ErrorCode, ProtocolError
from tidings.protocol.state import ConnectionStateMachine, Input, Outcome, Verdict
from tidings.server.commits import UNKNOWN_CLOSE_REASON, OutcomeUnknown
from tidings.server.limits import HELD_RETRY_MS

if TYPE_CHECKING:
    from tidings.server.node import Ack, Node
    from tidings.server.websocket import WebSocket

log = logging.getLogger("tidings.connection")


def _now_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class Connection:
    def __init__(self, node: Node, socket: WebSocket, *, header_token: str | None) -> None:
        config = node.config
        self.node = node
        self.socket = socket
        self.id = node.new_conn_id()
        self.user: str | None = None
        self.header_token = header_token
        self.machine = ConnectionStateMachine()
        self.subscriptions: set[str] = set()
        self.closed = False
        self.bucket = TokenBucket(config.rate_limit, config.rate_burst)
        #: Subscribes get a bucket of their own, of the same size: each costs a snapshot or
        #: a catch-up, but a client's usual subscribe-then-send burst must not share one.
        self.subscribe_bucket = TokenBucket(config.rate_limit, config.rate_burst)
        self.strikes = Strikes(config.rate_strikes, config.rate_window_ms)
        # Requests (parsed or still raw) waiting behind the one the worker runs.
        self._backlog: deque[object] = deque()
        self._worker: asyncio.Task[None] | None = None
        loop = asyncio.get_running_loop()
        self._connect_timer: asyncio.TimerHandle | None = loop.call_later(
            config.connect_timeout_ms / 1000, self._connect_timeout
        )
        self._expiry_timer: asyncio.TimerHandle | None = None
        #: Sends queued on the store whose ack (or error) has not been sent yet.
        self._inflight = 0
        #: A close (1001 on shutdown, 4008 on rate abuse) waiting for those answers.
        self._deferred: Callable[[], None] | None = None
        self._deferred_timer: asyncio.TimerHandle | None = None
        #: The user whose per-user connection slot this connection holds, once connected.
        self._holds_slot: str | None = None
        node.connections.add(self)
        node.metrics.connections.inc()

    # ------------------------------------------------------------ output

    def reply(self, frame: wire.Reply) -> None:
        self.socket.push(wire.encode(frame))

    def error(self, err: ProtocolError) -> None:
        self.node.metrics.errors.labels(str(err.code)).inc()
        self.reply(wire.error_from(err))

    def close(self, code: CloseCode, reason: str) -> None:
        self.socket.flush()
        self.socket.close(code, reason)

    def apply(
        self,
        input: str,
        *,
        re: int | None = None,
        message: str | None = None,
        extra: dict[str, object] | None = None,
    ) -> bool:
        """Feed the state machine and carry out its verdict; True when accepted."""
        verdict = self.machine.on(input)
        if verdict.outcome is Outcome.ACCEPT:
            return True
        if verdict.close_code in _AFTER_ANSWERS and self._busy():
            # Every send accepted so far was taken in: its ack (or error) goes out
            # before the close, so a client never has to guess whether it was stored.
            # The machine is closing now: nothing more is taken in meanwhile.
            self._backlog.clear()
            self._deferred = partial(self._carry_out, verdict, re, message, extra)
            self._deferred_timer = asyncio.get_running_loop().call_later(
                self.node.config.shutdown_grace_s, self._close_deferred
            )
            return False
        self._carry_out(verdict, re, message, extra)
        return False

    def _busy(self) -> bool:
        return self._inflight > 0 or self._worker is not None

    def _close_deferred(self) -> None:
        """Carry out a deferred close: its answers are out, or waiting took too long."""
        deferred, self._deferred = self._deferred, None
        if self._deferred_timer is not None:
            self._deferred_timer.cancel()
            self._deferred_timer = None
        if deferred is not None and not self.closed:
            deferred()

    def _carry_out(
        self,
        verdict: Verdict,
        re: int | None,
        message: str | None,
        extra: dict[str, object] | None,
    ) -> None:
        if verdict.error is not None:
            error = ProtocolError(verdict.error, message or verdict.message, re=re, extra=extra)
            self.error(error)
        if verdict.outcome is Outcome.CLOSE and verdict.close_code is not None:
            self._backlog.clear()
            if verdict.close_code == CloseCode.SLOW_CONSUMER:
                self.socket.close(verdict.close_code, verdict.message)  # queue is dropped
            else:
                self.close(verdict.close_code, message or verdict.message)

    # ------------------------------------------------------------ input

    def on_message(self, data: bytes, text: bool = True) -> None:
        """One message: its requests are handled in order, each after the previous one
        completed (PROTOCOL.md), converted only when their turn comes."""
        try:
            items = wire.split_frame(data, self.node.config.max_batch)
        except wire.InvalidText as exc:
            if text:
                # RFC 6455 §8.1: a text message that is not UTF-8 fails the connection.
                self.socket.fail(CloseCode.INVALID_DATA, str(exc))
                return
            items = [ProtocolError(ErrorCode.BAD_REQUEST, "a binary frame that is not JSON")]
        except ProtocolError as err:
            items = [err]
        if self._backlog or self._worker is not None:
            # Behind a request still running: wait for it; reading pauses meanwhile
            # once a batch's worth is waiting, so the backlog stays bounded.
            self._backlog.extend(items)
            if len(self._backlog) >= self.node.config.max_batch:
                self.socket.hold_reading(True)
            return
        for index, item in enumerate(items):
            if self.machine.ended:
                return
            pending = self._handle(item)
            if pending is not None:
                self._backlog.extend(items[index + 1 :])
                self._start(pending)
                return

    def _handle(self, item: object) -> wire.Request | None:
        """Handle one request at once, or return it when it needs the worker (it awaits)."""
        try:
            if isinstance(item, ProtocolError):
                raise item
            request = item if isinstance(item, wire.Request) else wire.parse_item(item)
        except ProtocolError as err:
            if self.apply(Input.INVALID, re=err.re, message=_before_connect(err)):
                self.error(err)
            return None
        tag = type(request).__struct_config__.tag
        if not self.apply(str(tag), re=_re(request)):
            return None
        try:
            if isinstance(request, wire.Ping):
                self.reply(wire.Pong(re=request.id, server_time=self.node.clock()))
            elif isinstance(request, wire.Signal):
                self._rate_check(request)
                self.node.signal(self, request.session, request.name, request.data)
            elif isinstance(request, wire.Unsubscribe):
                self.node.unsubscribe(self, request.session)
                self.reply(wire.Ok(re=request.id))
            elif isinstance(request, wire.Send):
                self._rate_check(request)
                # The hot path: the session's state in memory, the append is queued now
                # (which completes the request: acks follow commits, in order).
                if not self._send_nowait(request):
                    return request
            else:
                if isinstance(request, wire.Subscribe):
                    self._rate_check(request)
                    self._subscription_check(request)
                return request
        except ProtocolError as err:
            if err.re is None:
                err.re = _re(request)
            self.error(err)
        except _Closed:
            pass
        return None

    def _start(self, request: wire.Request) -> None:
        self._worker = asyncio.get_running_loop().create_task(self._work(request))

    def _rate_check(self, request: wire.Send | wire.Signal | wire.Subscribe) -> None:
        subscribe = isinstance(request, wire.Subscribe)
        wait_ms = (self.subscribe_bucket if subscribe else self.bucket).take(_now_ms())
        if not wait_ms and not subscribe:
            # The user's own rate, across all their connections (and HTTP sends).
            assert self.user is not None
            wait_ms = self.node.limits.sends.take(self.user, _now_ms())
        if wait_ms:
            self.node.metrics.rate_limited.inc()
            # Every `rate_limited` error carries `retry_after_ms`, the last one too.
            extra: dict[str, object] = {"retry_after_ms": wait_ms}
            if self.strikes.hit(_now_ms()):
                self.apply(Input.RATE_ABUSE, re=request.id, extra=extra)
                raise _Closed
            raise ProtocolError(
                ErrorCode.RATE_LIMITED, "too many requests; slow down", re=request.id, extra=extra
            )

    def _subscription_check(self, request: wire.Subscribe) -> None:
        limit = self.node.config.max_subscriptions
        if request.session not in self.subscriptions and len(self.subscriptions) >= limit:
            raise ProtocolError(
                ErrorCode.BAD_REQUEST, f"at most {limit} subscriptions per connection"
            )

    async def _work(self, request: wire.Request | None) -> None:
        """Run `request`, then the backlog behind it in order, until it is empty."""
        try:
            while request is not None:
                await self._run_one(request)
                request = None
                backlog = self._backlog
                while backlog and request is None and not self.machine.ended:
                    request = self._handle(backlog.popleft())
        finally:
            self._worker = None
            self.socket.hold_reading(False)
            if self._deferred is not None and not self._inflight:
                self._close_deferred()

    async def _run_one(self, request: wire.Request) -> None:
        try:
            await self._run(request)
        except ProtocolError as err:
            if err.re is None:
                err.re = _re(request)
            self.error(err)
        except StoreUnavailable:
            self.error(
                ProtocolError(
                    ErrorCode.UNAVAILABLE,
                    "storage is unavailable; retry later",
                    re=_re(request),
                )
            )
        except Exception:
            log.exception("request %s failed", type(request).__name__)
            self.error(ProtocolError(ErrorCode.INTERNAL, "internal error", re=_re(request)))

    async def _run(self, request: wire.Request) -> None:
        node = self.node
        if isinstance(request, wire.Connect):
            await self._connect(request)
        elif isinstance(request, wire.Refresh):
            await self._refresh(request)
        elif isinstance(request, wire.Subscribe):
            if request.session in self.subscriptions:
                node.unsubscribe(self, request.session)
            await node.subscribe(self, request.session, request.after, request.id)
        elif isinstance(request, wire.Send):
            # Requests before it are done, so queuing the append now keeps the order.
            assert self.user is not None
            while not self._send_nowait(request):
                await node.warm(request.session, self.user)
        elif isinstance(request, wire.Cancel):
            assert self.user is not None
            await node.cancel(self.user, request.session, request.message_id)
            self.reply(wire.Ok(re=request.id))

    def _send_nowait(self, request: wire.Send) -> bool:
        """Queue the append; False when the session must be warmed first."""
        assert self.user is not None
        ack = self.node.send_nowait(
            self.user,
            request.session,
            client_id=request.client_id,
            kind=request.kind,
            data=request.data,
        )
        if ack is None:
            return False
        self._inflight += 1
        ack.add_done_callback(partial(self._acked, request.id))
        return True

    def _acked(self, re: int, ack: asyncio.Future[Ack]) -> None:
        self._inflight -= 1
        if self.closed or ack.cancelled():
            return
        self._answer(re, ack)
        if self._deferred is not None and not self._busy():
            self._close_deferred()

    def _answer(self, re: int, ack: asyncio.Future[Ack]) -> None:
        exc = ack.exception()
        if exc is None:
            result = ack.result()
            self.reply(
                wire.Ack(
                    re=re,
                    session=result.session,
                    client_id=result.client_id,
                    seq=result.seq,
                    event_id=result.event_id,
                    duplicate=result.duplicate,
                )
            )
        elif isinstance(exc, OutcomeUnknown):
            # No answer: an error would say "not stored". The client resends this send
            # with its client id after reconnecting and gets the truth.
            self.close(CloseCode.INTERNAL_ERROR, UNKNOWN_CLOSE_REASON)
        elif isinstance(exc, ProtocolError):
            exc.re = re
            self.error(exc)
        else:
            log.error("send failed", exc_info=exc)
            self.error(ProtocolError(ErrorCode.INTERNAL, "internal error", re=re))

    # ------------------------------------------------------------ auth

    async def _connect(self, request: wire.Connect) -> None:
        try:
            claims = await self.node.authenticate(request.token or self.header_token)
        except ProtocolError as err:
            self.apply(Input.CONNECT_FAILED, re=request.id, message=err.message)
            return
        if not self.node.limits.connections.acquire(claims.user):
            limit = self.node.limits.connections.limit
            self.node.metrics.rate_limited.inc()
            self.apply(
                Input.RATE_ABUSE,
                re=request.id,
                message=f"at most {limit} connections per user at once",
                extra={"retry_after_ms": HELD_RETRY_MS},
            )
            return
        self._holds_slot = claims.user
        if not self.apply(Input.CONNECT_OK):
            return
        if self._connect_timer is not None:
            self._connect_timer.cancel()
            self._connect_timer = None
        self.user = claims.user
        self._arm_expiry(claims.exp)
        config = self.node.config
        self.reply(
            wire.Connected(
                re=request.id,
                user=claims.user,
                conn=self.id,
                heartbeat_ms=config.heartbeat_ms,
                server_time=self.node.clock(),
                protocol=PROTOCOL_VERSION,
            )
        )

    async def _refresh(self, request: wire.Refresh) -> None:
        claims = await self.node.authenticate(request.token)
        if claims.user != self.user:
            raise ProtocolError(
                ErrorCode.UNAUTHORIZED, "a refreshed token must be for the same user"
            )
        self._arm_expiry(claims.exp)
        self.reply(wire.Ok(re=request.id))

    def _arm_expiry(self, exp_s: int) -> None:
        if self._expiry_timer is not None:
            self._expiry_timer.cancel()
        delay = max(0.0, exp_s - time.time())
        self._expiry_timer = asyncio.get_running_loop().call_later(delay, self._expired)

    def _expired(self) -> None:
        self._expiry_timer = None
        self.apply(Input.TOKEN_EXPIRED)

    def _connect_timeout(self) -> None:
        self._connect_timer = None
        self.apply(Input.CONNECT_TIMEOUT, message="no successful connect within the time limit")

    # ------------------------------------------------------------ end

    def subscription_ended(self, session_id: str, why: str) -> None:
        self.node.unsubscribe(self, session_id)
        self.error(ProtocolError(ErrorCode.FORBIDDEN, why, extra={"session": session_id}))

    def on_closed(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.machine.on(Input.CLOSED)
        for timer in (self._connect_timer, self._expiry_timer, self._deferred_timer):
            if timer is not None:
                timer.cancel()
        self._connect_timer = self._expiry_timer = self._deferred_timer = None
        self._deferred = None
        if self._worker is not None:
            self._worker.cancel()
        self._backlog.clear()
        if self._holds_slot is not None:
            self.node.limits.connections.release(self._holds_slot)
            self._holds_slot = None
        self.node.metrics.connections.dec()
        self.node.connection_closed(self)


#: Closes that wait for the answers of the sends already accepted (within the grace).
_AFTER_ANSWERS: Final = frozenset({CloseCode.GOING_AWAY, CloseCode.RATE_LIMITED})


class _Closed(Exception):
    """Raised inside request handling when the request closed the connection."""


def _re(request: wire.Request) -> int | None:
    return getattr(request, "id", None)


def _before_connect(err: ProtocolError) -> str:
    """The `unauthorized` message for an unparsable request before `connect`."""
    return f"send a valid `connect` first ({err.message})"
