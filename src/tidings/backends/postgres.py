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
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final

import asyncpg
from asyncpg.transaction import Transaction

from tidings.backends.base import (
    Clock,
    CommitHook,
    CommitUncertain,
    NotFound,
    StoreUnavailable,
)
from tidings.backends.postgres_sql import (
    CONNECTION_ERRORS,
    EVENT_COLUMNS,
    Statement,
    check_message,
    check_session,
    commit_failure,
    event_of,
    find,
    insert_event,
    migrate,
    prepare,
    runs,
)
from tidings.backends.rows import (
    MESSAGE_COLUMNS,
    SESSION_COLUMNS,
    NewEvent,
    decide_append,
    dedupe_key,
    message_of,
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

#: Appends flushed in one transaction at most.
MAX_BATCH: Final = 512

_INSERT_EVENT_ONLY: Final = (
    "INSERT INTO events (session_id, seq, kind, ts, author, client_id, data)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7::json)"
)


async def _commit(conn: asyncpg.Connection, transaction: Transaction) -> None:
    await transaction.commit()


@contextmanager
def _unavailable_on_failure() -> Iterator[None]:
    """Turn every database or connection failure into `StoreUnavailable` (asyncpg's
    `InternalClientError` included: a connection lost mid-protocol raises it)."""
    try:
        yield
    except CONNECTION_ERRORS as exc:
        raise StoreUnavailable(f"postgres: {exc}") from exc


class PostgresStore:
    """`EventStore` on PostgreSQL (see the module docstring)."""

    def __init__(
        self,
        dsn: str,
        clock: Clock,
        *,
        min_size: int = 1,
        max_size: int = 10,
        application_name: str = "tidings",
    ) -> None:
        self._dsn = dsn
        #: Names this store's connections in `pg_stat_activity`.
        self.application_name = application_name
        self._clock = clock
        self._min_size = min_size
        self._max_size = max_size
        self._pool: asyncpg.Pool | None = None
        self._closing = False
        self._pending: list[tuple[str, Draft, asyncio.Future[Appended | Conflict]]] = []
        self._flusher: asyncio.Task[None] | None = None
        #: Server pids of backends lost while committing: until they are gone, a commit
        #: of theirs may still land, so `find` cannot say "not stored".
        self._unsettled: set[int] = set()
        #: Commits an append transaction. Fault-injection tests replace it (to lose the
        #: connection around the COMMIT).
        self.run_commit: Callable[[asyncpg.Connection, Transaction], Awaitable[None]] = _commit
        #: Append transactions committed (for tests and metrics).
        self.commits = 0
        #: Called after each commit with (appends, seconds): see `ReportsCommits`.
        self.on_commit: CommitHook | None = None

    # -- lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
        if self._pool is not None:
            return
        with _unavailable_on_failure():
            pool = await asyncpg.create_pool(
                self._dsn,
                min_size=self._min_size,
                max_size=self._max_size,
                server_settings={"application_name": self.application_name},
            )
        try:
            with _unavailable_on_failure():
                async with pool.acquire() as conn:
                    await migrate(conn)
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

    async def probe_write(self) -> None:
        with _unavailable_on_failure():
            async with self._ready().acquire() as conn, conn.transaction():
                # A row write and a commit: refused on a read-only server or standby.
                await conn.execute("UPDATE tidings_schema SET version = version")

    async def migrate(self) -> int:
        """Create or migrate the schema; return its version (for `tidings migrate`)."""
        if self._pool is not None:
            with _unavailable_on_failure():
                async with self._pool.acquire() as conn:
                    return await migrate(conn)
        with _unavailable_on_failure():
            conn = await asyncpg.connect(self._dsn)
            try:
                return await migrate(conn)
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
                await insert_event(conn, decision)
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
        fails before the commit (nothing was written). When the commit itself fails, each
        new event of the batch gets the failure `postgres_sql.commit_failure` makes of it
        (`CommitUncertain` unless the server refused the commit); what was decided
        without writing (duplicates of earlier events, conflicts) stands."""
        pool = self._open_pool()
        async with pool.acquire() as conn:
            began = time.monotonic()
            transaction = conn.transaction()
            await transaction.start()
            try:
                results = await self._append_batch_in_tx(conn, requests)
            except Exception as exc:
                if not conn.is_closed():
                    await transaction.rollback()
                raise _BatchFailed from exc
            pid = conn.get_server_pid()
            try:
                await self.run_commit(conn, transaction)
            except Exception as exc:
                failure = self._commit_failed(exc, pid)
                fresh = {id(r.event) for r in results if isinstance(r, Appended)}
                fresh -= {id(r.event) for r in results if isinstance(r, Appended) and r.duplicate}
                # An in-batch duplicate of a new event shares its (unknown) fate.
                return [
                    failure if isinstance(r, Appended) and id(r.event) in fresh else r
                    for r in results
                ]
        self.commits += 1
        if self.on_commit is not None:
            self.on_commit(len(requests), time.monotonic() - began)
        return results

    def _commit_failed(self, exc: Exception, pid: int) -> Exception:
        failure = commit_failure(exc)
        if isinstance(failure, CommitUncertain):
            # Until that backend is gone it may still commit: `find` waits for it.
            self._unsettled.add(pid)
        return failure

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
                f"SELECT e.session_id, {', '.join('e.' + c for c in EVENT_COLUMNS.split(', '))}"
                " FROM events e JOIN unnest($1::text[], $2::text[], $3::text[])"
                " AS k (sid, author, cid)"
                " ON e.session_id = k.sid AND e.author = k.author AND e.client_id = k.cid",
                [k[0] for k in keys],
                [k[1] for k in keys],
                [k[2] for k in keys],
            )
            for row in found:
                event = event_of(row[0], tuple(row)[1:])
                originals[(row[0], event.author, row[5])] = event
        results: list[Appended | Conflict | BaseException] = []
        inserts: list[tuple[Any, ...]] = []
        derived: list[Statement] = []
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
            row, statements = prepare(decision)
            heads[session_id] = (decision.event.seq, decision.version)
            if key is not None:  # a later draft of the batch with this key is its duplicate
                originals[key] = decision.event
            inserts.append(row)
            derived.extend(statements)
            results.append(Appended(event=decision.event, duplicate=False))
        if inserts:
            await conn.executemany(_INSERT_EVENT_ONLY, inserts)
            # Derived rows in log order; runs of one statement go in one executemany.
            for sql, args in runs(derived):
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
                transaction = conn.transaction()
                await transaction.start()
                try:
                    result = await self._append_in_tx(conn, session_id, draft)
                except asyncpg.UniqueViolationError:
                    await transaction.rollback()
                    # Another node inserted the same dedupe key first: return its event.
                    key = dedupe_key(session_id, draft)
                    original = None if key is None else await find(conn, *key)
                    if original is None:
                        raise
                    return Appended(event=original, duplicate=True)
                except BaseException:
                    if not conn.is_closed():
                        await transaction.rollback()
                    raise
                pid = conn.get_server_pid()
                try:
                    await self.run_commit(conn, transaction)
                except Exception as exc:
                    if isinstance(result, Appended) and not result.duplicate:
                        raise self._commit_failed(exc, pid) from exc
                    return result  # decided without writing: it stands
        self.commits += 1
        return result

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
            original=None if key is None else await find(conn, *key),
            ts=self._clock(),
        )
        if not isinstance(decision, NewEvent):
            return decision
        await insert_event(conn, decision)
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
                    await check_message(conn, session_id, message_id)

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
                    await check_session(conn, session_id)
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
                    await check_session(conn, session_id)
                    return None
        return Role(role)

    async def read(self, session_id: str, after: int, limit: int | None = None) -> list[Event]:
        with _unavailable_on_failure():
            async with self._ready().acquire() as conn:
                rows = await conn.fetch(
                    f"SELECT {EVENT_COLUMNS} FROM events"
                    " WHERE session_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                    session_id,
                    after,
                    None if limit is None else max(limit, 0),
                )
                if not rows:
                    await check_session(conn, session_id)
        return [event_of(session_id, row) for row in rows]

    async def find(self, session_id: str, author: str, client_id: str) -> Event | None:
        with _unavailable_on_failure():
            async with self._ready().acquire() as conn:
                if self._unsettled:
                    alive = await conn.fetch(
                        "SELECT pid FROM pg_stat_activity WHERE pid = ANY($1::int[])",
                        sorted(self._unsettled),
                    )
                    self._unsettled = {row[0] for row in alive}
                    if self._unsettled:
                        raise StoreUnavailable("postgres: a lost commit may still be running")
                found = await find(conn, session_id, author, client_id)
                if found is None:
                    await check_session(conn, session_id)
        return found

    async def save_checkpoint(self, session_id: str, seq: int, state: bytes) -> None:
        pool = self._ready()
        with _unavailable_on_failure():
            async with pool.acquire() as conn:
                await check_session(conn, session_id)
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
                    await check_session(conn, session_id)
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
                    await check_session(conn, session_id)
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
                    await check_session(conn, session_id)
                    raise NotFound(f"no message {message_id!r} in session {session_id!r}")
        return message_of(row)

    async def streaming_messages(self) -> list[tuple[str, str]]:
        with _unavailable_on_failure():
            rows = await self._ready().fetch(
                "SELECT session_id, id FROM messages WHERE status = 'streaming'"
                " ORDER BY session_id, seq"
            )
        return [(row[0], row[1]) for row in rows]


class _BatchFailed(Exception):
    """A statement of a batch failed; the batch was rolled back."""
