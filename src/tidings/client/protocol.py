"""The client's rules, sans I/O: what to do on each input, with no await, socket or clock.

Everything here is decided from its arguments (the time is passed in as `now`), so the
asyncio `Client`, the HTTP fallback and the browser client can follow the same rules and
tests can walk them without a network. docs/client-python.md ("Client rules") lists them
by number; the comments below cite those numbers.

- `ConnectionMachine`: the connection's state as ONE transition table (`TRANSITIONS`),
  with the failure count that decides when the HTTP fallback starts (rules 1-4, 9).
- `LinkCore`: one open WebSocket's bookkeeping: request ids and the pending request each
  one answers, sends already written on this link, sessions subscribed on it, heartbeat
  (rules 5-8, 10-12).
- `route`: which part of the client a server frame is for (rule 13).
- Small pure rules: `resume_after`, `refresh_delay`, `send_retry_s`, `connect_reply`,
  `startup` (when `connect()` returns or fails, rule 17).

The replica (`client/replica.py`) is the other half of the core: it reconciles acks and
events in either order and detects gaps (rules 14-16).

    IDLE ──start──▶ CONNECTING ──link_open, resumed──▶ CONNECTED
                       │  ▲                               │
         attempt_failed│  └──────── link_open ──────┐     │ link_lost
                       ▼                            │     ▼
                  RECONNECTING ◀──── link_lost ─────┴── (any live state)
                       │ fallback_due                     ▲
                       ▼                                  │
                    FALLBACK ──link_open (fallback stops), resumed──▶ CONNECTED
    refused (4001/4003, a refused token) or close: CLOSED, from any state; CLOSED is final.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, Generic, Protocol, TypeVar

import msgspec

from tidings.client.errors import AuthError, TidingsError
from tidings.protocol.client_frames import Frame
from tidings.protocol.messages import (
    Cancel,
    Connect,
    Ping,
    Refresh,
    Request,
    Send,
    Signal,
    Subscribe,
    Unsubscribe,
)

#: Close codes after which retrying cannot help: the client stops and reports (rule 4).
FATAL_CLOSE_CODES: Final = frozenset({4001, 4003})
#: Send errors worth retrying as they are, after the server's `retry_after_ms` (rule 11).
RETRYABLE_CODES: Final = frozenset({"rate_limited", "unavailable"})
#: The wait before retrying a retryable send when the server named none.
DEFAULT_RETRY_S: Final = 0.5
#: The server's heartbeat period when its `connected` reply names none.
DEFAULT_HEARTBEAT_MS: Final = 30_000
#: Never refresh a token sooner than this after the last refresh (a token about to expire).
MIN_REFRESH_S: Final = 0.05
#: Refresh at most this long before `exp`, and at two thirds of the remaining life at least.
REFRESH_MARGIN_S: Final = 60.0


class ConnectionState(StrEnum):
    IDLE = "idle"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    FALLBACK = "fallback"
    CLOSED = "closed"


class Input(StrEnum):
    START = "start"
    """The application starts the client."""
    LINK_OPEN = "link_open"
    """A WebSocket opened and its `connect` was answered with `connected`."""
    RESUMED = "resumed"
    """Every session is resubscribed and every unacknowledged send re-sent on the link."""
    ATTEMPT_FAILED = "attempt_failed"
    """A connection attempt failed, fewer than `fallback_after` in a row."""
    FALLBACK_DUE = "fallback_due"
    """A connection attempt failed, the `fallback_after`-th (or more) in a row."""
    LINK_LOST = "link_lost"
    """An open link closed or broke with a code worth retrying (network, 1001, 1011, 4009)."""
    REFUSED = "refused"
    """The server refused the token or access (4001, 4003): retrying cannot help."""
    CLOSE = "close"
    """The application closes the client."""


class Action(StrEnum):
    """What the adapter must do on a transition, besides recording the new state."""

    START_FALLBACK = "start_fallback"
    """Send over `POST …/events` and receive over long-poll or SSE, per joined session."""
    STOP_FALLBACK = "stop_fallback"
    """Stop the HTTP fallback's tasks (before the WebSocket resumes, or for good)."""
    COUNT_RECONNECT = "count_reconnect"
    """An open link was lost: one more reconnect."""
    FAIL_EVERYTHING = "fail_everything"
    """Fail every session, pending send and change stream with the client's error."""


@dataclass(frozen=True)
class Transition:
    to: ConnectionState
    actions: tuple[Action, ...] = ()
    #: The input means nothing in this state (stale, or impossible): nothing happens.
    ignored: bool = False


def _go(to: ConnectionState, *actions: Action) -> Transition:
    return Transition(to, actions)


def _stay(state: ConnectionState) -> Transition:
    return Transition(state, (), ignored=True)


