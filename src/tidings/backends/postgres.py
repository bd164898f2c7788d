"""`EventStore` on PostgreSQL (asyncpg), for several server nodes sharing one database.

Appends to one session from any number of nodes are serialized by a row lock on the
session (`SELECT … FOR UPDATE`), so `seq` stays gap-free. Under that lock the store
looks up the `(session, author, client_id)` dedupe key, and `rows.decide_append` makes
the decision (dedupe, then compare-and-set, then the next event); the event and its
derived rows are written in the same transaction. Because the dedupe query runs after
the lock is taken (READ COMMITTED: a new snapshot per statement) it sees every earlier
append to the session; the unique index on `(session_id, author, client_id)` backs it
up, and a unique violation is answered with the original event as a duplicate.

Group commit, per node: concurrent `append` calls are queued and a single flusher runs
everything queued as one transaction with a fixed number of round trips (lock every
session of the batch in id order, look up every client_id at once, insert the events
and derived rows with `executemany`, commit once). The per-append checks happen in
Python before any statement runs, so a bad draft fails alone; if a statement of the
batch fails anyway, the batch is rolled back and its appends are retried one by one.
Without it every append to a busy session would pay its own round trips and WAL flush
while holding the session's lock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final

import asyncpg
import msgspec

from tidings.backends.base import Clock, NotFound, StoreUnavailable
from tidings.backends.migrations.postgres import MIGRATIONS, VERSION_TABLE
from tidings.backends.rows import (
    MESSAGE_COLUMNS,
    SESSION_COLUMNS,
    MemberGone,
    MemberSet,
    MessageAdded,
    MessageCompleted,
    MessageFailed,
    NewEvent,
    RowChange,
    SessionChanged,
    decide_append,
    dedupe_key,
    message_of,
    row_change,
    session_of,
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

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode

_EVENT_COLUMNS: Final = "seq, kind, ts, author, client_id, data::text"

#: Appends flushed in one transaction at most.
MAX_BATCH: Final = 512

_INSERT_EVENT_ONLY: Final = (
    "INSERT INTO events (session_id, seq, kind, ts, author, client_id, data)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7::json)"
)

_Statement = tuple[str, tuple[Any, ...]]

_INSERT_EVENT: Final = """
WITH inserted AS (
    INSERT INTO events (session_id, seq, kind, ts, author, client_id, data)
    VALUES ($1, $2, $3, $4, $5, $6, $7::json)
)
UPDATE sessions SET seq = $2, version = $8 WHERE id = $1
"""


def _json(value: Any) -> str:
    return _encode(value).decode()


@contextmanager
def _unavailable_on_failure() -> Iterator[None]:
    """Turn every database or connection failure into `StoreUnavailable`."""
    try:
        yield
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
        raise StoreUnavailable(f"postgres: {exc}") from exc


def _event_of(session_id: str, row: Sequence[Any]) -> Event:
    return Event(
        session=session_id,
        seq=row[0],
        kind=row[1],
        ts=row[2],
        author=row[3],
        client_id=row[4],
        data=_decode(row[5]),
    )


class PostgresStore:
    """`EventStore` on PostgreSQL (see the module docstring)."""

    def __init__(self, dsn: str, clock: Clock, *, min_size: int = 1, max_size: int = 10) -> None:
        self._dsn = dsn
        self._clock = clock
        self._min_size = min_size
        self._max_size = max_size
        self._pool: asyncpg.Pool | None = None
        self._closing = False
        self._pending: list[tuple[str, Draft, asyncio.Future[Appended | Conflict]]] = []
        self._flusher: asyncio.Task[None] | None = None
        #: Append transactions committed (for tests and metrics).
        self.commits = 0

    # -- lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
        if self._pool is not None:
            return
        with _unavailable_on_failure():
            pool = await asyncpg.create_pool(
                self._dsn, min_size=self._min_size, max_size=self._max_size
            )
        try:
            with _unavailable_on_failure():
                async with pool.acquire() as conn:
                    await _migrate(conn)
        except BaseException:
            await pool.close()
            raise
        self._pool = pool
        self._closing = False

    async def close(self) -> None:
        self._closing = True  # new appends are refused; queued ones still commit
        while self._flusher is not None:
            await asyncio.wait([self._flusher])
        pool, self._pool = self._pool, None
        if pool is not None:
            # Waits for every acquired connection (an append in flight) to be released.
            await pool.close()

    async def ping(self) -> None:
        with _unavailable_on_failure():
            await self._ready().fetchval("SELECT 1", timeout=5)

    async def migrate(self) -> int:
        """Create or migrate the schema; return its version (for `tidings migrate`)."""
        if self._pool is not None:
            with _unavailable_on_failure():
                async with self._pool.acquire() as conn:
                    return await _migrate(conn)
        with _unavailable_on_failure():
            conn = await asyncpg.connect(self._dsn)
            try:
                return await _migrate(conn)
            finally:
                await conn.close()

    def _open_pool(self) -> asyncpg.Pool:
        """The pool, also while closing (the flusher finishes queued appends)."""
        if self._pool is None:
            raise StoreUnavailable("the PostgreSQL store is not open")
        return self._pool

    def _ready(self) -> asyncpg.Pool:
        if self._pool is None or self._closing:
            raise StoreUnavailable("the PostgreSQL store is not open")
        return self._pool

    # -- writes ----------------------------------------------------------------------

    async def create_session(
        self, session_id: str, *, title: str, agent: str, owner: str
    ) -> SessionInfo:
        pool = self._ready()
        now = self._clock()
        with _unavailable_on_failure():
            async with pool.acquire() as conn, conn.transaction():
                created = await conn.fetchval(
                    "INSERT INTO sessions (id, title, agent, owner, created_at, seq, version)"
                    " VALUES ($1, $2, $3, $4, $5, 0, 0) ON CONFLICT (id) DO NOTHING"
                    " RETURNING 1",
                    session_id,
                    title,
                    agent,
                    owner,
                    now,
                )
                if created is None:
                    raise ValueError(f"session {session_id!r} already exists")
                first = Draft(
                    kind=Kind.MEMBER_ADDED, author=owner, data={"user": owner, "role": "owner"}
                )
                decision = decide_append(session_id, first, seq=0, version=0, original=None, ts=now)
                assert isinstance(decision, NewEvent)
                await _insert_event(conn, decision)
        return SessionInfo(
            id=session_id, title=title, agent=agent, owner=owner, created_at=now, seq=1
        )

    async def append(self, session_id: str, draft: Draft) -> Appended | Conflict:
        return await self.submit(session_id, draft)

    def submit(self, session_id: str, draft: Draft) -> asyncio.Future[Appended | Conflict]:
        self._ready()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Appended | Conflict] = loop.create_future()
        self._pending.append((session_id, draft, future))
        if self._flusher is None:
            self._flusher = loop.create_task(self._flush(), name="tidings-postgres-flush")
        return future

    async def _flush(self) -> None:
        """Commit everything queued, batch after batch, until the queue is empty."""
        try:
            while self._pending:
                batch = self._pending[:MAX_BATCH]
                del self._pending[:MAX_BATCH]
                requests = [(session_id, draft) for session_id, draft, _ in batch]
                results: Sequence[Appended | Conflict | BaseException]
                try:
                    results = await self._append_batch(requests)
                except _BatchFailed:
                    results = [await self._append_one_safely(*request) for request in requests]
                except Exception as exc:
                    failure = StoreUnavailable(f"postgres: {exc}")
                    failure.__cause__ = exc
                    results = [failure] * len(batch)
                for (_, _, future), result in zip(batch, results, strict=True):
                    if future.done():  # the caller gave up waiting; the append stands
                        continue
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self._flusher = None

    async def _append_batch(
        self, requests: list[tuple[str, Draft]]
    ) -> list[Appended | Conflict | BaseException]:
        """One transaction for the whole batch. Raises `_BatchFailed` when a statement
        fails before the commit (nothing was written); other errors come from the
        connection or the commit itself (the outcome is unknown)."""
        pool = self._open_pool()
        async with pool.acquire() as conn:
            transaction = conn.transaction()
            await transaction.start()
            try:
                results = await self._append_batch_in_tx(conn, requests)
            except Exception as exc:
                if not conn.is_closed():
                    await transaction.rollback()
                raise _BatchFailed from exc
            await transaction.commit()
        self.commits += 1
        return results

    async def _append_batch_in_tx(
        self, conn: asyncpg.Connection, requests: list[tuple[str, Draft]]
    ) -> list[Appended | Conflict | BaseException]:
        ids = sorted({session_id for session_id, _ in requests})
        # Locked in id order, so that batches on several nodes cannot deadlock.
        rows = await conn.fetch(
            "SELECT id, seq, version FROM sessions WHERE id = ANY($1::text[])"
            " ORDER BY id FOR UPDATE",
            ids,
        )
        heads: dict[str, tuple[int, int]] = {row[0]: (row[1], row[2]) for row in rows}
        keys = [k for s, d in requests if s in heads and (k := dedupe_key(s, d)) is not None]
        originals: dict[tuple[str, str, str], Event] = {}
        if keys:
            found = await conn.fetch(
                f"SELECT e.session_id, {', '.join('e.' + c for c in _EVENT_COLUMNS.split(', '))}"
                " FROM events e JOIN unnest($1::text[], $2::text[], $3::text[])"
                " AS k (sid, author, cid)"
                " ON e.session_id = k.sid AND e.author = k.author AND e.client_id = k.cid",
                [k[0] for k in keys],
                [k[1] for k in keys],
                [k[2] for k in keys],
            )
            for row in found:
                event = _event_of(row[0], tuple(row)[1:])
                originals[(row[0], event.author, row[5])] = event
        results: list[Appended | Conflict | BaseException] = []
        inserts: list[tuple[Any, ...]] = []
        derived: list[_Statement] = []
        for session_id, draft in requests:
            head = heads.get(session_id)
            if head is None:
                results.append(NotFound(f"no session {session_id!r}"))
                continue
            key = dedupe_key(session_id, draft)
            seq, version = head
            try:
                decision = decide_append(
                    session_id,
                    draft,
                    seq=seq,
                    version=version,
                    original=None if key is None else originals.get(key),
                    ts=self._clock(),
                )
            except Exception as exc:  # a bad draft fails alone, before any statement
                results.append(exc)
                continue
            if not isinstance(decision, NewEvent):
                results.append(decision)
                continue
            row, statements = _prepare(decision)
            heads[session_id] = (decision.event.seq, decision.version)
            if key is not None:  # a later draft of the batch with this key is its duplicate
                originals[key] = decision.event
            inserts.append(row)
            derived.extend(statements)
            results.append(Appended(event=decision.event, duplicate=False))
        if inserts:
            await conn.executemany(_INSERT_EVENT_ONLY, inserts)
            # Derived rows in log order; runs of one statement go in one executemany.
            for sql, args in _runs(derived):
                await conn.executemany(sql, args)
            moved = {event[0] for event in inserts}
            await conn.executemany(
                "UPDATE sessions SET seq = $2, version = $3 WHERE id = $1",
                [(s, *heads[s]) for s in sorted(moved)],
            )
        return results

    async def _append_one_safely(
        self, session_id: str, draft: Draft
    ) -> Appended | Conflict | BaseException:
        try:
            return await self._append_one(session_id, draft)
        except Exception as exc:
            return exc

    async def _append_one(self, session_id: str, draft: Draft) -> Appended | Conflict:
        """The unbatched append: its own transaction (the fallback of a failed batch)."""
        pool = self._open_pool()
        with _unavailable_on_failure():
            async with pool.acquire() as conn:
                try:
                    async with conn.transaction():
                        return await self._append_in_tx(conn, session_id, draft)
                except asyncpg.UniqueViolationError:
                    # Another node inserted the same dedupe key first: return its event.
                    key = dedupe_key(session_id, draft)
                    if key is None:
                        raise
                    original = await _find(conn, *key)
                    if original is None:
                        raise
                    return Appended(event=original, duplicate=True)

    async def _append_in_tx(
        self, conn: asyncpg.Connection, session_id: str, draft: Draft
    ) -> Appended | Conflict:
        head = await conn.fetchrow(
            "SELECT seq, version FROM sessions WHERE id = $1 FOR UPDATE", session_id
        )
        if head is None:
            raise NotFound(f"no session {session_id!r}")
        key = dedupe_key(session_id, draft)
        decision = decide_append(
            session_id,
            draft,
            seq=head[0],
            version=head[1],
            original=None if key is None else await _find(conn, *key),
            ts=self._clock(),
        )
        if not isinstance(decision, NewEvent):
            return decision
        await _insert_event(conn, decision)
        return Appended(event=decision.event, duplicate=False)

    async def save_partial(self, session_id: str, message_id: str, content: str) -> None:
        pool = self._ready()
        with _unavailable_on_failure():
            async with pool.acquire() as conn:
                # Only while streaming: a late partial must not overwrite the final content.
                status = await conn.execute(
                    "UPDATE messages SET content = $3"
                    " WHERE session_id = $1 AND id = $2 AND status = 'streaming'",
                    session_id,
                    message_id,
                    content,
                )
                if status == "UPDATE 0":
                    await _check_message(conn, session_id, message_id)

    # -- reads -----------------------------------------------------------------------

    async def get_session(self, session_id: str) -> SessionInfo:
        with _unavailable_on_failure():
            row = await self._ready().fetchrow(
                f"SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1", session_id
            )
        if row is None:
            raise NotFound(f"no session {session_id!r}")
        return session_of(row)

    async def list_sessions(self, user: str) -> list[SessionInfo]:
        with _unavailable_on_failure():
            rows = await self._ready().fetch(
                "SELECT s.id, s.title, s.agent, s.owner, s.created_at, s.seq, s.version,"
                " s.status FROM members m JOIN sessions s ON s.id = m.session_id"
                ' WHERE m."user" = $1 ORDER BY s.created_at DESC, s.id DESC',
                user,
            )
        return [session_of(row) for row in rows]

    async def members(self, session_id: str) -> dict[str, Role]:
        with _unavailable_on_failure():
            async with self._ready().acquire() as conn:
                rows = await conn.fetch(
                    'SELECT "user", role FROM members WHERE session_id = $1', session_id
                )
                if not rows:
                    await _check_session(conn, session_id)
        return {row[0]: Role(row[1]) for row in rows}

    async def role(self, session_id: str, user: str) -> Role | None:
        with _unavailable_on_failure():
            async with self._ready().acquire() as conn:
                role = await conn.fetchval(
                    'SELECT role FROM members WHERE session_id = $1 AND "user" = $2',
                    session_id,
                    user,
                )
                if role is None:
                    await _check_session(conn, session_id)
                    return None
        return Role(role)

    async def read(self, session_id: str, after: int, limit: int | None = None) -> list[Event]:
        with _unavailable_on_failure():
            async with self._ready().acquire() as conn:
                rows = await conn.fetch(
                    f"SELECT {_EVENT_COLUMNS} FROM events"
                    " WHERE session_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                    session_id,
                    after,
                    None if limit is None else max(limit, 0),
                )
                if not rows:
                    await _check_session(conn, session_id)
        return [_event_of(session_id, row) for row in rows]

    async def find(self, session_id: str, author: str, client_id: str) -> Event | None:
        with _unavailable_on_failure():
            async with self._ready().acquire() as conn:
                found = await _find(conn, session_id, author, client_id)
                if found is None:
                    await _check_session(conn, session_id)
        return found

    async def save_checkpoint(self, session_id: str, seq: int, state: bytes) -> None:
        pool = self._ready()
        with _unavailable_on_failure():
            async with pool.acquire() as conn:
                await _check_session(conn, session_id)
                await conn.execute(
                    "INSERT INTO checkpoints (session_id, seq, state) VALUES ($1, $2, $3)"
                    " ON CONFLICT (session_id) DO UPDATE SET seq = excluded.seq,"
                    " state = excluded.state WHERE excluded.seq > checkpoints.seq",
                    session_id,
                    seq,
                    state,
                )

    async def load_checkpoint(self, session_id: str) -> tuple[int, bytes] | None:
        pool = self._ready()
        with _unavailable_on_failure():
            async with pool.acquire() as conn:
                row = await conn.fetchrow(
                    "SELECT seq, state FROM checkpoints WHERE session_id = $1", session_id
                )
                if row is None:
                    await _check_session(conn, session_id)
                    return None
        return int(row[0]), bytes(row[1])

    async def head(self, session_id: str) -> int:
        with _unavailable_on_failure():
            seq = await self._ready().fetchval("SELECT seq FROM sessions WHERE id = $1", session_id)
        if seq is None:
            raise NotFound(f"no session {session_id!r}")
        return int(seq)

    async def messages(
        self, session_id: str, *, before: int | None = None, limit: int = 50
    ) -> list[Message]:
        with _unavailable_on_failure():
            async with self._ready().acquire() as conn:
                rows = await conn.fetch(
                    f"SELECT {MESSAGE_COLUMNS} FROM messages"
                    " WHERE session_id = $1 AND ($2::bigint IS NULL OR seq < $2)"
                    " ORDER BY seq DESC LIMIT $3",
                    session_id,
                    before,
                    max(limit, 0),
                )
                if not rows:
                    await _check_session(conn, session_id)
        return [message_of(row) for row in rows]

    async def message(self, session_id: str, message_id: str) -> Message:
        with _unavailable_on_failure():
            async with self._ready().acquire() as conn:
                row = await conn.fetchrow(
                    f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE session_id = $1 AND id = $2",
                    session_id,
                    message_id,
                )
                if row is None:
                    await _check_session(conn, session_id)
                    raise NotFound(f"no message {message_id!r} in session {session_id!r}")
        return message_of(row)

    async def streaming_messages(self) -> list[tuple[str, str]]:
        with _unavailable_on_failure():
            rows = await self._ready().fetch(
                "SELECT session_id, id FROM messages WHERE status = 'streaming'"
                " ORDER BY session_id, seq"
            )
        return [(row[0], row[1]) for row in rows]


async def _find(
    conn: asyncpg.Connection, session_id: str, author: str, client_id: str
) -> Event | None:
    """The event stored under the dedupe key `(session_id, author, client_id)`, if any."""
    row = await conn.fetchrow(
        f"SELECT {_EVENT_COLUMNS} FROM events"
        " WHERE session_id = $1 AND author = $2 AND client_id = $3",
        session_id,
        author,
        client_id,
    )
    return None if row is None else _event_of(session_id, row)


class _BatchFailed(Exception):
    """A statement of a batch failed; the batch was rolled back."""


def _runs(statements: list[_Statement]) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """Group consecutive statements with the same SQL, keeping their order."""
    runs: list[tuple[str, list[tuple[Any, ...]]]] = []
    for sql, args in statements:
        if runs and runs[-1][0] == sql:
            runs[-1][1].append(args)
        else:
            runs.append((sql, [args]))
    return runs


def _prepare(new: NewEvent) -> tuple[tuple[Any, ...], list[_Statement]]:
    """The arguments of the event's insert and the statements for its derived rows."""
    event = new.event
    row = (event.session, event.seq, event.kind, event.ts, event.author, event.client_id, new.text)
    return row, _derived(event.session, row_change(event))


async def _insert_event(conn: asyncpg.Connection, new: NewEvent) -> None:
    """Insert the event, move the session's head, derive rows."""
    row, statements = _prepare(new)
    await conn.execute(_INSERT_EVENT, *row, new.version)
    for sql, args in statements:
        await conn.execute(sql, *args)


async def _check_session(conn: asyncpg.Connection, session_id: str) -> None:
    if await conn.fetchval("SELECT 1 FROM sessions WHERE id = $1", session_id) is None:
        raise NotFound(f"no session {session_id!r}")


async def _check_message(conn: asyncpg.Connection, session_id: str, message_id: str) -> None:
    found = await conn.fetchval(
        "SELECT 1 FROM messages WHERE session_id = $1 AND id = $2", session_id, message_id
    )
    if found is None:
        await _check_session(conn, session_id)
        raise NotFound(f"no message {message_id!r} in session {session_id!r}")


def _derived(session_id: str, change: RowChange | None) -> list[_Statement]:
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


async def _migrate(conn: asyncpg.Connection) -> int:
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
