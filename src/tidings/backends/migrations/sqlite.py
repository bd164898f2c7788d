"""SQLite schema migrations; the version is kept in `PRAGMA user_version`."""

from __future__ import annotations

from typing import Final

MIGRATIONS: Final[tuple[str, ...]] = (
    # 1: sessions, members, the event log and the message rows derived from it.
    """
    CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        title TEXT NOT NULL,
        agent TEXT NOT NULL,
        owner TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        seq INTEGER NOT NULL DEFAULT 0,
        version INTEGER NOT NULL DEFAULT 0,
        status TEXT NOT NULL DEFAULT 'active',
        metadata TEXT
    );
    CREATE INDEX sessions_created ON sessions (created_at);

    CREATE TABLE members (
        session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
        user TEXT NOT NULL,
        role TEXT NOT NULL,
        PRIMARY KEY (session_id, user)
    ) WITHOUT ROWID;
    CREATE INDEX members_user ON members (user);

    CREATE TABLE events (
        session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        kind TEXT NOT NULL,
        ts INTEGER NOT NULL,
        author TEXT NOT NULL,
        client_id TEXT,
        data TEXT NOT NULL,
        PRIMARY KEY (session_id, seq)
    ) WITHOUT ROWID;
    CREATE UNIQUE INDEX events_client_id ON events (session_id, client_id)
        WHERE client_id IS NOT NULL;

    CREATE TABLE messages (
        session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
        id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        role TEXT NOT NULL,
        author TEXT NOT NULL,
        content TEXT NOT NULL,
        is_code INTEGER NOT NULL,
        status TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        error TEXT,
        usage TEXT,
        PRIMARY KEY (session_id, id)
    ) WITHOUT ROWID;
    CREATE INDEX messages_seq ON messages (session_id, seq);
    CREATE INDEX messages_streaming ON messages (session_id, id) WHERE status = 'streaming';
    """,
    # 2: checkpoints of the folded session state, so a node resumes folding from one
    # instead of reading the whole log (a cache: never the source of truth).
    """
    CREATE TABLE checkpoints (
        session_id TEXT PRIMARY KEY REFERENCES sessions (id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        state BLOB NOT NULL
    ) WITHOUT ROWID;
    """,
    # 3: idempotency per author: one event per (session, author, client_id), so that a
    # member sending with another's client id gets an event of their own (the old index,
    # one per (session, client_id), is stricter: existing rows satisfy the new one).
    """
    DROP INDEX events_client_id;
    CREATE UNIQUE INDEX events_author_client_id ON events (session_id, author, client_id)
        WHERE client_id IS NOT NULL;
    """,
)