S = ConnectionState
_LIVE: Final = (S.CONNECTING, S.CONNECTED, S.RECONNECTING, S.FALLBACK)

TRANSITIONS: Final[dict[tuple[ConnectionState, Input], Transition]] = {
    # ---- IDLE: made, not started.
    (S.IDLE, Input.START): _go(S.CONNECTING),
    **{(S.IDLE, i): _stay(S.IDLE) for i in Input if i not in (Input.START, Input.CLOSE)},
    (S.IDLE, Input.CLOSE): _go(S.CLOSED),
    # ---- the live states: started, not closed.
    **{(s, Input.START): _stay(s) for s in _LIVE},
    # A link opens: the state stays until its resume is done (rule 5); in fallback, the
    # fallback stops first so that the WebSocket resumes from the replica's seq (rule 9).
    (S.CONNECTING, Input.LINK_OPEN): _go(S.CONNECTING),
    (S.RECONNECTING, Input.LINK_OPEN): _go(S.RECONNECTING),
    (S.FALLBACK, Input.LINK_OPEN): _go(S.FALLBACK, Action.STOP_FALLBACK),
    (S.CONNECTED, Input.LINK_OPEN): _stay(S.CONNECTED),
    **{(s, Input.RESUMED): _go(S.CONNECTED) for s in _LIVE},
    # A failed attempt: retry after a backoff (rule 1); in fallback, keep falling back.
    (S.CONNECTING, Input.ATTEMPT_FAILED): _go(S.RECONNECTING),
    (S.RECONNECTING, Input.ATTEMPT_FAILED): _go(S.RECONNECTING),
    (S.FALLBACK, Input.ATTEMPT_FAILED): _stay(S.FALLBACK),
    (S.CONNECTED, Input.ATTEMPT_FAILED): _stay(S.CONNECTED),
    # Enough failures in a row: the HTTP fallback starts; the WebSocket is still retried.
    (S.CONNECTING, Input.FALLBACK_DUE): _go(S.FALLBACK, Action.START_FALLBACK),
    (S.RECONNECTING, Input.FALLBACK_DUE): _go(S.FALLBACK, Action.START_FALLBACK),
    (S.FALLBACK, Input.FALLBACK_DUE): _stay(S.FALLBACK),
    (S.CONNECTED, Input.FALLBACK_DUE): _stay(S.CONNECTED),
    # A link lost (also one lost while resuming): reconnect (rule 2).
    **{(s, Input.LINK_LOST): _go(S.RECONNECTING, Action.COUNT_RECONNECT) for s in _LIVE},
    # Refused: stop for good and say why (rule 4).
    **{
        (s, Input.REFUSED): _go(S.CLOSED, Action.STOP_FALLBACK, Action.FAIL_EVERYTHING)
        for s in _LIVE
    },
    **{(s, Input.CLOSE): _go(S.CLOSED, Action.STOP_FALLBACK) for s in _LIVE},
    # ---- CLOSED: final.
    **{(S.CLOSED, i): _stay(S.CLOSED) for i in Input},
}


class ConnectionMachine:
    """The connection's state, moved only by `on` (and its two helpers), by the table."""

    def __init__(self, *, fallback_after: int | None) -> None:
        self.state = ConnectionState.IDLE
        self.fallback_after = fallback_after
        #: Connection attempts failed in a row (reset when a link opens).
        self.failures = 0
        #: Open links lost so far.
        self.reconnects = 0

    def on(self, input: Input) -> Transition:
        transition = TRANSITIONS[(self.state, input)]
        if not transition.ignored:
            self.state = transition.to
            if Action.COUNT_RECONNECT in transition.actions:
                self.reconnects += 1
        return transition

    def attempt_failed(self) -> Transition:
        """One more failed attempt: `fallback_due` once `fallback_after` are in a row."""
        self.failures += 1
        due = self.fallback_after is not None and self.failures >= self.fallback_after
        return self.on(Input.FALLBACK_DUE if due else Input.ATTEMPT_FAILED)

    def link_open(self) -> Transition:
        self.failures = 0
        return self.on(Input.LINK_OPEN)

    def retry_attempt(self) -> int:
        """The backoff attempt number of the next wait: 0 after a lost link (rule 1)."""
        return max(self.failures - 1, 0)

    @property
    def closed(self) -> bool:
        return self.state is ConnectionState.CLOSED


class Probe(StrEnum):
    """What the HTTP fallback's first request (`GET /healthz`) found."""

    NOT_YET = "not_yet"
    ANSWERED = "answered"
    FAILED = "failed"


class Startup(StrEnum):
    WAIT = "wait"
    READY = "ready"
    """`connect()` returns: connected, or in a fallback whose HTTP API answers."""
    FAILED = "failed"
    """`connect()` raises: refused (the client's error), or the server is unreachable."""


