"""The SQL of the SQLite store: statements for an event's derived rows, lookups and the
schema migration (split from `sqlite.py`, which keeps the group-commit writer)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any, Final

import msgspec

from tidings.backends.base import NotFound, StoreUnavailable
from tidings.backends.migrations.sqlite import MIGRATIONS
from tidings.backends.rows import (
    MemberGone,
    MemberSet,
    MessageAdded,
    MessageCompleted,
    MessageFailed,
    RowChange,
    SessionChanged,
)
from tidings.core.model import Event

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode

#: Failure causes of a COMMIT that SQLite refused before writing its commit frame: the
#: transaction was rolled back (not stored), and the store may go on.
NOT_COMMITTED: Final = frozenset({"disk_full", "read_only", "busy"})

_CAUSES: Final = {
    sqlite3.SQLITE_FULL: "disk_full",
    sqlite3.SQLITE_READONLY: "read_only",
    sqlite3.SQLITE_IOERR: "io_error",
    sqlite3.SQLITE_BUSY: "busy",
    sqlite3.SQLITE_CANTOPEN: "cannot_open",
}


def failure_cause(exc: sqlite3.Error) -> str:
    """The failure's cause from SQLite's primary result code (`io_error` when unknown,
    the safe reading of an error at COMMIT)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if not isinstance(code, int):
        return "io_error"
    return _CAUSES.get(code & 0xFF, "error")


def json(value: Any) -> str:
    return _encode(value).decode()


def statements(script: str) -> Iterator[str]:
    """Split a migration script into statements (so it can run inside our transaction;
    `executescript` would commit first)."""
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            yield pending
            pending = ""
    if pending.strip():
        raise ValueError(f"incomplete SQL statement in migration: {pending!r}")


def check_session(conn: sqlite3.Connection, session_id: str) -> None:
    if conn.execute("SELECT 1 FROM sessions WHERE id = ?", (session_id,)).fetchone() is None:
        raise NotFound(f"no session {session_id!r}")


def check_message(conn: sqlite3.Connection, session_id: str, message_id: str) -> None:
    row = conn.execute(
        "SELECT 1 FROM messages WHERE session_id = ? AND id = ?", (session_id, message_id)
    ).fetchone()
    if row is None:
        check_session(conn, session_id)
        raise NotFound(f"no message {message_id!r} in session {session_id!r}")


def event_key(event: Event) -> tuple[str, int, str, str | None]:
    return (event.session, event.seq, event.author, event.client_id)


def find_event(
    conn: sqlite3.Connection, session_id: str, author: str, client_id: str
) -> Event | None:
    """The event stored under the dedupe key `(session_id, author, client_id)`, if any."""
    row = conn.execute(
        "SELECT seq, kind, ts, data FROM events"
        " WHERE session_id = ? AND author = ? AND client_id = ?",
        (session_id, author, client_id),
    ).fetchone()
    if row is None:
        return None
    return Event(
        session=session_id,
        seq=row[0],
        kind=row[1],
        ts=row[2],
        author=author,
        data=_decode(row[3]),
        client_id=client_id,
    )


def derived(session_id: str, change: RowChange | None) -> list[tuple[str, tuple[Any, ...]]]:
    """The statements that write one event's row change (decided by `rows.row_change`)."""
    match change:
        case MemberSet(user=user, role=role):
            return [
                (
                    "INSERT INTO members (session_id, user, role) VALUES (?, ?, ?)"
                    " ON CONFLICT (session_id, user) DO UPDATE SET role = excluded.role",
                    (session_id, user, role.value),
                )
            ]
        case MemberGone(user=user):
            return [("DELETE FROM members WHERE session_id = ? AND user = ?", (session_id, user))]
        case SessionChanged():
            sets: list[str] = []
            values: list[Any] = []
            for column, value in (("title", change.title), ("status", change.status)):
                if value is not None:
                    sets.append(f"{column} = ?")
                    values.append(value)
            if change.has_metadata:
                sets.append("metadata = ?")
                values.append(json(change.metadata))
            if not sets:
                return []
            sql = f"UPDATE sessions SET {', '.join(sets)} WHERE id = ?"
            return [(sql, (*values, session_id))]
        case MessageAdded(message=m):
            return [
                (
                    "INSERT INTO messages (session_id, id, seq, role, author, content, is_code,"
                    " status, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                    "UPDATE messages SET status = 'complete', content = coalesce(?, content),"
                    " usage = ? WHERE session_id = ? AND id = ?",
                    (content, None if usage is None else json(usage), session_id, message_id),
                )
            ]
        case MessageFailed(message_id=message_id, error=error):
            return [
                (
                    "UPDATE messages SET status = 'failed', error = ?"
                    " WHERE session_id = ? AND id = ?",
                    (error, session_id, message_id),
                )
            ]
    return []


def migrate_schema(conn: sqlite3.Connection) -> int:
    """Bring the schema to the latest version in one transaction; return the version."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        version: int = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise StoreUnavailable(
                f"the database schema (version {version}) is newer than this Tidings "
                f"understands (version {len(MIGRATIONS)})"
            )
        for target in range(version + 1, len(MIGRATIONS) + 1):
            for statement in statements(MIGRATIONS[target - 1]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {target}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return len(MIGRATIONS)
