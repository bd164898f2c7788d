"""UI-ready change batches, debounced.

The replica says *what* changed as (field, key) pairs; the feed collects them for a short
window (50 ms by default) and then renders each pair once, with its value at that moment.
So repeated updates of one thing — a reply growing by forty chunks, a title set twice —
come out as its latest value, while distinct things — every new message — each keep
their own entry: nothing is merged away.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("tidings.client")


@dataclass(frozen=True)
class Change:
    """One changed thing: `what` is `message`, `card`, `member`, `signal` (keyed) or a
    session field: `title`, `status`, `version`, `metadata`, `presence`, `agent`,
    `stats`, `members`, `cards`. `value` is its value now (None: removed)."""

    what: str
    key: str | None
    value: Any


@dataclass(frozen=True)
class ChangeBatch:
    session_id: str
    seq: int
    changes: tuple[Change, ...]

    @property
    def messages(self) -> list[Any]:
        """The changed messages (copies), in the order they were first touched."""
        return [c.value for c in self.changes if c.what == "message" and c.value is not None]

    def of(self, what: str) -> list[Change]:
        return [c for c in self.changes if c.what == what]


Render = Callable[[str, str | None], Any]
Callback = Callable[[ChangeBatch], Any]

_CLOSED: Any = object()


class ChangeStream:
    """`async for batch in stream`: the batches since the stream was opened. Ends when the
    session or client closes (or on `close()`)."""

    def __init__(self, feed: ChangeFeed) -> None:
        self._feed = feed
        self._queue: collections.deque[ChangeBatch] = collections.deque()
        self._wakeup = asyncio.Event()
        self._closed = False

    def _put(self, batch: ChangeBatch) -> None:
        self._queue.append(batch)
        self._wakeup.set()

    def close(self) -> None:
        self._closed = True
        self._wakeup.set()
        self._feed._streams.discard(self)

    def __aiter__(self) -> ChangeStream:
        return self

    async def __anext__(self) -> ChangeBatch:
        while not self._queue:
            if self._closed:
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()
        return self._queue.popleft()

    async def __aenter__(self) -> ChangeStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class ChangeFeed:
    def __init__(
        self,
        session_id: str,
        render: Render,
        *,
        debounce_s: float = 0.05,
        seq: Callable[[], int] = lambda: 0,
    ) -> None:
        """`render(what, key)` gives a changed thing's value now; `seq()` the replica's
        seq, stamped on each batch."""
        if debounce_s < 0:
            raise ValueError("debounce_s must be >= 0")
        self.session_id = session_id
        self.debounce_s = debounce_s
        self._render = render
        self._seq = seq
        self._touched: dict[tuple[str, str | None], None] = {}
        self._callbacks: list[Callback] = []
        self._streams: set[ChangeStream] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.closed = False

    def touch(self, pairs: list[tuple[str, str | None]]) -> None:
        if self.closed or not pairs:
            return
        for pair in pairs:
            self._touched[pair] = None
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.debounce_s, self.flush)

    def flush(self) -> None:
        """Deliver what is collected now (called by the debounce timer)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._touched:
            return
        pairs, self._touched = list(self._touched), {}
        batch = ChangeBatch(
            self.session_id,
            self._seq(),
            tuple(Change(what, key, self._render(what, key)) for what, key in pairs),
        )
        for stream in list(self._streams):
            stream._put(batch)
        for callback in list(self._callbacks):
            try:
                result = callback(batch)
                if inspect.isawaitable(result):
                    task = asyncio.ensure_future(result)
                    self._tasks.add(task)
                    task.add_done_callback(self._done)
            except Exception:
                log.exception("an on_change callback failed")

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("an on_change callback failed", exc_info=task.exception())

    def on_change(self, callback: Callback) -> Callable[[], None]:
        """Call `callback(batch)` (a function or a coroutine function) for each batch;
        returns a function that unregisters it."""
        self._callbacks.append(callback)

        def remove() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

        return remove

    def stream(self) -> ChangeStream:
        stream = ChangeStream(self)
        if self.closed:
            stream.close()
        else:
            self._streams.add(stream)
        return stream

    async def close(self) -> None:
        """Deliver what is pending, end every stream, wait for running callbacks."""
        if self.closed:
            return
        self.flush()
        self.closed = True
        for stream in list(self._streams):
            stream.close()
        self._callbacks.clear()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
