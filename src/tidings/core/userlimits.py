"""Per-user bounds, as pure counting (time passed in): what one user may hold at once
(connections, long-polls, SSE streams) and how fast they may act across all of them
(sends, subscribes and session creations, one token bucket per user).

The server keeps one `UserLimits` per node; the state is keyed by user id only, so a
shared store (Redis) can later stand behind the same two shapes for several nodes."""

from __future__ import annotations

from tidings.core.ratelimit import TokenBucket

#: Buckets kept before the idle ones are forgotten (a full bucket is the same as none).
MAX_TRACKED_USERS = 100_000


class Holdings:
    """How many of one resource each user holds, capped at `limit` (0: no cap)."""

    def __init__(self, limit: int) -> None:
        if limit < 0:
            raise ValueError("limit must be >= 0")
        self.limit = limit
        self._held: dict[str, int] = {}

    def acquire(self, user: str) -> bool:
        """Take one for `user`; False (nothing taken) when they already hold `limit`."""
        held = self._held.get(user, 0)
        if self.limit and held >= self.limit:
            return False
        self._held[user] = held + 1
        return True

    def release(self, user: str) -> None:
        held = self._held.get(user, 0) - 1
        if held > 0:
            self._held[user] = held
        else:
            self._held.pop(user, None)

    def held(self, user: str) -> int:
        return self._held.get(user, 0)


class UserBuckets:
    """One token bucket per user: `rate` per second, `burst` saved (`rate <= 0`: none)."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self._buckets: dict[str, TokenBucket] = {}

    def take(self, user: str, now_ms: int) -> int:
        """0 when `user` may act now, else the ms until they may (nothing taken)."""
        if self.rate <= 0:
            return 0
        bucket = self._buckets.get(user)
        if bucket is None:
            if len(self._buckets) >= MAX_TRACKED_USERS:
                self._forget_full(now_ms)
            bucket = self._buckets[user] = TokenBucket(self.rate, self.burst)
        return bucket.take(now_ms)

    def _forget_full(self, now_ms: int) -> None:
        """Drop the buckets that refilled: forgetting them changes nothing."""
        full = [u for u, b in self._buckets.items() if b.available(now_ms) >= self.burst]
        for user in full:
            del self._buckets[user]
        if len(self._buckets) >= MAX_TRACKED_USERS:  # all busy: start over, fail open
            self._buckets.clear()


class UserLimits:
    """Every per-user bound of one node."""

    def __init__(
        self,
        *,
        connections: int,
        long_polls: int,
        streams: int,
        send_rate: float,
        send_burst: int,
        create_rate: float,
        create_burst: int,
    ) -> None:
        self.connections = Holdings(connections)
        self.long_polls = Holdings(long_polls)
        self.streams = Holdings(streams)
        self.sends = UserBuckets(send_rate, send_burst)
        self.creations = UserBuckets(create_rate, create_burst)
