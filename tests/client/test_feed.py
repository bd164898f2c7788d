"""Change batches (debounced, coalesced per thing, nothing merged away) and backoff."""

from __future__ import annotations

import asyncio
import random

import pytest

from tidings.client.backoff import Backoff
from tidings.client.changes import ChangeBatch, ChangeFeed


async def test_a_batch_coalesces_repeated_updates_but_keeps_every_distinct_thing() -> None:
    values = {"m_1": "a", "m_2": "b", None: "Title"}
    feed = ChangeFeed("s", lambda what, key: values[key], debounce_s=0.01)
    batches: list[ChangeBatch] = []
    feed.on_change(batches.append)
    feed.touch([("message", "m_1")])
    feed.touch([("message", "m_2"), ("title", None)])
    values["m_1"] = "a, grown"
    feed.touch([("message", "m_1")])  # again: one entry, with its latest value
    await asyncio.sleep(0.05)
    [batch] = batches
    assert [(c.what, c.key, c.value) for c in batch.changes] == [
        ("message", "m_1", "a, grown"),
        ("message", "m_2", "b"),
        ("title", None, "Title"),
    ]
    await feed.close()


async def test_change_streams_get_every_batch_and_end_when_the_feed_closes() -> None:
    feed = ChangeFeed("s", lambda what, key: key, debounce_s=0)
    stream = feed.stream()
    feed.touch([("message", "1")])
    await asyncio.sleep(0.01)
    feed.touch([("message", "2")])
    await feed.close()  # flushes what is pending
    got = [[c.key for c in batch.changes] async for batch in stream]
    assert got == [["1"], ["2"]]


async def test_a_coroutine_callback_is_awaited_before_the_feed_is_closed() -> None:
    feed = ChangeFeed("s", lambda what, key: key, debounce_s=0)
    done: list[str] = []

    async def slow(batch: ChangeBatch) -> None:
        await asyncio.sleep(0.01)
        done.append("yes")

    feed.on_change(slow)
    feed.touch([("title", None)])
    await asyncio.sleep(0.001)
    await feed.close()
    assert done == ["yes"]


def test_backoff_is_full_jitter_under_an_exponential_ceiling_with_a_cap() -> None:
    backoff = Backoff(0.5, 30)
    assert [backoff.ceiling(n) for n in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert backoff.ceiling(10_000) == 30
    rng = random.Random(7)
    delays = [backoff.delay(3, rng) for _ in range(200)]
    assert all(0 <= d <= 4 for d in delays)
    assert min(delays) < 1
    assert max(delays) > 3


def test_backoff_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="base_s"):
        Backoff(0, 1)
