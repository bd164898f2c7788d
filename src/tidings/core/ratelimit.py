"""Rate limits, with time passed in (integer milliseconds) so tests can steer it."""

from __future__ import annotations

import math
from collections import deque

# Float arithmetic on tokens lands a hair off whole numbers (0.99 + 0.01 < 1). Waits are
# computed with this tolerance and takes accept twice it, which keeps both promises: no
# wait is a millisecond longer than needed, and waiting that long always succeeds.
_EPSILON = 1e-9


class TokenBucket:
    """`rate` tokens per second, up to `burst` saved; starts full. `rate <= 0`: unlimited."""

    def __init__(self, rate: float, burst: int) -> None:
        if rate > 0 and burst < 1:
            raise ValueError("burst must be at least 1")
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._last_ms: int | None = None

    @property
    def unlimited(self) -> bool:
        return self.rate <= 0

    def _refill(self, now_ms: int) -> None:
        if self._last_ms is None:
            self._last_ms = now_ms
            return
        elapsed = now_ms - self._last_ms
        if elapsed <= 0:  # a clock that stood still or stepped back refills nothing
            return
        self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate / 1000)
        self._last_ms = now_ms

    def take(self, now_ms: int, n: int = 1) -> int:
        """Take `n` tokens: 0 when done, else the ms until `n` are there (nothing taken)."""
        if self.unlimited:
            return 0
        if n < 1:
            raise ValueError("n must be at least 1")
        if n > self.burst:
            raise ValueError(f"cannot take {n} tokens from a bucket of {self.burst}")
        self._refill(now_ms)
        if self._tokens + 2 * _EPSILON >= n:
            self._tokens = max(0.0, self._tokens - n)
            return 0
        return max(1, math.ceil((n - self._tokens - _EPSILON) * 1000 / self.rate))

    def available(self, now_ms: int) -> float:
        """The tokens there at `now_ms` (refills; takes nothing)."""
        if self.unlimited:
            return math.inf
        self._refill(now_ms)
        return self._tokens


class Strikes:
    """Counts refusals in a sliding window of `window_ms`; too many means abuse."""

    def __init__(self, limit: int, window_ms: int) -> None:
        if limit < 0 or window_ms <= 0:
            raise ValueError("limit must be >= 0 and window_ms > 0")
        self.limit = limit
        self.window_ms = window_ms
        self._hits: deque[int] = deque()

    def hit(self, now_ms: int) -> bool:
        """Record one refusal at `now_ms`; True when the window holds more than `limit`."""
        self._hits.append(now_ms)
        horizon = now_ms - self.window_ms
        while self._hits and self._hits[0] <= horizon:
            self._hits.popleft()
        return len(self._hits) > self.limit

    def count(self) -> int:
        """Refusals in the window as of the last `hit`."""
        return len(self._hits)