def startup(state: ConnectionState, probe: Probe, *, timed_out: bool) -> Startup:
    """Whether `connect()` may return yet (rule 17)."""
    if state is ConnectionState.CONNECTED:
        return Startup.READY
    if state is ConnectionState.CLOSED:
        return Startup.FAILED
    if state is ConnectionState.FALLBACK and probe is Probe.ANSWERED:
        return Startup.READY
    if (state is ConnectionState.FALLBACK and probe is Probe.FAILED) or timed_out:
        return Startup.FAILED
    return Startup.WAIT


# ---------------------------------------------------------------- requests


def encode(request: Request) -> str:
    """A request as JSON text, without the fields it leaves unset (`after`, a signal's id)."""
    fields = msgspec.to_builtins(request)
    return msgspec.json.encode({k: v for k, v in fields.items() if v is not None}).decode()


def connect_request(request_id: int, token: str, client: str) -> Connect:
    return Connect(id=request_id, token=token, client=client)


def connect_reply(frames: list[Frame], *, heartbeat_s: float | None) -> tuple[str, float]:
    """The (user, heartbeat period) of a `connected` reply; raises for anything else."""
    reply = frames[0] if frames else {}
    if reply.get("type") == "error":
        code = str(reply.get("code", ""))
        if code == "unauthorized":
            raise AuthError(code, str(reply.get("message", "")), close_code=4001)
        raise TidingsError.from_frame(reply)
    if reply.get("type") != "connected":
        raise TidingsError("bad_reply", f"expected `connected`, got {reply!r:.200}")
    heartbeat = heartbeat_s or int(reply.get("heartbeat_ms", DEFAULT_HEARTBEAT_MS)) / 1000
    return str(reply.get("user") or ""), heartbeat


def close_error(code: int | None, reason: str) -> AuthError | None:
    """The error a close code ends the client with, or None when it is worth a retry."""
    if code not in FATAL_CLOSE_CODES:
        return None
    name = "unauthorized" if code == 4001 else "forbidden"
    return AuthError(name, reason or "refused by the server", close_code=code)


class Resumable(Protocol):
    @property
    def loaded(self) -> bool: ...

    @property
    def seq(self) -> int: ...


def resume_after(replica: Resumable) -> int | None:
    """Subscribe `after` the replica's seq once it holds a snapshot, else ask for one."""
    return replica.seq if replica.loaded else None


def refresh_delay(exp: float, now: float) -> float:
    """Seconds until the token expiring at `exp` should be refreshed (rule 12)."""
    remaining = exp - now
    return max(MIN_REFRESH_S, remaining - REFRESH_MARGIN_S, remaining * 2 / 3)


def send_retry_s(error: TidingsError) -> float | None:
    """How long to wait before re-sending a refused send as it is; None: it failed."""
    if error.code not in RETRYABLE_CODES:
        return None
    return (error.retry_after_ms or DEFAULT_RETRY_S * 1000) / 1000


# ---------------------------------------------------------------- one link

W = TypeVar("W")
R = TypeVar("R", bound=Request)


class Beat(StrEnum):
    WAIT = "wait"
    PING = "ping"
    DROP = "drop"


