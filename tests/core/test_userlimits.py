"""The pure counting behind the per-user limits (`core.userlimits`)."""

from __future__ import annotations

import pytest

from tidings.core import userlimits
from tidings.core.userlimits import Holdings, UserBuckets


def test_holdings_refuse_at_the_cap_and_free_a_place_on_release() -> None:
    held = Holdings(2)
    assert held.acquire("al")
    assert held.acquire("al")
    assert not held.acquire("al")
    assert held.acquire("bo")  # each user has their own count
    held.release("al")
    assert held.held("al") == 1
    assert held.acquire("al")


def test_holdings_of_zero_have_no_cap_and_a_negative_cap_is_refused() -> None:
    held = Holdings(0)
    assert all(held.acquire("al") for _ in range(1000))
    with pytest.raises(ValueError, match="limit"):
        Holdings(-1)


def test_user_buckets_are_per_user_and_say_how_long_to_wait() -> None:
    buckets = UserBuckets(rate=2.0, burst=2)
    assert buckets.take("al", 0) == 0
    assert buckets.take("al", 0) == 0
    assert buckets.take("al", 0) == 500
    assert buckets.take("bo", 0) == 0
    assert buckets.take("al", 500) == 0


def test_user_buckets_forget_refilled_users_when_full(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(userlimits, "MAX_TRACKED_USERS", 3)
    buckets = UserBuckets(rate=1.0, burst=1)
    for user in ("a", "b", "c"):
        assert buckets.take(user, 0) == 0
    # At 10 s every bucket has refilled: forgetting them changes no answer.
    assert buckets.take("d", 10_000) == 0
    assert buckets.take("a", 10_000) == 0
    assert buckets.take("a", 10_000) == 1000


def test_a_rate_of_zero_never_limits() -> None:
    buckets = UserBuckets(rate=0, burst=1)
    assert all(buckets.take("al", 0) == 0 for _ in range(100))
