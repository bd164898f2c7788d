"""What the stores share: the append decision (dedupe, compare-and-set, next event), and
the SQL stores' row shapes (the columns they select and the models they build).

SQLite and PostgreSQL store the same tables (see `migrations/`), so a selected row maps to
a `SessionInfo` or a `Message` the same way; only the SQL dialect differs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import msgspec

from tidings.core.model import (
    Appended,
    Conflict,
    Draft,
    Event,
    Kind,
    Message,
    Role,
    SessionInfo,
    finalize_data,
)

SESSION_COLUMNS: Final = "id, title, agent, owner, created_at, seq, version, status"
MESSAGE_COLUMNS: Final = "id, seq, role, author, content, is_code, status, created_at, error, usage"

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


def next_event(
    session_id: str, draft: Draft, seq: int, version: int, ts: int
) -> tuple[Event, int, str]:
    """The event that follows `(seq, version)` in a session, the session's version after
    it, and the event's `data` as the JSON text the SQL stores write. Pure: a bad draft
    raises here, before anything is written. The event's `data` is decoded from that
    text: a private copy, as a reader of the log would see it."""
    kind = str(draft.kind)
    seq += 1
    if kind == Kind.SESSION_UPDATED:
        version += 1
    text = _encode(finalize_data(kind, draft.data, seq, ts, version)).decode()
    event = Event(
        session=session_id,
        seq=seq,
        kind=kind,
        ts=ts,
        author=draft.author,
        data=_decode(text),
        client_id=draft.client_id,
    )
    return event, version, text


#: What identifies one logical action in a session's log: `(session, author, client_id)`.
#: Keyed by author too, so that one member can never claim (or swallow) another's send.
DedupeKey = tuple[str, str, str]


def dedupe_key(session_id: str, draft: Draft) -> DedupeKey | None:
    """The key a draft is deduplicated by, or None for a draft without a client id."""
    if draft.client_id is None:
        return None
    return (session_id, draft.author, draft.client_id)


class NewEvent(msgspec.Struct, frozen=True):
    """The decision to append `event`: the session's version after it, and its `data` as
    the JSON text the SQL stores write."""

    event: Event
    version: int
    text: str


def decide_append(
    session_id: str,
    draft: Draft,
    *,
    seq: int,
    version: int,
    original: Event | None,
    ts: int,
) -> Appended | Conflict | NewEvent:
    """The one append decision every store makes, in this order:

    1. dedupe: `original` (the event already stored under the draft's `dedupe_key`, which
       the store looked up) is answered again as a duplicate, even if the draft differs
       and even if its compare-and-set would now fail (a retried CAS that had succeeded
       gets its original event, not a conflict);
    2. compare-and-set: a `base_version` other than the session's `version` is a conflict;
    3. otherwise the event after `(seq, version)`.

    Pure: a store only looks up `original` and writes a `NewEvent`. A bad draft raises
    here (from `next_event`), before anything is written."""
    if original is not None:
        return Appended(event=original, duplicate=True)
    if draft.base_version is not None and draft.base_version != version:
        return Conflict(version=version)
    event, version, text = next_event(session_id, draft, seq, version, ts)
    return NewEvent(event=event, version=version, text=text)


def session_of(row: Sequence[Any]) -> SessionInfo:
    """A `SessionInfo` from a row of `SESSION_COLUMNS`."""
    return SessionInfo(
        id=row[0],
        title=row[1],
        agent=row[2],
        owner=row[3],
        created_at=row[4],
        seq=row[5],
        version=row[6],
        status=row[7],
    )


def message_of(row: Sequence[Any]) -> Message:
    """A `Message` from a row of `MESSAGE_COLUMNS`; a streaming one carries its offset."""
    status = row[6]
    return Message(
        id=row[0],
        seq=row[1],
        role=row[2],
        author=row[3],
        content=row[4],
        is_code=bool(row[5]),  # SQLite keeps booleans as integers
        status=status,
        created_at=row[7],
        offset=len(row[4]) if status == "streaming" else None,
        error=row[8],
        usage=None if row[9] is None else _decode(row[9]),
    )


# ---------------------------------------------------------------- derived rows
#
# Every store keeps rows derived from the log (members, the session's title/status/
# metadata, messages) in the same transaction as the event. What an event changes is
# decided here, once; each store only says how to write it.


class MemberSet(msgspec.Struct, frozen=True):
    user: str
    role: Role


class MemberGone(msgspec.Struct, frozen=True):
    user: str


class SessionChanged(msgspec.Struct, frozen=True):
    title: str | None
    status: str | None
    #: Whether `metadata` is part of the change (it may be set to null).
    has_metadata: bool
    metadata: Any


class MessageAdded(msgspec.Struct, frozen=True):
    message: Message


class MessageCompleted(msgspec.Struct, frozen=True):
    message_id: str
    #: None keeps the content as it is.
    content: str | None
    usage: dict[str, int] | None


class MessageFailed(msgspec.Struct, frozen=True):
    message_id: str
    error: str | None


RowChange = (
    MemberSet | MemberGone | SessionChanged | MessageAdded | MessageCompleted | MessageFailed
)


def row_change(event: Event) -> RowChange | None:
    """What `event` changes in the derived rows, or None. Pure: a malformed event raises
    here (KeyError, ValueError), before a store writes anything."""
    data = event.data
    kind = event.kind
    if kind == Kind.MEMBER_ADDED:
        return MemberSet(user=str(data["user"]), role=Role(data["role"]))
    if kind == Kind.MEMBER_REMOVED:
        return MemberGone(user=str(data["user"]))
    if kind == Kind.SESSION_UPDATED:
        changes = data.get("changes") or {}
        title = changes.get("title")
        status = changes.get("status")
        return SessionChanged(
            title=title if isinstance(title, str) else None,
            status=status if isinstance(status, str) else None,
            has_metadata="metadata" in changes,
            metadata=changes.get("metadata"),
        )
    if kind == Kind.MESSAGE_CREATED:
        m = data["message"]
        return MessageAdded(
            message=Message(
                id=str(m["id"]),
                seq=event.seq,
                role=str(m.get("role", "user")),
                author=str(m.get("author", event.author)),
                content=str(m.get("content", "")),
                is_code=bool(m.get("is_code", False)),
                status=str(m.get("status", "complete")),
                created_at=int(m.get("created_at", event.ts)),
            )
        )
    if kind == Kind.MESSAGE_COMPLETED:
        content = data.get("content")
        return MessageCompleted(
            message_id=str(data["message_id"]),
            content=None if content is None else str(content),
            usage=data.get("usage"),
        )
    if kind == Kind.MESSAGE_FAILED:
        error = data.get("error")
        return MessageFailed(
            message_id=str(data["message_id"]), error=None if error is None else str(error)
        )
    return None