@dataclass(eq=False)
class LinkCore(Generic[W]):
    """One open WebSocket's bookkeeping. `W` is whatever the adapter waits on for a reply
    (an asyncio future): the core only stores it with the request id it waits for."""

    ids: Iterator[int]
    heartbeat_s: float
    last_rx: float
    #: Sends go straight out once the resume is done (rule 7).
    live: bool = False
    #: Client ids written on this link (each goes out once per link, rule 6).
    sent: set[str] = field(default_factory=set)
    #: Sessions subscribed (or being subscribed) on this link.
    subscribed: set[str] = field(default_factory=set)
    #: Request id → (session, client id) of each send without an outcome on this link.
    sends: dict[int, tuple[str, str]] = field(default_factory=dict)
    #: Request id → what waits for its reply.
    pending: dict[int, W] = field(default_factory=dict)
    ping_out: bool = False

    def request(self, make: type[R], waiter: W | None = None, **fields: Any) -> R:
        """A request with a fresh id (`make` is its struct), its waiter registered."""
        request_id = next(self.ids)
        if waiter is not None:
            self.pending[request_id] = waiter
        return make(id=request_id, **fields)

    def subscribe(self, session: str, after: int | None, waiter: W) -> Subscribe:
        self.subscribed.add(session)
        return self.request(Subscribe, waiter, session=session, after=after)

    def unsubscribe(self, session: str) -> Unsubscribe:
        self.subscribed.discard(session)
        return self.request(Unsubscribe, session=session)

    def send(self, session: str, client_id: str, kind: str, data: dict[str, Any]) -> Send | None:
        """The `send` frame of a send not yet written on this link, else None (rule 6)."""
        if client_id in self.sent:
            return None
        request_id = next(self.ids)
        self.sends[request_id] = (session, client_id)
        self.sent.add(client_id)
        return Send(id=request_id, session=session, client_id=client_id, kind=kind, data=data)

    def signal(self, session: str, name: str, data: dict[str, Any]) -> Signal:
        return Signal(session=session, name=name, data=data)

    def cancel(self, session: str, message_id: str, waiter: W) -> Cancel:
        return self.request(Cancel, waiter, session=session, message_id=message_id)

    def refresh(self, token: str, waiter: W) -> Refresh:
        return self.request(Refresh, waiter, token=token)

    def forget(self, request_id: int) -> None:
        self.pending.pop(request_id, None)

    def missing(self, sessions: Iterable[str]) -> list[str]:
        """Sessions not yet subscribed on this link (rule 5: joined ones too)."""
        return [s for s in sessions if s not in self.subscribed]

    def unsent(self, sends: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        """(session, client id) pairs without an ack not yet re-sent on this link (rule 6)."""
        return [(s, cid) for s, cid in sends if cid not in self.sent]

    def retry_later(self, client_id: str) -> None:
        """A retryable refusal: the send may go out on this link again (rule 11)."""
        self.sent.discard(client_id)

    def received(self, now: float) -> None:
        self.last_rx = now
        self.ping_out = False

    @property
    def heartbeat_tick_s(self) -> float:
        return self.heartbeat_s / 4

    def heartbeat(self, now: float) -> Beat:
        """Ping after half a period of silence, drop the link after one and a half (rule 10)."""
        silent = now - self.last_rx
        if silent > 1.5 * self.heartbeat_s:
            return Beat.DROP
        if silent > self.heartbeat_s / 2 and not self.ping_out:
            self.ping_out = True
            return Beat.PING
        return Beat.WAIT

    def ping(self) -> Ping:
        return self.request(Ping)

    def lost(self) -> list[W]:
        """The link is gone: what still waits for a reply (answer each `connection`)."""
        self.live = False
        waiters = list(self.pending.values())
        self.pending.clear()
        return waiters


LINK_GONE: Final[Frame] = {
    "type": "error",
    "code": "connection",
    "message": "the connection closed",
}


# ---------------------------------------------------------------- routing frames


class Route(StrEnum):
    EVENT = "event"
    STREAM = "stream"
    ACK = "ack"
    SUBSCRIBED = "subscribed"
    PRESENCE = "presence"
    SIGNAL = "signal"
    SEND_REFUSED = "send_refused"
    SEND_RETRY = "send_retry"
    ENDED = "ended"
    """The server ended a subscription (the member was removed)."""
    NONE = "none"


_BY_TYPE: Final[Mapping[str, Route]] = {
    "event": Route.EVENT,
    "stream": Route.STREAM,
    "ack": Route.ACK,
    "subscribed": Route.SUBSCRIBED,
    "presence": Route.PRESENCE,
    "signal": Route.SIGNAL,
}


@dataclass(frozen=True)
class Routed(Generic[W]):
    route: Route
    session: str
    client_id: str | None = None
    error: TidingsError | None = None
    retry_in_s: float | None = None
    #: What waited for this frame (a reply to one of the link's requests).
    waiter: W | None = None


def route(frame: Frame, link: LinkCore[W] | None) -> Routed[W]:
    """Where a server frame goes (rule 13); for a link, its request bookkeeping too."""
    kind = str(frame.get("type"))
    session = str(frame.get("session", ""))
    re = frame.get("re")
    request_id = re if isinstance(re, int) and not isinstance(re, bool) else None
    if kind == "error" and link is not None and request_id in link.sends:
        # A send's refusal names the send by request id only.
        session, client_id = link.sends.pop(request_id)
        refusal = TidingsError.from_frame(frame)
        retry = send_retry_s(refusal)
        if retry is not None:
            link.retry_later(client_id)
            return Routed(Route.SEND_RETRY, session, client_id, refusal, retry)
        return Routed(Route.SEND_REFUSED, session, client_id, refusal)
    found = _BY_TYPE.get(kind, Route.NONE)
    if kind == "error" and request_id is None and session:
        found = Route.ENDED
    waiter: W | None = None
    if link is not None and request_id is not None:
        if found is Route.ACK:
            link.sends.pop(request_id, None)
        waiter = link.pending.pop(request_id, None)
    error = TidingsError.from_frame(frame) if found is Route.ENDED else None
    return Routed(found, session, error=error, waiter=waiter)
