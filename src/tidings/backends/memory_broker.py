"""The in-process broker: one node, no network. Delivers synchronously, in publish order."""

from __future__ import annotations

from tidings.backends.base import BrokerHandler


class MemoryBroker:
    """Calls every handler of a session inside `publish`, so nothing is lost or reordered."""

    def __init__(self) -> None:
        self._handlers: dict[str, list[BrokerHandler]] = {}

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._handlers.clear()

    async def ping(self) -> None:
        return None

    def sessions(self) -> list[str]:
        """The sessions with at least one handler (for diagnostics and tests)."""
        return list(self._handlers)

    async def subscribe(self, session_id: str, handler: BrokerHandler) -> None:
        self._handlers.setdefault(session_id, []).append(handler)

    async def unsubscribe(self, session_id: str, handler: BrokerHandler) -> None:
        handlers = self._handlers.get(session_id)
        if handlers is None:
            return
        if handler in handlers:
            handlers.remove(handler)
        if not handlers:
            del self._handlers[session_id]

    def publish(
        self, session_id: str, seq: int | None, frame: bytes, origin: str | None = None
    ) -> None:
        # Copy: a handler may unsubscribe while we iterate.
        for handler in tuple(self._handlers.get(session_id, ())):
            handler(session_id, seq, frame, origin)
