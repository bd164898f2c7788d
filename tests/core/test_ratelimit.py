from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidings.core.ratelimit import Strikes, TokenBucket

RELAXED = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_a_full_bucket_allows_a_burst_then_says_how_long_to_wait() -> None:
    bucket = TokenBucket(rate=10, burst=3)
    assert [bucket.take(0) for _ in range(3)] == [0, 0, 0]
    assert bucket.take(0) == 100  # one token every 100 ms
    assert bucket.take(99) == 1
    assert bucket.take(100) == 0


def test_a_refused_take_consumes_nothing() -> None:
    bucket = TokenBucket(rate=1, burst=2)
    bucket.take(0, 2)
    assert bucket.take(500) == 500
    assert bucket.take(500) == 500
    assert bucket.take(1000) == 0


def test_the_bucket_never_holds_more_than_the_burst() -> None:
    bucket = TokenBucket(rate=100, burst=2)
    bucket.take(0)
    assert bucket.available(1_000_000) == 2
    assert [bucket.take(1_000_000) for _ in range(3)][-1] > 0


def test_taking_several_tokens_waits_for_all_of_them() -> None:
    bucket = TokenBucket(rate=2, burst=4)
    bucket.take(0, 4)
    assert bucket.take(0, 3) == 1500


def test_a_clock_stepping_back_refills_nothing() -> None:
    bucket = TokenBucket(rate=1, burst=1)
    bucket.take(10_000)
    assert bucket.take(5_000) == 1000
    assert bucket.take(11_000) == 0


def test_a_zero_or_negative_rate_is_unlimited() -> None:
    for rate in (0, -1):
        bucket = TokenBucket(rate=rate, burst=0)
        assert all(bucket.take(0, 1000) == 0 for _ in range(100))


def test_impossible_requests_are_programming_errors() -> None:
    with pytest.raises(ValueError, match="burst"):
        TokenBucket(rate=1, burst=0)
    bucket = TokenBucket(rate=1, burst=2)
    with pytest.raises(ValueError, match="cannot take 3"):
        bucket.take(0, 3)
    with pytest.raises(ValueError, match="at least 1"):
        bucket.take(0, 0)


@RELAXED
@given(
    rate=st.floats(0.1, 1000),
    burst=st.integers(1, 50),
    steps=st.lists(st.tuples(st.integers(0, 5000), st.integers(1, 5)), max_size=40),
)
def test_waiting_the_time_asked_for_always_succeeds(
    rate: float, burst: int, steps: list[tuple[int, int]]
) -> None:
    bucket = TokenBucket(rate=rate, burst=burst)
    now = 0
    for advance, n in steps:
        now += advance
        n = min(n, burst)
        wait = bucket.take(now, n)
        if wait:
            assert bucket.take(now + wait, n) == 0
            now += wait


@RELAXED
@given(
    rate=st.integers(1, 100),
    burst=st.integers(1, 20),
    times=st.lists(st.integers(0, 10_000), max_size=200).map(sorted),
)
def test_no_more_than_burst_plus_rate_times_elapsed_are_allowed(
    rate: int, burst: int, times: list[int]
) -> None:
    bucket = TokenBucket(rate=rate, burst=burst)
    allowed = sum(1 for t in times if bucket.take(t) == 0)
    if times:
        assert allowed <= burst + rate * (times[-1] - times[0]) / 1000 + 1e-6


def test_strikes_trip_past_the_limit_within_the_window() -> None:
    strikes = Strikes(limit=2, window_ms=1000)
    assert strikes.hit(0) is False
    assert strikes.hit(10) is False
    assert strikes.hit(20) is True


def test_strikes_older_than_the_window_are_forgotten() -> None:
    strikes = Strikes(limit=2, window_ms=1000)
    strikes.hit(0)
    strikes.hit(500)
    assert strikes.hit(1000) is False  # the strike at 0 is out of the window
    assert strikes.count() == 2
    assert strikes.hit(1400) is True


def test_strikes_reject_nonsense_settings() -> None:
    with pytest.raises(ValueError, match="window_ms"):
        Strikes(limit=1, window_ms=0)
