"""An in-memory `EventStore`: a real implementation, used by tests in place of mocks.

Every method runs without an `await` between reading and writing state, so on one event
loop each call is atomic: concurrent appends to one session still get gap-free seqs.
Data lives as long as the object: `close()` then `open()` keeps it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import msgspec

from tidings.backends.base import Clock, NotFound
from tidings.backends.rows import (
    MemberGone,
    MemberSet,
    MessageAdded,
    MessageCompleted,
    MessageFailed,
    NewEvent,
    SessionChanged,
    decide_append,
    dedupe_key,
    next_event,
    row_change,
)
from tidings.core.model import (
    Appended,
    Conflict,
    Draft,
    Event,
    Kind,
    Message,
    Role,
    SessionInfo,
)


@dataclass
class _Session:
    info: SessionInfo
    order: int
    metadata: Any = None
    members: dict[str, Role] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    #: Events by `rows.dedupe_key`.
    by_key: dict[tuple[str, str, str], Event] = field(default_factory=dict)
    messages: dict[str, Message] = field(default_factory=dict)
    checkpoint: tuple[int, bytes] | None = None


def _with_offset(message: Message) -> Message:
    if message.status != "streaming":
        return message
    return msgspec.structs.replace(message, offset=len(message.content))


class MemoryStore:
    """`EventStore` kept in dicts (see the contract in `tidings.backends.base`)."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._sessions: dict[str, _Session] = {}
        self._created = 0

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def ping(self) -> None:
        pass

    async def probe_write(self) -> None:
        pass

    async def migrate(self) -> int:
        """Nothing to migrate: the schema version of a memory store is 0."""
        return 0

    def _session(self, session_id: str) -> _Session:
        try:
            return self._sessions[session_id]
        except KeyError:
            raise NotFound(f"no session {session_id!r}") from None

    async def create_session(
        self, session_id: str, *, title: str, agent: str, owner: str
    ) -> SessionInfo:
        if session_id in self._sessions:
            raise ValueError(f"session {session_id!r} already exists")
        now = self._clock()
        info = SessionInfo(id=session_id, title=title, agent=agent, owner=owner, created_at=now)
        self._created += 1
        session = _Session(info=info, order=self._created)
        self._sessions[session_id] = session
        self._commit(
            session,
            Draft(kind=Kind.MEMBER_ADDED, author=owner, data={"user": owner, "role": "owner"}),
            now,
        )
        return msgspec.structs.replace(info)

    async def get_session(self, session_id: str) -> SessionInfo:
        return msgspec.structs.replace(self._session(session_id).info)

    async def list_sessions(self, user: str) -> list[SessionInfo]:
        mine = [s for s in self._sessions.values() if user in s.members]
        mine.sort(key=lambda s: (s.info.created_at, s.order), reverse=True)
        return [msgspec.structs.replace(s.info) for s in mine]

    async def members(self, session_id: str) -> dict[str, Role]:
        return dict(self._session(session_id).members)

    async def role(self, session_id: str, user: str) -> Role | None:
        return self._session(session_id).members.get(user)

    async def append(self, session_id: str, draft: Draft) -> Appended | Conflict:
        return self._append_now(session_id, draft)

    def submit(self, session_id: str, draft: Draft) -> asyncio.Future[Appended | Conflict]:
        future: asyncio.Future[Appended | Conflict] = asyncio.get_running_loop().create_future()
        try:
            future.set_result(self._append_now(session_id, draft))
        except Exception as exc:
            future.set_exception(exc)
        return future

    def _append_now(self, session_id: str, draft: Draft) -> Appended | Conflict:
        session = self._session(session_id)
        info = session.info
        key = dedupe_key(session_id, draft)
        # Through JSON like the SQL stores (in `next_event`): callers cannot mutate stored
        # data, and what a durable store could not encode fails here too.
        decision = decide_append(
            session_id,
            draft,
            seq=info.seq,
            version=info.version,
            original=None if key is None else session.by_key.get(key),
            ts=self._clock(),
        )
        if not isinstance(decision, NewEvent):
            return decision
        self._store(session, key, decision.event, decision.version)
        return Appended(event=decision.event, duplicate=False)

    def _commit(self, session: _Session, draft: Draft, ts: int) -> Event:
        info = session.info
        event, version, _ = next_event(info.id, draft, info.seq, info.version, ts)
        self._store(session, dedupe_key(info.id, draft), event, version)
        return event

    def _store(
        self, session: _Session, key: tuple[str, str, str] | None, event: Event, version: int
    ) -> None:
        self._apply(session, event)
        session.info.seq = event.seq
        session.info.version = version
        session.events.append(event)
        if key is not None:
            session.by_key[key] = event

    async def find(self, session_id: str, author: str, client_id: str) -> Event | None:
        return self._session(session_id).by_key.get((session_id, author, client_id))

    def _apply(self, session: _Session, event: Event) -> None:
        """Update the rows derived from `event` (decided by `rows.row_change`)."""
        change = row_change(event)
        match change:
            case MemberSet(user=user, role=role):
                session.members[user] = role
            case MemberGone(user=user):
                session.members.pop(user, None)
            case SessionChanged():
                if change.title is not None:
                    session.info.title = change.title
                if change.status is not None:
                    session.info.status = change.status
                if change.has_metadata:
                    session.metadata = change.metadata
            case MessageAdded(message=message):
                session.messages[message.id] = msgspec.structs.replace(message)
            case MessageCompleted(message_id=message_id, content=content, usage=usage):
                found = session.messages.get(message_id)
                if found is not None:
                    found.status = "complete"
                    if content is not None:
                        found.content = content
                    found.usage = usage
            case MessageFailed(message_id=message_id, error=error):
                found = session.messages.get(message_id)
                if found is not None:
                    found.status = "failed"
                    found.error = error

    async def read(self, session_id: str, after: int, limit: int | None = None) -> list[Event]:
        events = self._session(session_id).events
        # seq n sits at index n - 1: the log has no gaps.
        start = max(after, 0)
        end = len(events) if limit is None else min(len(events), start + max(limit, 0))
        return events[start:end]

    async def save_checkpoint(self, session_id: str, seq: int, state: bytes) -> None:
        session = self._session(session_id)
        if session.checkpoint is None or session.checkpoint[0] < seq:
            session.checkpoint = (seq, bytes(state))

    async def load_checkpoint(self, session_id: str) -> tuple[int, bytes] | None:
        return self._session(session_id).checkpoint

    async def head(self, session_id: str) -> int:
        return self._session(session_id).info.seq

    async def messages(
        self, session_id: str, *, before: int | None = None, limit: int = 50
    ) -> list[Message]:
        rows = self._session(session_id).messages.values()
        chosen = [m for m in rows if before is None or m.seq < before]
        chosen.sort(key=lambda m: m.seq, reverse=True)
        return [_with_offset(msgspec.structs.replace(m)) for m in chosen[: max(limit, 0)]]

    async def message(self, session_id: str, message_id: str) -> Message:
        found = self._session(session_id).messages.get(message_id)
        if found is None:
            raise NotFound(f"no message {message_id!r} in session {session_id!r}")
        return _with_offset(msgspec.structs.replace(found))

    async def save_partial(self, session_id: str, message_id: str, content: str) -> None:
        found = self._session(session_id).messages.get(message_id)
        if found is None:
            raise NotFound(f"no message {message_id!r} in session {session_id!r}")
        # A partial arriving after completion or failure must not overwrite the result.
        if found.status == "streaming":
            found.content = content

    async def streaming_messages(self) -> list[tuple[str, str]]:
        return [
            (session_id, m.id)
            for session_id, session in self._sessions.items()
            for m in session.messages.values()
            if m.status == "streaming"
        ]
