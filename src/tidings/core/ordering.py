"""Deliver items in `seq` order, exactly once, whatever order they arrive in.

Used by the client replica (events after a reconnect) and by the hub (events carried by a
broker that may lose, repeat or reorder them): items ahead of the next expected `seq` wait
in a bounded buffer; `gap` says which seqs to fetch from the store to fill the hole.
"""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class OrderingBuffer(Generic[T]):
    """Reorders and deduplicates items numbered by consecutive `seq`."""

    def __init__(self, next_seq: int = 1, *, max_buffered: int = 10_000) -> None:
        if max_buffered < 1:
            raise ValueError("max_buffered must be at least 1")
        self._next = next_seq
        self._pending: dict[int, T] = {}
        self.max_buffered = max_buffered

    @property
    def next_seq(self) -> int:
        """The seq of the next item to deliver."""
        return self._next

    @property
    def buffered(self) -> int:
        """How many items wait for an earlier seq."""
        return len(self._pending)

    @property
    def gap(self) -> tuple[int, int] | None:
        """(first, last) missing seq before the earliest buffered item; None if none wait."""
        if not self._pending:
            return None
        return (self._next, min(self._pending) - 1)

    def push(self, seq: int, item: T) -> list[T]:
        """Offer one item; returns the items now deliverable, in order (maybe none).

        Items already delivered (`seq < next_seq`) or already waiting are dropped. Raises
        `OverflowError` when the buffer is full (the caller should resynchronize).
        """
        if seq < self._next or seq in self._pending:
            return []
        if seq > self._next:
            if len(self._pending) >= self.max_buffered:
                raise OverflowError(
                    f"more than {self.max_buffered} items wait for seq {self._next}"
                )
            self._pending[seq] = item
            return []
        out = [item]
        self._next += 1
        while self._pending:
            following = self._pending.pop(self._next, None)
            if following is None:
                break
            out.append(following)
            self._next += 1
        return out

    def reset(self, next_seq: int) -> None:
        """Start over at `next_seq` (after a snapshot), dropping everything buffered."""
        self._next = next_seq
        self._pending.clear()

    def advance(self, next_seq: int) -> list[T]:
        """Skip to `next_seq` (when seqs before it arrived another way, e.g. a snapshot),
        keeping buffered items at or after it; returns the items now deliverable."""
        if next_seq <= self._next:
            return []
        self._pending = {s: i for s, i in self._pending.items() if s >= next_seq}
        self._next = next_seq
        item = self._pending.pop(next_seq, None)
        if item is None:
            return []
        return self.push(next_seq, item)
