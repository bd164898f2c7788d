"""The default `EventStore`: one SQLite file, WAL, `synchronous=FULL`, group commit.

How a write goes:

* Every write (append, create_session, save_partial) is queued on the event loop as a
  small function plus a future. A single flusher task takes *everything* queued, hands
  it to the one writer thread, and that thread runs it as one transaction, then one
  COMMIT, so one fsync acknowledges the whole batch. If any write of the batch fails,
  the batch is rolled back and rerun with each write in its own SAVEPOINT, so one
  failing write spoils nothing else. Writes queued while a batch commits form the next
  batch. That is group commit: under load, batches grow and fsyncs stay few.
* A batch that finds the writer idle for a while (`INLINE_AFTER_IDLE_S`) commits on the
  event loop's thread instead. Waking a thread that has slept can cost as much as the
  commit itself (measured here after 50 ms asleep: 0.12-1.0 ms p50, up to 3 ms p99 for
  the hand-off alone, against ~0.5 ms for the commit; `benchmarks/thread_handoff.py`),
  and the loop would be idle anyway: a send after a pause is acknowledged (and seen by
  others) sooner. Back-to-back batches still go to the thread, so under load the loop
  keeps serving while the fsync runs; after any commit slower than `SLOW_COMMIT_S` (a
  disk that stalls) every batch goes to the thread for `SLOW_DISK_PAUSE_S`, so a slow
  disk stalls the loop at most once per pause. For the same reason no commit
  checkpoints the WAL (`wal_autocheckpoint = 0`): every `WAL_CHECKPOINT_EVERY` commits a
  PASSIVE checkpoint runs as a job of its own on the writer thread. The connection is
  never used by both threads at once: an inline batch waits for no thread job, and a
  thread job first commits a pending inline batch.
* The writer thread owns its connection and a cache of each session's `(seq, version)`,
  read once from the row and then kept up to date. **This assumes that this store is
  the only writer of the file** (one server process per SQLite file); several processes
  appending to one file would need the cache removed. The row's `seq`/`version` columns
  are written once per batch and session, in the same transaction.
* Reads run on a small pool of reader threads, each with its own connection; WAL lets
  them read the last committed state while a batch commits.

Every `sqlite3.Error` surfaces as `StoreUnavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, TypeVar

import msgspec

from tidings.backends.base import (
    Clock,
    CommitHook,
    CommitUncertain,
    NotFound,
    StoreUnavailable,
)
from tidings.backends.rows import (
    MESSAGE_COLUMNS,
    SESSION_COLUMNS,
    NewEvent,
    decide_append,
    dedupe_key,
    message_of,
    row_change,
    session_of,
)
from tidings.backends.sqlite_sql import (
    NOT_COMMITTED,
    check_message,
    check_session,
    derived,
    event_key,
    failure_cause,
    find_event,
    migrate_schema,
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

T = TypeVar("T")
log = logging.getLogger(__name__)
_Write = Callable[[sqlite3.Connection], Any]

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode

#: A batch commits on the event loop's thread when the writer has been idle this long
#: (see the module docstring); sooner, it goes to the writer thread.
INLINE_AFTER_IDLE_S: Final = 0.002
#: A commit slower than this turns inline commits off for `SLOW_DISK_PAUSE_S`.
SLOW_COMMIT_S: Final = 0.010
SLOW_DISK_PAUSE_S: Final = 10.0

#: Commits between two WAL checkpoints (SQLite's own default is every 1,000 pages; an
#: append writes a handful).
WAL_CHECKPOINT_EVERY: Final = 200

#: Larger than any seq: `messages(before=None)` reads with this bound.
_NO_BOUND: Final = 2**62
_BUSY_TIMEOUT_MS: Final = 5000


def _unavailable(exc: sqlite3.Error) -> StoreUnavailable:
    return StoreUnavailable(f"sqlite: {exc}", cause=failure_cause(exc))


def _commit(conn: sqlite3.Connection) -> None:
    conn.execute("COMMIT")


def _probe(conn: sqlite3.Connection) -> None:
    """A write that changes nothing but still reaches the disk: the header's
    user_version page is rewritten (with its WAL frame and fsync) at commit."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    conn.execute(f"PRAGMA user_version = {int(version)}")


