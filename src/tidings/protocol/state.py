"""The life of one connection, as one transition table (sans-I/O).

The server feeds the machine every input: each request's `type` as it arrives, and the
events it observes itself (`connect_ok` once a token is verified, `token_expired` from the
expiry timer, `slow_consumer` from the outbound queue...). The machine answers with a
`Verdict`: handle the request, refuse it with an error frame, close the socket with a
code (after the error frame, if the verdict has one), or ignore it. Every rule about what
is legal when lives in `TRANSITIONS`; the server holds none of its own.

    AWAITING_CONNECT ──connect_ok──▶ OPEN
          │                           │
          │ connect_failed, timeout,  │ token_expired, close, slow_consumer,
          │ any other request...      │ rate_abuse, frame_too_large, internal_error
          ▼                           ▼
        CLOSING ◀─────────────────────┘
          │ closed (the socket is gone, from any state)
          ▼
        CLOSED
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from tidings.protocol.codes import CloseCode, ErrorCode
from tidings.protocol.messages import REQUEST_TYPES


class State(StrEnum):
    AWAITING_CONNECT = "awaiting_connect"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class Input(StrEnum):
    """What may happen to a connection, besides the requests (named by their `type`)."""

    INVALID = "invalid"
    """A request (or a whole frame) that could not be parsed: malformed, unknown, wrong."""
    CONNECT_OK = "connect_ok"
    """The `connect` frame's token was verified."""
    CONNECT_FAILED = "connect_failed"
    """The `connect` frame's token was missing, invalid or expired."""
    CONNECT_TIMEOUT = "connect_timeout"
    """No successful `connect` within 10 s of the upgrade."""
    TOKEN_EXPIRED = "token_expired"
    """The token's `exp` passed without a `refresh`."""
    CLOSE = "close"
    """The server closes the connection: shutdown or deploy (1001)."""
    SLOW_CONSUMER = "slow_consumer"
    """The outbound queue passed its bound."""
    RATE_ABUSE = "rate_abuse"
    """The rate limit was exceeded persistently."""
    FRAME_TOO_LARGE = "frame_too_large"
    """A frame over the configured limit arrived."""
    INTERNAL_ERROR = "internal_error"
    """A bug in the server; the connection cannot go on."""
    CLOSED = "closed"
    """The socket is gone (either side closed it, or it broke)."""


#: Every request type of protocol v1, as an input (`Input` holds the others).
REQUESTS: Final = frozenset(REQUEST_TYPES)
#: Requests that need a successful `connect` first.
AUTHENTICATED_REQUESTS: Final = REQUESTS - {"connect"}
INPUTS: Final = REQUESTS | frozenset(Input)


class Outcome(StrEnum):
    ACCEPT = "accept"
    """Handle the input (for a request: process it and reply)."""
    REJECT = "reject"
    """Answer the request with an `error` frame (`Verdict.error`); the state stays."""
    CLOSE = "close"
    """Send the `error` frame when the verdict has one, then close with `close_code`."""
    IGNORE = "ignore"
    """Do nothing: the connection is closing or closed, or the input is stale."""


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    error: ErrorCode | None = None
    close_code: CloseCode | None = None
    message: str = ""

    @property
    def accepted(self) -> bool:
        return self.outcome is Outcome.ACCEPT


ACCEPT: Final = Verdict(Outcome.ACCEPT)
IGNORE: Final = Verdict(Outcome.IGNORE)
# Before a successful connect only `connect` is worth any work: anything else ends the
# connection, so that an unauthenticated client cannot make the server parse or answer
# more than one frame's first request (the rest of a batch is then dropped unparsed).
NOT_CONNECTED: Final = Verdict(
    Outcome.CLOSE, ErrorCode.UNAUTHORIZED, CloseCode.UNAUTHORIZED, "send `connect` first"
)
ALREADY_CONNECTED: Final = Verdict(
    Outcome.REJECT, ErrorCode.BAD_REQUEST, message="already connected"
)


def _close(code: CloseCode, error: ErrorCode | None = None, message: str = "") -> Verdict:
    return Verdict(Outcome.CLOSE, error, code, message)


# Closes that can happen in any live state, with the frame and code each sends.
_LIVE_CLOSES: Final[dict[str, Verdict]] = {
    # Shutdown: the client reconnects elsewhere and resumes; no error frame.
    Input.CLOSE: _close(CloseCode.GOING_AWAY, message="server going away"),
    # The queue is full, so an error frame could not be queued anyway.
    Input.SLOW_CONSUMER: _close(CloseCode.SLOW_CONSUMER, message="slow consumer"),
    Input.RATE_ABUSE: _close(
        CloseCode.RATE_LIMITED, ErrorCode.RATE_LIMITED, "rate limit persistently exceeded"
    ),
    Input.FRAME_TOO_LARGE: _close(CloseCode.MESSAGE_TOO_BIG, message="frame too large"),
    Input.INTERNAL_ERROR: _close(CloseCode.INTERNAL_ERROR, ErrorCode.INTERNAL, "internal error"),
}

