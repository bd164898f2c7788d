"""The data that flows between the core, the stores and the hub.

Events are immutable once appended. `Event.frame()` is the encoded `event` frame; it is
computed once per event and shared by every receiver (encode once, whatever the fan-out).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Final

import msgspec


class Role(StrEnum):
    OWNER = "owner"
    MEMBER = "member"
    VIEWER = "viewer"


class Kind(StrEnum):
    """Event kinds (PROTOCOL.md, "Sessions, events and the log")."""

    MESSAGE_CREATED = "message.created"
    MESSAGE_COMPLETED = "message.completed"
    MESSAGE_FAILED = "message.failed"
    CARD_ADDED = "card.added"
    CARD_REMOVED = "card.removed"
    SESSION_UPDATED = "session.updated"
    MEMBER_ADDED = "member.added"
    MEMBER_REMOVED = "member.removed"
    AGENT_STATUS = "agent.status"


#: The prefix of the id an event gives to the thing it creates; other events are `e_<seq>`.
ID_PREFIX: Final[dict[str, str]] = {Kind.MESSAGE_CREATED: "m", Kind.CARD_ADDED: "c"}


def event_id_for(kind: str, seq: int) -> str:
    """The `event_id` of the event at `seq`: `m_42` for a message, `c_7` for a card."""
    return f"{ID_PREFIX.get(kind, 'e')}_{seq}"


class Event(
    msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag="event", tag_field="type"
):
    """One entry of a session's log, exactly as it goes on the wire."""

    session: str
    seq: int
    kind: str
    ts: int
    author: str
    data: dict[str, Any]
    client_id: str | None = None

    @property
    def event_id(self) -> str:
        return event_id_for(self.kind, self.seq)


class Draft(msgspec.Struct, frozen=True, kw_only=True):
    """An event before the store gives it a `seq` and a `ts`.

    `data` is completed by `finalize_data` once `seq` and `ts` are known (the id of a
    created message or card is derived from its `seq`). `base_version`, when set, makes
    the append a compare-and-set on the session's version; each `session.updated` event
    moves the version on by one.
    """

    kind: str
    author: str
    data: dict[str, Any]
    client_id: str | None = None
    base_version: int | None = None


def finalize_data(
    kind: str, data: dict[str, Any], seq: int, ts: int, version: int
) -> dict[str, Any]:
    """Fill in what depends on the event's place in the log. Pure; stores call it."""
    if kind == Kind.MESSAGE_CREATED:
        message = dict(data["message"])
        message["id"] = event_id_for(kind, seq)
        message["created_at"] = ts
        return {**data, "message": message}
    if kind == Kind.CARD_ADDED:
        card = dict(data["card"])
        card["id"] = event_id_for(kind, seq)
        return {**data, "card": card}
    if kind == Kind.SESSION_UPDATED:
        return {**data, "version": version}
    return data


class SessionInfo(msgspec.Struct, kw_only=True):
    """A session's row: what is known without folding its log."""

    id: str
    title: str
    agent: str
    owner: str
    created_at: int
    seq: int = 0
    version: int = 0
    status: str = "active"


class Message(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A message as history and `GET …/messages/{id}` show it (the fold of its events)."""

    id: str
    seq: int
    role: str
    author: str
    content: str
    is_code: bool
    status: str
    created_at: int
    offset: int | None = None
    error: str | None = None
    usage: dict[str, int] | None = None


class Appended(msgspec.Struct, frozen=True, kw_only=True):
    """What `EventStore.append` returns: the stored event, or the original on a duplicate."""

    event: Event
    duplicate: bool


class Conflict(msgspec.Struct, frozen=True, kw_only=True):
    """A compare-and-set append refused: the session's version moved on."""

    version: int