_Batch = list[tuple[_Write, "asyncio.Future[Any]"]]


def _settle(batch: _Batch, results: list[tuple[bool, Any]]) -> None:
    for (_, future), (ok, value) in zip(batch, results, strict=True):
        if future.done():  # the caller gave up waiting; the write stands
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


def _fail(batch: _Batch, exc: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(StoreUnavailable(f"sqlite writer: {exc!r}"))


class SqliteStore:
    """`EventStore` on one SQLite file (see the module docstring for the design)."""

    def __init__(
        self,
        path: str,
        clock: Clock,
        *,
        readers: int = 2,
        inline_after_idle_s: float = INLINE_AFTER_IDLE_S,
        slow_commit_s: float = SLOW_COMMIT_S,
        wal_checkpoint_every: int = WAL_CHECKPOINT_EVERY,
    ) -> None:
        self.path = path
        self.inline_after_idle_s = inline_after_idle_s
        self.slow_commit_s = slow_commit_s
        self.wal_checkpoint_every = wal_checkpoint_every
        self._clock = clock
        self._readers = readers
        self._open = False
        # Event-loop side of the writer.
        self._pending: _Batch = []
        self._flusher: asyncio.Task[None] | None = None
        self._inline: asyncio.Handle | None = None
        self._idle_since = float("-inf")  # time.monotonic() the last batch finished
        self._slow_until = float("-inf")  # time.monotonic(): no inline commit before
        self._thread_jobs = 0  # writer-thread jobs other than batches (checkpoints...)
        self._checkpointer: asyncio.Task[None] | None = None
        self._checkpointed_at = 0  # `commits` at the last WAL checkpoint
        self._writer: ThreadPoolExecutor | None = None
        self._reader: ThreadPoolExecutor | None = None
        # Writer side: touched by the writer thread, or by the loop's thread while no
        # writer-thread job runs (an inline batch).
        self._wconn: sqlite3.Connection | None = None
        self._heads: dict[str, tuple[int, int]] = {}
        self._dirty: set[str] = set()
        # Reader threads: one connection each, all closed by `close()`.
        self._local = threading.local()
        self._rconns: list[sqlite3.Connection] = []
        self._rconns_lock = threading.Lock()
        #: Runs COMMIT on the writer's connection. Fault-injection tests replace it (to
        #: fail the way a failed fsync does, after the commit may have reached the disk).
        self.run_commit: Callable[[sqlite3.Connection], None] = _commit
        #: Why the store stopped writing (an I/O failure at commit), or None.
        self.stopped: str | None = None
        #: Transactions committed by the writer (for tests and metrics): under load it
        #: grows much more slowly than the number of appends.
        self.commits = 0
        #: Called after each commit with (writes, seconds): see `ReportsCommits`.
        self.on_commit: CommitHook | None = None
        #: Writes committed (appends, partial saves, session creations).
        self.writes = 0
        #: Of `commits`, those made on the event loop's thread (the writer was idle).
        self.inline_commits = 0
        #: WAL checkpoints run (each a writer-thread job).
        self.wal_checkpoints = 0

    # -- lifecycle -------------------------------------------------------------------

    async def open(self) -> None:
        if self._open:
            return
        writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tidings-sqlite-writer")
        try:
            await asyncio.get_running_loop().run_in_executor(writer, self._open_writer)
        except BaseException:
            writer.shutdown(wait=True)
            raise
        self._writer = writer
        self._reader = ThreadPoolExecutor(
            max_workers=self._readers, thread_name_prefix="tidings-sqlite-reader"
        )
        self._open = True

    async def close(self) -> None:
        if not self._open:
            return
        self._open = False  # new writes are refused; queued ones still commit
        self._commit_pending_inline()
        while self._flusher is not None or self._checkpointer is not None:
            await asyncio.wait([t for t in (self._flusher, self._checkpointer) if t is not None])
        assert self._writer is not None
        assert self._reader is not None
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._writer, self._close_writer)
        self._writer.shutdown(wait=True)
        self._reader.shutdown(wait=True)
        with self._rconns_lock:
            for conn in self._rconns:
                conn.close()
            self._rconns.clear()
        self._writer = self._reader = None
        self._local = threading.local()

    async def ping(self) -> None:
        if self.stopped is not None:
            raise StoreUnavailable(self.stopped, cause="stopped")
        await self._read(lambda conn: conn.execute("SELECT 1").fetchone())

    async def probe_write(self) -> None:
        await self._write(_probe)

    async def migrate(self) -> int:
        """Create or migrate the schema; return its version (for `tidings migrate`)."""
        if self._open:
            return await self._in_writer(self._migrate_writer)
        return await asyncio.to_thread(self._migrate_file)

    async def _in_writer(self, job: Callable[[], T]) -> T:
        """Run `job` on the writer thread (never alongside an inline batch)."""
        assert self._writer is not None
        self._commit_pending_inline()
        self._thread_jobs += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._writer, job)
        finally:
            self._thread_jobs -= 1

    async def writer_pragmas(self) -> dict[str, int | str]:
        """The durability settings of the writer's connection (for tests and diagnostics)."""
        if not self._open or self._writer is None:
            raise StoreUnavailable("the SQLite store is not open")

        def read() -> dict[str, int | str]:
            assert self._wconn is not None
            names = ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
            return {name: self._wconn.execute(f"PRAGMA {name}").fetchone()[0] for name in names}

        return await self._in_writer(read)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, cached_statements=256
        )
        conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    def _open_writer(self) -> None:
        try:
            conn = self._connect()
        except sqlite3.Error as exc:
            raise _unavailable(exc) from exc
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal" and self.path != ":memory:":
                raise StoreUnavailable(f"sqlite: cannot use WAL on {self.path!r} (got {mode})")
            # FULL: the WAL is fsynced at every commit, so an ack survives power loss.
            conn.execute("PRAGMA synchronous = FULL")
            # Checkpoints are jobs of their own on this thread (module docstring).
            conn.execute("PRAGMA wal_autocheckpoint = 0")
            migrate_schema(conn)
            # A file the process cannot write (read-only file or mount) opens and reads
            # fine: refuse it now rather than fail every send later.
            conn.execute("BEGIN IMMEDIATE")
            _probe(conn)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            conn.close()
            failure = _unavailable(exc)
            raise StoreUnavailable(
                f"sqlite: cannot write {self.path!r}: {exc}", cause=failure.cause
            ) from exc
        except BaseException:
            conn.close()
            raise
        self._wconn = conn
        self._heads.clear()

    def _close_writer(self) -> None:
        if self._wconn is not None:
            self._wconn.close()
            self._wconn = None
        self._heads.clear()

    def _migrate_writer(self) -> int:
        assert self._wconn is not None
        try:
            return migrate_schema(self._wconn)
        except sqlite3.Error as exc:
            raise _unavailable(exc) from exc

    def _migrate_file(self) -> int:
        try:
            conn = self._connect()
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                return migrate_schema(conn)
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise _unavailable(exc) from exc

    # -- the writer: group commit ----------------------------------------------------

    async def _write(self, write: _Write) -> Any:
        return await self._submit(write)

    def _submit(self, write: _Write) -> asyncio.Future[Any]:
        """Queue `write` for the next batch at once; the future settles after its commit."""
        if self.stopped is not None:
            raise StoreUnavailable(self.stopped, cause="stopped")
        if not self._open:
            raise StoreUnavailable("the SQLite store is not open")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((write, future))
        if self._flusher is None and self._inline is None:
            now = time.monotonic()
            if (
                now - self._idle_since >= self.inline_after_idle_s
                and now >= self._slow_until
                and not self._thread_jobs
                and self._checkpointer is None
            ):
                # Later in this loop turn, so writes queued meanwhile join the batch.
                self._inline = loop.call_soon(self._commit_inline)
            else:
                self._flusher = loop.create_task(self._flush(), name="tidings-sqlite-flush")
        return future

    def _commit_pending_inline(self) -> None:
        """Commit now an inline batch scheduled for later in this loop turn, if any."""
        if self._inline is not None:
            self._inline.cancel()
            self._commit_inline()

    def _commit_inline(self) -> None:
        """Commit everything queued as one batch, here on the loop's thread."""
        self._inline = None
        batch, self._pending = self._pending, []
        try:
            results = self._commit_batch([write for write, _ in batch])
        except BaseException as exc:
            _fail(batch, exc)
            raise
        finally:
            self._idle_since = time.monotonic()
        self.inline_commits += 1
        _settle(batch, results)
        self._maybe_checkpoint()

    async def _flush(self) -> None:
        """Commit everything queued, batch after batch on the writer thread, until the
        queue is empty."""
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                assert self._writer is not None
                try:
                    results = await loop.run_in_executor(
                        self._writer, self._commit_batch, [write for write, _ in batch]
                    )
                except BaseException as exc:
                    _fail(batch, exc)
                    raise
                _settle(batch, results)
                self._maybe_checkpoint()
        finally:
            self._flusher = None
            self._idle_since = time.monotonic()

    def _maybe_checkpoint(self) -> None:
        if self.commits - self._checkpointed_at >= self.wal_checkpoint_every and (
            self._checkpointer is None
        ):
            self._checkpointed_at = self.commits
            self._checkpointer = asyncio.get_running_loop().create_task(
                self._checkpoint_wal(), name="tidings-sqlite-wal-checkpoint"
            )

    async def _checkpoint_wal(self) -> None:
        """Copy committed WAL frames into the database file, on the writer thread (a
        PASSIVE checkpoint: it waits for no reader; a later one finishes the rest)."""

        def checkpoint() -> None:
            assert self._wconn is not None
            self._wconn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()

        try:
            await self._in_writer(checkpoint)
            self.wal_checkpoints += 1
        except Exception:  # the next one retries; the WAL only grows meanwhile
            log.warning("WAL checkpoint of %s failed", self.path, exc_info=True)
        finally:
            self._checkpointer = None

    def _commit_batch(self, writes: list[_Write]) -> list[tuple[bool, Any]]:
        """On the writer thread (or inline): run the batch as one transaction, one commit.

        First optimistically, every write straight into the transaction. Should any
        write raise (a bad draft, an unknown session, an SQL error), the transaction is
        rolled back and the batch runs again with each write in its own SAVEPOINT, so
        the failing write fails alone. Failures are rare; savepoints cost two
        statements per write, which is why they are not the first attempt.

        A COMMIT failing on an I/O error stops the store (`_stop`); later batches are
        refused without being run.
        """
        conn = self._wconn
        assert conn is not None
        if self.stopped is not None:
            return [(False, StoreUnavailable(self.stopped, cause="stopped"))] * len(writes)
        began = time.monotonic()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                results: list[tuple[bool, Any]] = [(True, write(conn)) for write in writes]
            except Exception:
                self._rollback(conn)
                conn.execute("BEGIN IMMEDIATE")
                results = [self._run_in_savepoint(conn, write) for write in writes]
            if self._dirty:
                conn.executemany(
                    "UPDATE sessions SET seq = ?, version = ? WHERE id = ?",
                    [(*self._heads[sid], sid) for sid in self._dirty],
                )
        except sqlite3.Error as exc:
            self._rollback(conn)
            failure = _unavailable(exc)
            return [(False, failure)] * len(writes)
        try:
            self.run_commit(conn)
        except sqlite3.Error as exc:
            self._rollback(conn)
            if failure_cause(exc) in NOT_COMMITTED:
                return [(False, _unavailable(exc))] * len(writes)
            return self._stop(exc, results)
        self._dirty.clear()
        self.commits += 1
        self.writes += sum(1 for ok, _ in results if ok)
        ended = time.monotonic()
        if self.on_commit is not None:
            self.on_commit(len(writes), ended - began)
        if ended - began >= self.slow_commit_s:
            self._slow_until = ended + SLOW_DISK_PAUSE_S
        return results

    def _stop(self, exc: sqlite3.Error, results: list[tuple[bool, Any]]) -> list[tuple[bool, Any]]:
        """Fail stop after an I/O error at COMMIT (a failed fsync, typically): the
        batch may or may not be on disk, and what SQLite reports afterwards cannot be
        trusted (the pages it keeps may be ones the disk lost), as PostgreSQL reasons
        when it panics on a failed fsync. No write is taken until a restart recovers the
        WAL. The batch's writes become `CommitUncertain` (not resolvable here); what was
        decided without writing (duplicates, conflicts, failed writes) stands."""
        self.stopped = (
            f"the SQLite store stopped writing after an I/O failure at commit ({exc}); "
            "restart the server once the disk is healthy"
        )
        log.error("sqlite %s: %s", self.path, self.stopped)
        uncertain = CommitUncertain(
            f"sqlite: the outcome of a commit is unknown: {exc}",
            resolvable=False,
            cause=failure_cause(exc),
        )
        out: list[tuple[bool, Any]] = []
        for ok, value in results:
            known = (
                not ok
                or isinstance(value, Conflict)
                or (isinstance(value, Appended) and value.duplicate)
            )
            out.append((ok, value) if known else (False, uncertain))
        return out

    def _run_in_savepoint(self, conn: sqlite3.Connection, write: _Write) -> tuple[bool, Any]:
        heads = {sid: self._heads[sid] for sid in self._dirty}
        conn.execute("SAVEPOINT w")
        try:
            value = write(conn)
        except Exception as exc:
            conn.execute("ROLLBACK TO w")
            conn.execute("RELEASE w")
            # Forget what the failed write did to the cache (heads it read are true).
            for sid in self._dirty - heads.keys():
                del self._heads[sid]
            self._heads.update(heads)
            self._dirty.intersection_update(heads)
            if isinstance(exc, sqlite3.Error):
                exc = _unavailable(exc)
            return (False, exc)
        conn.execute("RELEASE w")
        return (True, value)

    def _rollback(self, conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        # The cached heads may describe writes that were rolled back: drop them all.
        self._heads.clear()
        self._dirty.clear()

    def _head(self, conn: sqlite3.Connection, session_id: str) -> tuple[int, int]:
        head = self._heads.get(session_id)
        if head is None:
            row = conn.execute(
                "SELECT seq, version FROM sessions WHERE id = ?", (session_id,)
            ).fetchone()
            if row is None:
                raise NotFound(f"no session {session_id!r}")
            head = self._heads[session_id] = (row[0], row[1])
        return head

    def _append_in_tx(
        self, conn: sqlite3.Connection, session_id: str, draft: Draft
    ) -> Appended | Conflict:
        seq, version = self._head(conn, session_id)
        key = dedupe_key(session_id, draft)
        # On the hot path the unique index is the lookup: the insert meets a stored key
        # (one statement, not a SELECT then an INSERT). A compare-and-set looks first,
        # since a conflict must not hide a duplicate (`decide_append`'s order).
        looked = key is not None and draft.base_version is not None
        original = find_event(conn, *key) if looked and key is not None else None
        ts = self._clock()
        decision = decide_append(
            session_id, draft, seq=seq, version=version, original=original, ts=ts
        )
        if not isinstance(decision, NewEvent):
            return decision
        if self._insert_event(conn, decision) or key is None:
            return Appended(event=decision.event, duplicate=False)
        stored = find_event(conn, *key)  # the insert met the key: decide with it
        result = decide_append(session_id, draft, seq=seq, version=version, original=stored, ts=ts)
        assert isinstance(result, Appended)
        return result

    def _insert_event(self, conn: sqlite3.Connection, new: NewEvent) -> bool:
        """Insert the event and its derived rows, and move the cached head on; False
        (nothing written) when its dedupe key is stored already."""
        event = new.event
        statements = derived(event.session, row_change(event))
        cursor = conn.execute(
            "INSERT INTO events (session_id, seq, author, client_id, kind, ts, data)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (session_id, author, client_id)"
            " WHERE client_id IS NOT NULL DO NOTHING",
            (*event_key(event), event.kind, event.ts, new.text),
        )
        if cursor.rowcount == 0:
            return False
        for sql, args in statements:
            conn.execute(sql, args)
        # Only once every statement has succeeded: a failed write leaves the cache as is.
        self._heads[event.session] = (event.seq, new.version)
        self._dirty.add(event.session)
        return True

    # -- writes ----------------------------------------------------------------------

    async def create_session(
        self, session_id: str, *, title: str, agent: str, owner: str
    ) -> SessionInfo:
        def write(conn: sqlite3.Connection) -> SessionInfo:
            exists = conn.execute("SELECT 1 FROM sessions WHERE id = ?", (session_id,))
            if exists.fetchone() is not None:
                raise ValueError(f"session {session_id!r} already exists")
            now = self._clock()
            conn.execute(
                "INSERT INTO sessions (id, title, agent, owner, created_at, seq, version)"
                " VALUES (?, ?, ?, ?, ?, 0, 0)",
                (session_id, title, agent, owner, now),
            )
            first = Draft(
                kind=Kind.MEMBER_ADDED, author=owner, data={"user": owner, "role": "owner"}
            )
            decision = decide_append(session_id, first, seq=0, version=0, original=None, ts=now)
            assert isinstance(decision, NewEvent)
            self._insert_event(conn, decision)
            return SessionInfo(
                id=session_id, title=title, agent=agent, owner=owner, created_at=now, seq=1
            )

        result: SessionInfo = await self._write(write)
        return result

    async def append(self, session_id: str, draft: Draft) -> Appended | Conflict:
        result: Appended | Conflict = await self.submit(session_id, draft)
        return result

    def submit(self, session_id: str, draft: Draft) -> asyncio.Future[Appended | Conflict]:
        return self._submit(lambda conn: self._append_in_tx(conn, session_id, draft))

    async def save_partial(self, session_id: str, message_id: str, content: str) -> None:
        def write(conn: sqlite3.Connection) -> None:
            # Only while streaming: a late partial must not overwrite the final content.
            cursor = conn.execute(
                "UPDATE messages SET content = ?"
                " WHERE session_id = ? AND id = ? AND status = 'streaming'",
                (content, session_id, message_id),
            )
            if cursor.rowcount == 0:
                check_message(conn, session_id, message_id)

        await self._write(write)

    # -- reads -----------------------------------------------------------------------

    def _reader_conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA query_only = ON")
            with self._rconns_lock:
                self._rconns.append(conn)
            self._local.conn = conn
        return conn

    async def _read(self, read: Callable[[sqlite3.Connection], T]) -> T:
        reader = self._reader
        if not self._open or reader is None:
            raise StoreUnavailable("the SQLite store is not open")

        def run() -> T:
            return read(self._reader_conn())

        try:
            return await asyncio.get_running_loop().run_in_executor(reader, run)
        except sqlite3.Error as exc:
            raise _unavailable(exc) from exc

    async def get_session(self, session_id: str) -> SessionInfo:
        def read(conn: sqlite3.Connection) -> SessionInfo:
            row = conn.execute(
                f"SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?", (session_id,)
            ).fetchone()
            if row is None:
                raise NotFound(f"no session {session_id!r}")
            return session_of(row)

        return await self._read(read)

    async def list_sessions(self, user: str) -> list[SessionInfo]:
        def read(conn: sqlite3.Connection) -> list[SessionInfo]:
            rows = conn.execute(
                "SELECT s.id, s.title, s.agent, s.owner, s.created_at, s.seq, s.version,"
                " s.status FROM members m JOIN sessions s ON s.id = m.session_id"
                " WHERE m.user = ? ORDER BY s.created_at DESC, s.rowid DESC",
                (user,),
            ).fetchall()
            return [session_of(row) for row in rows]

        return await self._read(read)

    async def members(self, session_id: str) -> dict[str, Role]:
        def read(conn: sqlite3.Connection) -> dict[str, Role]:
            rows = conn.execute(
                "SELECT user, role FROM members WHERE session_id = ?", (session_id,)
            ).fetchall()
            if not rows:
                check_session(conn, session_id)
            return {user: Role(role) for user, role in rows}

        return await self._read(read)

    async def role(self, session_id: str, user: str) -> Role | None:
        def read(conn: sqlite3.Connection) -> Role | None:
            row = conn.execute(
                "SELECT role FROM members WHERE session_id = ? AND user = ?", (session_id, user)
            ).fetchone()
            if row is None:
                check_session(conn, session_id)
                return None
            return Role(row[0])

        return await self._read(read)

    async def read(self, session_id: str, after: int, limit: int | None = None) -> list[Event]:
        def read(conn: sqlite3.Connection) -> list[Event]:
            rows = conn.execute(
                "SELECT seq, kind, ts, author, client_id, data FROM events"
                " WHERE session_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                (session_id, after, -1 if limit is None else max(limit, 0)),
            ).fetchall()
            if not rows:
                check_session(conn, session_id)
            return [
                Event(
                    session=session_id,
                    seq=seq,
                    kind=kind,
                    ts=ts,
                    author=author,
                    client_id=client_id,
                    data=_decode(data),
                )
                for seq, kind, ts, author, client_id, data in rows
            ]

        return await self._read(read)

    async def find(self, session_id: str, author: str, client_id: str) -> Event | None:
        if self.stopped is not None:
            # What reached the disk is unknown until a restart recovers the WAL.
            raise StoreUnavailable(self.stopped, cause="stopped")

        def read(conn: sqlite3.Connection) -> Event | None:
            found = find_event(conn, session_id, author, client_id)
            if found is None:
                check_session(conn, session_id)
            return found

        return await self._read(read)

    async def save_checkpoint(self, session_id: str, seq: int, state: bytes) -> None:
        def write(conn: sqlite3.Connection) -> None:
            check_session(conn, session_id)
            conn.execute(
                "INSERT INTO checkpoints (session_id, seq, state) VALUES (?, ?, ?)"
                " ON CONFLICT (session_id) DO UPDATE SET seq = excluded.seq,"
                " state = excluded.state WHERE excluded.seq > checkpoints.seq",
                (session_id, seq, state),
            )

        await self._write(write)

    async def load_checkpoint(self, session_id: str) -> tuple[int, bytes] | None:
        def read(conn: sqlite3.Connection) -> tuple[int, bytes] | None:
            row = conn.execute(
                "SELECT seq, state FROM checkpoints WHERE session_id = ?", (session_id,)
            ).fetchone()
            if row is None:
                check_session(conn, session_id)
                return None
            return int(row[0]), bytes(row[1])

        return await self._read(read)

    async def head(self, session_id: str) -> int:
        def read(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT seq FROM sessions WHERE id = ?", (session_id,)).fetchone()
            if row is None:
                raise NotFound(f"no session {session_id!r}")
            seq: int = row[0]
            return seq

        return await self._read(read)

    async def messages(
        self, session_id: str, *, before: int | None = None, limit: int = 50
    ) -> list[Message]:
        def read(conn: sqlite3.Connection) -> list[Message]:
            rows = conn.execute(
                f"SELECT {MESSAGE_COLUMNS} FROM messages"
                " WHERE session_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?",
                (session_id, _NO_BOUND if before is None else before, max(limit, 0)),
            ).fetchall()
            if not rows:
                check_session(conn, session_id)
            return [message_of(row) for row in rows]

        return await self._read(read)

    async def message(self, session_id: str, message_id: str) -> Message:
        def read(conn: sqlite3.Connection) -> Message:
            row = conn.execute(
                f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE session_id = ? AND id = ?",
                (session_id, message_id),
            ).fetchone()
            if row is None:
                check_session(conn, session_id)
                raise NotFound(f"no message {message_id!r} in session {session_id!r}")
            return message_of(row)

        return await self._read(read)

    async def streaming_messages(self) -> list[tuple[str, str]]:
        def read(conn: sqlite3.Connection) -> list[tuple[str, str]]:
            rows = conn.execute(
                "SELECT session_id, id FROM messages WHERE status = 'streaming'"
                " ORDER BY session_id, seq"
            ).fetchall()
            return [(session_id, message_id) for session_id, message_id in rows]

        return await self._read(read)
