"""A real, small `ReplyHost` for the runner's tests: an in-memory log with seq numbers.

It behaves as the server's node does where the runner can see it (seq, ids from
`finalize_data`, client_id idempotency, context from the log) and records every stream
frame and partial save. `down` makes appends of the given kinds fail like a dead store.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from tidings.agents.base import AgentContext
from tidings.core.model import Draft, Event, Kind, finalize_data


class StoreDown(Exception):
    """What a failing store raises."""


class Frame(NamedTuple):
    session_id: str
    message_id: str
    offset: int
    text: str


class MemoryHost:
    def __init__(self) -> None:
        self.logs: dict[str, list[Event]] = {}
        self.frames: list[Frame] = []
        self.partials: list[tuple[str, str, str]] = []
        #: Kinds whose appends raise `StoreDown` (all of them: `set(Kind)`).
        self.down: set[str] = set()
        #: Kinds whose next appends fail, with how many of them fail.
        self.fail_next: dict[str, int] = {}
        #: Events and stream frames in the order the runner made them.
        self.timeline: list[tuple[str, str]] = []
        self._changed = asyncio.Event()

    # -- the ReplyHost interface ------------------------------------------------------

    async def append(self, session_id: str, draft: Draft) -> Event:
        await asyncio.sleep(0)  # a real store answers later, letting others run
        if draft.kind in self.down:
            raise StoreDown("the store is down")
        if self.fail_next.get(draft.kind, 0) > 0:
            self.fail_next[draft.kind] -= 1
            raise StoreDown("the store hiccuped")
        log = self.logs.setdefault(session_id, [])
        if draft.client_id is not None:
            for event in log:
                if event.client_id == draft.client_id:
                    return event
        seq = len(log) + 1
        ts = int(time.time() * 1000)
        event = Event(
            session=session_id,
            seq=seq,
            kind=draft.kind,
            ts=ts,
            author=draft.author,
            data=finalize_data(draft.kind, draft.data, seq, ts, 0),
            client_id=draft.client_id,
        )
        log.append(event)
        self.timeline.append(("event", event.kind))
        self._changed.set()
        return event

    def stream(self, session_id: str, message_id: str, offset: int, text: str) -> None:
        self.frames.append(Frame(session_id, message_id, offset, text))
        self.timeline.append(("stream", message_id))
        self._changed.set()

    async def save_partial(self, session_id: str, message_id: str, content: str) -> None:
        await asyncio.sleep(0)
        self.partials.append((session_id, message_id, content))
        self._changed.set()

    async def context(self, session_id: str, trigger: Event) -> AgentContext:
        messages: list[dict[str, Any]] = []
        cards: dict[str, dict[str, Any]] = {}
        for event in self.logs.get(session_id, []):
            if event.seq > trigger.seq:
                break
            if event.kind == Kind.MESSAGE_CREATED:
                messages.append(event.data["message"])
            elif event.kind == Kind.CARD_ADDED:
                cards[event.data["card"]["id"]] = event.data["card"]
            elif event.kind == Kind.CARD_REMOVED:
                cards.pop(event.data["card_id"], None)
        return AgentContext(
            session_id=session_id,
            messages=messages[-50:],
            cards=list(cards.values()),
            trigger=trigger.data["message"],
        )

    # -- what tests use ---------------------------------------------------------------

    async def post(self, session_id: str, content: str, author: str = "alice") -> Event:
        """Store a user message, as the node does before submitting a reply."""
        message = {"role": "user", "author": author, "content": content, "is_code": False}
        draft = Draft(
            kind=Kind.MESSAGE_CREATED,
            author=author,
            data={"message": {**message, "status": "complete"}},
        )
        return await self.append(session_id, draft)

    async def add_card(self, session_id: str, title: str, content: str, source: str) -> Event:
        card = {"title": title, "content": content, "source": source, "tokens": 0}
        draft = Draft(kind=Kind.CARD_ADDED, author="alice", data={"card": card})
        return await self.append(session_id, draft)

    def events(self, session_id: str, *kinds: str) -> list[Event]:
        return [e for e in self.logs.get(session_id, []) if not kinds or e.kind in kinds]

    def kinds(self, session_id: str) -> list[str]:
        return [e.kind for e in self.logs.get(session_id, [])]

    def replies(self, session_id: str) -> list[str]:
        """Ids of the assistant messages of the session, in order."""
        return [
            e.data["message"]["id"]
            for e in self.events(session_id, Kind.MESSAGE_CREATED)
            if e.data["message"]["role"] == "assistant"
        ]

    def end(self, session_id: str, message_id: str) -> Event | None:
        """The `message.completed` or `message.failed` of a reply, if it has ended."""
        for event in self.events(session_id, Kind.MESSAGE_COMPLETED, Kind.MESSAGE_FAILED):
            if event.data["message_id"] == message_id:
                return event
        return None

    def streamed(self, session_id: str, message_id: str) -> str:
        """The text rebuilt from stream frames alone, checking that offsets are contiguous."""
        text = ""
        for frame in self.frames:
            if (frame.session_id, frame.message_id) == (session_id, message_id):
                assert frame.offset == len(text), (frame, text)
                text += frame.text
        return text

    async def wait_until(self, condition: Callable[[], object], within_s: float = 5.0) -> None:
        async with asyncio.timeout(within_s):
            while not condition():
                self._changed.clear()
                await self._changed.wait()

    async def wait_idle(self, session_id: str, replies: int = 1, within_s: float = 5.0) -> None:
        """Wait until `replies` replies of the session have ended and set the agent status."""

        def done() -> bool:
            ended = self.events(session_id, Kind.MESSAGE_COMPLETED, Kind.MESSAGE_FAILED)
            statuses = [
                e
                for e in self.events(session_id, Kind.AGENT_STATUS)
                if e.data["status"] != "processing"
            ]
            return len(ended) >= replies and len(statuses) >= replies

        await self.wait_until(done, within_s)
