"""Reconnect delays: exponential backoff with full jitter (AWS architecture blog, 2015).

Full jitter spreads a crowd of clients that lost the same server over the whole window,
so they do not come back in lockstep.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Delay before retry number `attempt` (0 for the first retry): uniform in
    [0, min(cap, base * 2**attempt)]."""

    base_s: float = 0.5
    cap_s: float = 30.0

    def __post_init__(self) -> None:
        if self.base_s <= 0 or self.cap_s < self.base_s:
            raise ValueError("need 0 < base_s <= cap_s")

    def ceiling(self, attempt: int) -> float:
        # Cap the exponent too: 2**1000 is a float overflow.
        exponent = min(max(attempt, 0), 62)
        return min(self.cap_s, self.base_s * float(2**exponent))

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        return float((rng or random).uniform(0, self.ceiling(attempt)))
