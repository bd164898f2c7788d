"""The node's per-user limits (`core.userlimits`), read from the config, and the errors
a client gets when over one: `rate_limited` with `retry_after_ms` (HTTP 429 with
`Retry-After`), so every client library already knows to wait and retry."""

from __future__ import annotations

import time
from typing import Final

from tidings.core.userlimits import Holdings, UserBuckets, UserLimits
from tidings.protocol.codes import ErrorCode, ProtocolError
from tidings.server.config import Config

#: What a user over a cap on things held at once is told to wait: one is released when
#: a stream or connection ends, which no clock predicts.
HELD_RETRY_MS: Final = 1000


def user_limits(config: Config) -> UserLimits:
    return UserLimits(
        connections=config.max_connections_per_user,
        long_polls=config.max_long_polls_per_user,
        streams=config.max_streams_per_user,
        # `TIDINGS_RATE_LIMIT=0` turns send rate limits off (PROTOCOL.md), this one too.
        send_rate=config.user_rate_limit if config.rate_limit > 0 else 0,
        send_burst=config.user_rate_burst,
        create_rate=config.session_create_rate,
        create_burst=config.session_create_burst,
    )


def now_ms() -> int:
    return time.monotonic_ns() // 1_000_000


def take(buckets: UserBuckets, user: str, what: str, re: int | None = None) -> None:
    """Take one token of `user`'s bucket, or raise `rate_limited` saying when to retry."""
    wait_ms = buckets.take(user, now_ms())
    if wait_ms:
        raise ProtocolError(
            ErrorCode.RATE_LIMITED,
            f"too many {what} for this user; slow down",
            re=re,
            extra={"retry_after_ms": wait_ms},
        )


def acquire(holdings: Holdings, user: str, what: str) -> None:
    """Hold one more of `what` for `user`, or raise `rate_limited` at the cap."""
    if not holdings.acquire(user):
        raise ProtocolError(
            ErrorCode.RATE_LIMITED,
            f"at most {holdings.limit} {what} per user at once",
            extra={"retry_after_ms": HELD_RETRY_MS},
        )
