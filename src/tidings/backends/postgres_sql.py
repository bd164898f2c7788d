"""The SQL of the PostgreSQL store: statements for an event's derived rows, lookups,
what a failed COMMIT means, and the schema migration (split from `postgres.py`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import asyncpg
import msgspec

from tidings.backends.base import CommitUncertain, NotFound, StoreUnavailable
from tidings.backends.migrations.postgres import MIGRATIONS, VERSION_TABLE
from tidings.backends.rows import (
    MemberGone,
    MemberSet,
    MessageAdded,
    MessageCompleted,
    MessageFailed,
    NewEvent,
    RowChange,
    SessionChanged,
    row_change,
)
from tidings.core.model import Event

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode

EVENT_COLUMNS: Final = "seq, kind, ts, author, client_id, data::text"

Statement = tuple[str, tuple[Any, ...]]

_INSERT_EVENT: Final = """
WITH inserted AS (
    INSERT INTO events (session_id, seq, kind, ts, author, client_id, data)
    VALUES ($1, $2, $3, $4, $5, $6, $7::json)
)
UPDATE sessions SET seq = $2, version = $8 WHERE id = $1
"""

#: SQLSTATE classes of a COMMIT the server answered by rolling back: integrity (a
#: deferred constraint) and transaction rollback (serialization failure, deadlock).
_ROLLED_BACK_CLASSES: Final = frozenset({"23", "40"})

#: What the connection can raise, besides server errors, when it fails.
CONNECTION_ERRORS: Final = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)


def _json(value: Any) -> str:
    return _encode(value).decode()


def commit_failure(exc: BaseException) -> Exception:
    """What a COMMIT that raised `exc` means for its writes.

    Only an error the server sent as its answer to COMMIT says the transaction was rolled
    back (not stored). Anything else — the connection lost while awaiting the answer
    (`ConnectionDoesNotExistError`, `InternalClientError`, `OSError`), the backend
    terminated (`AdminShutdown` may come after the commit record is flushed), a timeout —
    leaves the outcome unknown."""
    sqlstate = str(getattr(exc, "sqlstate", "") or "")
    if (
        isinstance(exc, asyncpg.PostgresError)
        and not isinstance(exc, asyncpg.PostgresConnectionError)
        and sqlstate[:2] in _ROLLED_BACK_CLASSES
    ):
        failure: Exception = StoreUnavailable(f"postgres: the commit was refused: {exc}")
    else:
        failure = CommitUncertain(f"postgres: the outcome of a commit is unknown: {exc!r}")
    failure.__cause__ = exc
    return failure


def event_of(session_id: str, row: Sequence[Any]) -> Event:
    return Event(
        session=session_id,
        seq=row[0],
        kind=row[1],
        ts=row[2],
        author=row[3],
        client_id=row[4],
        data=_decode(row[5]),
    )


async def find(
    conn: asyncpg.Connection, session_id: str, author: str, client_id: str
) -> Event | None:
    """The event stored under the dedupe key `(session_id, author, client_id)`, if any."""
    row = await conn.fetchrow(
        f"SELECT {EVENT_COLUMNS} FROM events"
        " WHERE session_id = $1 AND author = $2 AND client_id = $3",
        session_id,
        author,
        client_id,
    )
    return None if row is None else event_of(session_id, row)


def runs(statements: list[Statement]) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """Group consecutive statements with the same SQL, keeping their order."""
    runs: list[tuple[str, list[tuple[Any, ...]]]] = []
    for sql, args in statements:
        if runs and runs[-1][0] == sql:
            runs[-1][1].append(args)
        else:
            runs.append((sql, [args]))
    return runs


def prepare(new: NewEvent) -> tuple[tuple[Any, ...], list[Statement]]:
    """The arguments of the event's insert and the statements for its derived rows."""
    event = new.event
    row = (event.session, event.seq, event.kind, event.ts, event.author, event.client_id, new.text)
    return row, derived(event.session, row_change(event))


async def insert_event(conn: asyncpg.Connection, new: NewEvent) -> None:
    """Insert the event, move the session's head, derive rows."""
    row, statements = prepare(new)
    await conn.execute(_INSERT_EVENT, *row, new.version)
    for sql, args in statements:
        await conn.execute(sql, *args)


async def check_session(conn: asyncpg.Connection, session_id: str) -> None:
    if await conn.fetchval("SELECT 1 FROM sessions WHERE id = $1", session_id) is None:
        raise NotFound(f"no session {session_id!r}")


async def check_message(conn: asyncpg.Connection, session_id: str, message_id: str) -> None:
    found = await conn.fetchval(
        "SELECT 1 FROM messages WHERE session_id = $1 AND id = $2", session_id, message_id
    )
    if found is None:
        await check_session(conn, session_id)
        raise NotFound(f"no message {message_id!r} in session {session_id!r}")


def derived(session_id: str, change: RowChange | None) -> list[Statement]:
    """The statements that write one event's row change (decided by `rows.row_change`)."""
    match change:
        case MemberSet(user=user, role=role):
            return [
                (
                    'INSERT INTO members (session_id, "user", role) VALUES ($1, $2, $3)'
                    ' ON CONFLICT (session_id, "user") DO UPDATE SET role = excluded.role',
                    (session_id, user, role.value),
                )
            ]
        case MemberGone(user=user):
            return [
                ('DELETE FROM members WHERE session_id = $1 AND "user" = $2', (session_id, user))
            ]
        case SessionChanged(title=title, status=status, has_metadata=has_metadata):
            return [
                (
                    "UPDATE sessions SET title = coalesce($2, title),"
                    " status = coalesce($3, status),"
                    " metadata = CASE WHEN $4 THEN $5::json ELSE metadata END WHERE id = $1",
                    (session_id, title, status, has_metadata, _json(change.metadata)),
                )
            ]
        case MessageAdded(message=m):
            return [
                (
                    "INSERT INTO messages (session_id, id, seq, role, author, content, is_code,"
                    " status, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    (
                        session_id,
                        m.id,
                        m.seq,
                        m.role,
                        m.author,
                        m.content,
                        m.is_code,
                        m.status,
                        m.created_at,
                    ),
                )
            ]
        case MessageCompleted(message_id=message_id, content=content, usage=usage):
            return [
                (
                    "UPDATE messages SET status = 'complete', content = coalesce($3, content),"
                    " usage = $4::json WHERE session_id = $1 AND id = $2",
                    (session_id, message_id, content, None if usage is None else _json(usage)),
                )
            ]
        case MessageFailed(message_id=message_id, error=error):
            return [
                (
                    "UPDATE messages SET status = 'failed', error = $3"
                    " WHERE session_id = $1 AND id = $2",
                    (session_id, message_id, error),
                )
            ]
    return []


async def migrate(conn: asyncpg.Connection) -> int:
    """Bring the schema to the latest version in one transaction; return the version.

    An advisory lock serializes nodes that start together on an empty database.
    """
    async with conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext('tidings_schema:' || current_schema()))"
        )
        await conn.execute(VERSION_TABLE)
        version = await conn.fetchval("SELECT version FROM tidings_schema")
        if version > len(MIGRATIONS):
            raise StoreUnavailable(
                f"the database schema (version {version}) is newer than this Tidings "
                f"understands (version {len(MIGRATIONS)})"
            )
        for target in range(version + 1, len(MIGRATIONS) + 1):
            await conn.execute(MIGRATIONS[target - 1])
            await conn.execute("UPDATE tidings_schema SET version = $1", target)
    return len(MIGRATIONS)
