"""The tuning knobs of `connect` (every one has a sensible default)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import tidings


@dataclass(frozen=True, kw_only=True)
class Options:
    """Keyword arguments of `connect`; see the table in docs/client-python.md."""

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
    #: `connect()` raises `ConnectError` when neither a WebSocket nor a working HTTP
    #: fallback is reached within this (None: wait for ever).
    connect_timeout_s: float | None = 10.0
    #: `join()` raises (code `timeout`) when the session is not joined within this.
    join_timeout_s: float | None = 10.0
    client_name: str = f"tidings-py/{tidings.__version__}"

    def __post_init__(self) -> None:
        if self.max_queue < 1:
            raise ValueError("max_queue must be at least 1")
        if self.fallback_after is not None and self.fallback_after < 1:
            raise ValueError("fallback_after must be at least 1 (or None)")
        if self.fallback_receive not in ("poll", "sse"):
            raise ValueError("fallback_receive is 'poll' or 'sse'")
        for name in ("connect_timeout_s", "join_timeout_s"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive (or None)")