TRANSITIONS: Final[dict[tuple[State, str], tuple[Verdict, State]]] = {
    # ---- AWAITING_CONNECT: only `connect` is handled; everything else waits for it.
    # `connect` is accepted for verification; the outcome comes as connect_ok/failed.
    (State.AWAITING_CONNECT, "connect"): (ACCEPT, State.AWAITING_CONNECT),
    # Any other request (or an unparsable one) before a successful connect:
    # `unauthorized`, then close 4001.
    **{
        (State.AWAITING_CONNECT, name): (NOT_CONNECTED, State.CLOSING)
        for name in AUTHENTICATED_REQUESTS | {Input.INVALID}
    },
    # The token checks out: reply `connected`.
    (State.AWAITING_CONNECT, Input.CONNECT_OK): (ACCEPT, State.OPEN),
    # A bad token, or none within the deadline: `unauthorized`, then close 4001.
    (State.AWAITING_CONNECT, Input.CONNECT_FAILED): (
        _close(CloseCode.UNAUTHORIZED, ErrorCode.UNAUTHORIZED, "invalid token"),
        State.CLOSING,
    ),
    (State.AWAITING_CONNECT, Input.CONNECT_TIMEOUT): (
        _close(CloseCode.UNAUTHORIZED, ErrorCode.UNAUTHORIZED, "no connect in time"),
        State.CLOSING,
    ),
    # No token yet, so nothing can expire.
    (State.AWAITING_CONNECT, Input.TOKEN_EXPIRED): (IGNORE, State.AWAITING_CONNECT),
    **{(State.AWAITING_CONNECT, i): (v, State.CLOSING) for i, v in _LIVE_CLOSES.items()},
    (State.AWAITING_CONNECT, Input.CLOSED): (ACCEPT, State.CLOSED),
    # ---- OPEN: every request but `connect` is handled.
    (State.OPEN, "connect"): (ALREADY_CONNECTED, State.OPEN),
    **{(State.OPEN, name): (ACCEPT, State.OPEN) for name in AUTHENTICATED_REQUESTS},
    # An unparsable request once connected: answered with its own `bad_request`.
    (State.OPEN, Input.INVALID): (ACCEPT, State.OPEN),
    # Stale outcomes (a timer that fired as the connect succeeded): nothing to do.
    (State.OPEN, Input.CONNECT_OK): (IGNORE, State.OPEN),
    (State.OPEN, Input.CONNECT_FAILED): (IGNORE, State.OPEN),
    (State.OPEN, Input.CONNECT_TIMEOUT): (IGNORE, State.OPEN),
    # `exp` passed without a refresh: `unauthorized`, then close 4001.
    (State.OPEN, Input.TOKEN_EXPIRED): (
        _close(CloseCode.UNAUTHORIZED, ErrorCode.UNAUTHORIZED, "token expired"),
        State.CLOSING,
    ),
    **{(State.OPEN, i): (v, State.CLOSING) for i, v in _LIVE_CLOSES.items()},
    (State.OPEN, Input.CLOSED): (ACCEPT, State.CLOSED),
    # ---- CLOSING: the close is under way; nothing more is handled or answered.
    **{(State.CLOSING, i): (IGNORE, State.CLOSING) for i in INPUTS - {Input.CLOSED}},
    (State.CLOSING, Input.CLOSED): (ACCEPT, State.CLOSED),
    # ---- CLOSED: final.
    **{(State.CLOSED, i): (IGNORE, State.CLOSED) for i in INPUTS},
}


class ConnectionStateMachine:
    """One connection's state; `on` applies an input and says what to do."""

    def __init__(self) -> None:
        self.state = State.AWAITING_CONNECT

    def on(self, input: str) -> Verdict:
        """Apply `input` (a request type or an `Input`); `ValueError` for unknown inputs."""
        try:
            verdict, self.state = TRANSITIONS[(self.state, input)]
        except KeyError:
            raise ValueError(f"unknown input {input!r}") from None
        return verdict

    @property
    def open(self) -> bool:
        return self.state is State.OPEN

    @property
    def ended(self) -> bool:
        """Closing or closed: no request is handled any more."""
        return self.state is State.CLOSING or self.state is State.CLOSED
