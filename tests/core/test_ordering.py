from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidings.core.ordering import OrderingBuffer

RELAXED = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def gap_of(buffer: OrderingBuffer[str]) -> tuple[int, int] | None:
    # Read through a call: mypy would keep `buffer.gap` narrowed by an earlier assert.
    return buffer.gap


def test_items_in_order_are_delivered_at_once() -> None:
    buffer: OrderingBuffer[str] = OrderingBuffer()
    assert buffer.push(1, "a") == ["a"]
    assert buffer.push(2, "b") == ["b"]
    assert buffer.next_seq == 3
    assert buffer.gap is None


def test_an_early_item_waits_for_the_gap_to_fill() -> None:
    buffer: OrderingBuffer[str] = OrderingBuffer()
    assert buffer.push(3, "c") == []
    assert buffer.push(5, "e") == []
    assert buffer.gap == (1, 2)
    assert buffer.buffered == 2
    assert buffer.push(2, "b") == []
    assert buffer.gap == (1, 1)
    assert buffer.push(1, "a") == ["a", "b", "c"]
    assert buffer.gap == (4, 4)
    assert buffer.push(4, "d") == ["d", "e"]
    assert buffer.buffered == 0
    assert gap_of(buffer) is None


def test_duplicates_delivered_or_waiting_are_dropped() -> None:
    buffer: OrderingBuffer[str] = OrderingBuffer()
    buffer.push(1, "a")
    assert buffer.push(1, "a again") == []
    assert buffer.push(3, "c") == []
    assert buffer.push(3, "c again") == []
    assert buffer.push(2, "b") == ["b", "c"]


def test_a_buffer_may_start_anywhere() -> None:
    buffer: OrderingBuffer[int] = OrderingBuffer(next_seq=41)
    assert buffer.push(40, 40) == []
    assert buffer.push(41, 41) == [41]


def test_a_full_buffer_overflows_instead_of_growing() -> None:
    buffer: OrderingBuffer[int] = OrderingBuffer(max_buffered=2)
    buffer.push(3, 3)
    buffer.push(4, 4)
    with pytest.raises(OverflowError):
        buffer.push(5, 5)
    # Duplicates and the awaited item are still fine.
    assert buffer.push(4, 4) == []
    assert buffer.push(1, 1) == [1]


def test_reset_starts_over_and_forgets_what_waited() -> None:
    buffer: OrderingBuffer[int] = OrderingBuffer()
    buffer.push(5, 5)
    buffer.reset(10)
    assert (buffer.next_seq, buffer.gap, buffer.buffered) == (10, None, 0)
    assert buffer.push(10, 10) == [10]


def test_advance_keeps_later_items_and_delivers_what_follows() -> None:
    buffer: OrderingBuffer[int] = OrderingBuffer()
    for seq in (3, 6, 7, 9):
        buffer.push(seq, seq)
    assert buffer.advance(6) == [6, 7]
    assert buffer.next_seq == 8
    assert buffer.gap == (8, 8)
    assert buffer.advance(2) == []  # never backwards
    assert buffer.advance(9) == [9]


@RELAXED
@given(
    order=st.integers(1, 60)
    .flatmap(
        lambda n: st.lists(st.integers(1, n), min_size=n).map(
            lambda extra: (n, list(range(1, n + 1)) + extra)
        )
    )
    .flatmap(lambda pair: st.permutations(pair[1]).map(lambda p: (pair[0], p)))
)
def test_any_arrival_order_with_duplicates_delivers_each_seq_once_in_order(
    order: tuple[int, list[int]],
) -> None:
    n, arrivals = order
    buffer: OrderingBuffer[int] = OrderingBuffer()
    delivered: list[int] = []
    for seq in arrivals:
        delivered.extend(buffer.push(seq, seq))
        if buffer.gap is not None:
            first, last = buffer.gap
            assert first == len(delivered) + 1 <= last
    assert delivered == list(range(1, n + 1))
    assert buffer.gap is None
