from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tidings.backends.base import CommitUncertain, EventStore, StoreUnavailable
from tidings.backends.migrations.sqlite import MIGRATIONS
from tidings.backends.sqlite import SqliteStore
from tidings.core.model import Appended, Conflict

from .contract import EventStoreContract, FakeClock, StoreFactory, appended, message


class TestSqliteStore(EventStoreContract):
    @pytest.fixture
    def make_store(self, clock: FakeClock, tmp_path: Path) -> StoreFactory:
        path = str(tmp_path / "tidings.db")

        async def make() -> EventStore:
            store = SqliteStore(path, clock)
            await store.open()
            return store

        return make


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(str(tmp_path / "tidings.db"), FakeClock())
    await store.open()
    yield store
    await store.close()


async def test_the_writer_uses_wal_with_full_sync(store: SqliteStore) -> None:
    pragmas = await store.writer_pragmas()
    assert pragmas["journal_mode"] == "wal"
    assert pragmas["synchronous"] == 2  # FULL
    assert pragmas["foreign_keys"] == 1
    assert int(pragmas["busy_timeout"]) > 0


async def test_concurrent_appends_share_commits(store: SqliteStore) -> None:
    await store.create_session("s1", title="T", agent="echo", owner="alice")
    commits = store.commits
    results = await asyncio.gather(*(store.append("s1", message(f"m{i}")) for i in range(200)))
    assert sorted(appended(r).seq for r in results) == list(range(2, 202))
    assert store.commits - commits < 20  # group commit: far fewer than 200


async def test_an_empty_file_is_migrated_on_open(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    store = SqliteStore(str(path), FakeClock())
    await store.open()
    try:
        assert await store.migrate() == len(MIGRATIONS)
    finally:
        await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS),)
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    assert {"sessions", "members", "events", "messages"} <= tables


async def test_migrate_works_without_opening_and_keeps_data(tmp_path: Path) -> None:
    path = str(tmp_path / "t.db")
    assert await SqliteStore(path, FakeClock()).migrate() == len(MIGRATIONS)
    store = SqliteStore(path, FakeClock())
    await store.open()
    await store.create_session("s1", title="T", agent="echo", owner="alice")
    await store.close()
    assert await SqliteStore(path, FakeClock()).migrate() == len(MIGRATIONS)
    store = SqliteStore(path, FakeClock())
    await store.open()
    try:
        assert await store.head("s1") == 1
    finally:
        await store.close()


async def test_a_database_of_an_older_schema_is_migrated_with_its_data(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path)
    conn.executescript(MIGRATIONS[0])
    conn.execute(
        "INSERT INTO sessions (id, title, agent, owner, created_at, seq, version)"
        " VALUES ('s1', 'Old', 'echo', 'alice', 1, 0, 0)"
    )
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    store = SqliteStore(str(path), FakeClock())
    await store.open()
    try:
        assert (await store.get_session("s1")).title == "Old"
        await store.save_checkpoint("s1", 0, b"{}")
        assert await store.load_checkpoint("s1") == (0, b"{}")
    finally:
        await store.close()
    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS),)
    check.close()


async def test_a_version_2_database_migrates_to_dedupe_per_author(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    conn = sqlite3.connect(path)
    for script in MIGRATIONS[:2]:
        conn.executescript(script)
    conn.execute(
        "INSERT INTO sessions (id, title, agent, owner, created_at, seq, version)"
        " VALUES ('s1', 'Old', 'echo', 'alice', 1, 1, 0)"
    )
    conn.execute(
        "INSERT INTO events (session_id, seq, kind, ts, author, client_id, data)"
        " VALUES ('s1', 1, 'agent.status', 1, 'alice', 'c1', '{\"status\": \"idle\"}')"
    )
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()
    store = SqliteStore(str(path), FakeClock())
    await store.open()
    try:
        again = await store.append("s1", message("retry", client_id="c1"))
        assert isinstance(again, Appended)
        assert again.duplicate
        assert again.event.seq == 1
        other = await store.append("s1", message("bob's", client_id="c1", author="bob"))
        assert isinstance(other, Appended)
        assert not other.duplicate
        assert other.event.seq == 2
    finally:
        await store.close()
    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS),)
        indexes = {row[0] for row in check.execute("SELECT name FROM sqlite_master")}
    check.close()
    assert "events_author_client_id" in indexes
    assert "events_client_id" not in indexes


async def test_a_schema_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(StoreUnavailable, match="newer"):
        await SqliteStore(str(path), FakeClock()).open()


async def test_an_unusable_path_makes_the_store_unavailable(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "missing" / "dir" / "t.db"), FakeClock())
    with pytest.raises(StoreUnavailable):
        await store.open()


async def test_a_closed_store_refuses_work(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "t.db"), FakeClock())
    await store.open()
    await store.close()
    with pytest.raises(StoreUnavailable):
        await store.append("s1", message("hi"))
    with pytest.raises(StoreUnavailable):
        await store.head("s1")


async def _head_after_reopen(path: str) -> int:
    store = SqliteStore(path, FakeClock())
    await store.open()
    try:
        return await store.head("s1")
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("inline_after_idle_s", "inline_commits"),
    [(3600, 1), (0, 2)],  # appends via the writer thread / inline; create_session inline
)
async def test_close_commits_the_appends_still_queued(
    tmp_path: Path, inline_after_idle_s: float, inline_commits: int
) -> None:
    path = str(tmp_path / "t.db")
    store = SqliteStore(path, FakeClock(), inline_after_idle_s=inline_after_idle_s)
    await store.open()
    await store.create_session("s1", title="T", agent="echo", owner="alice")
    appends = [asyncio.ensure_future(store.append("s1", message(f"m{i}"))) for i in range(30)]
    await asyncio.sleep(0)  # every append is queued, none committed yet
    await store.close()
    assert sorted(appended(a.result()).seq for a in appends) == list(range(2, 32))
    assert store.inline_commits == inline_commits
    assert await _head_after_reopen(path) == 31


async def _append_one_by_one(store: SqliteStore, count: int) -> list[int]:
    return [appended(await store.append("s1", message(f"m{i}"))).seq for i in range(count)]


async def test_writes_after_a_pause_commit_on_the_loop_thread(tmp_path: Path) -> None:
    path = str(tmp_path / "t.db")
    store = SqliteStore(path, FakeClock(), inline_after_idle_s=0)
    await store.open()
    await store.create_session("s1", title="T", agent="echo", owner="alice")
    assert await _append_one_by_one(store, 50) == list(range(2, 52))
    assert store.inline_commits == store.commits == 51
    await store.close()
    assert await _head_after_reopen(path) == 51  # inline commits are as durable


async def test_back_to_back_writes_commit_on_the_writer_thread(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "t.db"), FakeClock(), inline_after_idle_s=3600)
    await store.open()
    try:
        # The first write finds the writer idle since ever; every later one finds it
        # busy or idle for less than an hour.
        await store.create_session("s1", title="T", agent="echo", owner="alice")
        assert await _append_one_by_one(store, 50) == list(range(2, 52))
        assert store.commits == 51
        assert store.inline_commits == 1
    finally:
        await store.close()


async def test_by_default_only_a_write_after_a_pause_commits_inline(store: SqliteStore) -> None:
    await store.create_session("s1", title="T", agent="echo", owner="alice")
    await asyncio.sleep(0.05)
    inline = store.inline_commits
    await store.append("s1", message("after a pause"))
    assert store.inline_commits == inline + 1
    # Queued while a thread batch commits: these go to the writer thread.
    await asyncio.gather(*(store.append("s1", message(f"m{i}")) for i in range(100)))
    assert store.inline_commits <= inline + 2
    assert await store.head("s1") == 102


async def test_after_a_slow_commit_writes_stay_off_the_loop_thread(tmp_path: Path) -> None:
    # Every commit counts as slow here, as on a disk that stalls.
    store = SqliteStore(str(tmp_path / "t.db"), FakeClock(), slow_commit_s=0)
    await store.open()
    try:
        await store.create_session("s1", title="T", agent="echo", owner="alice")
        assert store.inline_commits == 1  # the first: nothing was known to be slow
        for i in range(3):
            await asyncio.sleep(0.02)  # idle long enough to commit inline, but for that
            await store.append("s1", message(f"m{i}"))
        assert store.commits == 4
        assert store.inline_commits == 1
    finally:
        await store.close()


async def test_a_writer_thread_job_runs_after_a_pending_inline_batch(tmp_path: Path) -> None:
    # The writer's connection must never serve both threads at once.
    store = SqliteStore(str(tmp_path / "t.db"), FakeClock(), inline_after_idle_s=0)
    await store.open()
    try:
        await store.create_session("s1", title="T", agent="echo", owner="alice")
        appends = [asyncio.ensure_future(store.append("s1", message(f"m{i}"))) for i in range(5)]
        await asyncio.sleep(0)  # queued: their inline batch is scheduled, not yet run
        assert store.commits == 1
        assert await store._in_writer(lambda: store.commits) == 2
        assert [appended(await a).seq for a in appends] == [2, 3, 4, 5, 6]
    finally:
        await store.close()


async def test_a_write_queued_while_a_wal_checkpoint_is_due_goes_to_the_writer_thread(
    tmp_path: Path,
) -> None:
    store = SqliteStore(
        str(tmp_path / "t.db"), FakeClock(), inline_after_idle_s=0, wal_checkpoint_every=1
    )
    await store.open()
    try:
        await store.create_session("s1", title="T", agent="echo", owner="alice")
        await asyncio.sleep(0.05)  # its checkpoint is over
        inline = store.inline_commits
        later: list[asyncio.Future[Appended | Conflict]] = []
        first = store.submit("s1", message("a"))
        # Queued right after the commit that made a checkpoint due, before it starts.
        first.add_done_callback(lambda _: later.append(store.submit("s1", message("b"))))
        await first
        await later[0]
        assert store.inline_commits == inline + 1
        assert store.wal_checkpoints >= 2
    finally:
        await store.close()


def _wal_bytes(path: Path) -> int:
    wal = path.with_name(path.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


@pytest.mark.parametrize(("every", "bounded"), [(10, True), (10**9, False)])
async def test_the_wal_is_checkpointed_every_so_many_commits(
    tmp_path: Path, every: int, bounded: bool
) -> None:
    path = tmp_path / "t.db"
    store = SqliteStore(str(path), FakeClock(), wal_checkpoint_every=every)
    await store.open()
    try:
        await store.create_session("s1", title="T", agent="echo", owner="alice")
        await _append_one_by_one(store, 300)
        # ~5 pages of 4 KiB per commit: 300 commits never checkpointed pass 1 MiB.
        assert (_wal_bytes(path) < 2**20) is bounded
        assert (store.wal_checkpoints >= 20) is bounded
    finally:
        await store.close()


def _fsync_failure(conn: sqlite3.Connection) -> None:
    """COMMIT as a failed fsync leaves it: the frames may be on disk, SQLite says EIO."""
    conn.execute("COMMIT")
    exc = sqlite3.OperationalError("disk I/O error")
    exc.sqlite_errorcode = sqlite3.SQLITE_IOERR_FSYNC
    raise exc


def _commit(conn: sqlite3.Connection) -> None:
    conn.execute("COMMIT")


def _disk_full(conn: sqlite3.Connection) -> None:
    exc = sqlite3.OperationalError("database or disk is full")
    exc.sqlite_errorcode = sqlite3.SQLITE_FULL
    raise exc


async def test_an_fsync_failure_at_commit_is_uncertain_and_stops_the_store(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "t.db")
    store = SqliteStore(path, FakeClock())
    await store.open()
    await store.create_session("s1", title="T", agent="echo", owner="alice")
    appended(await store.append("s1", message("before", client_id="c0")))
    store.run_commit = _fsync_failure
    results = await asyncio.gather(
        store.append("s1", message("in doubt", client_id="c1")),
        store.append("s1", message("before", client_id="c0")),  # a duplicate: known
        return_exceptions=True,
    )
    assert isinstance(results[0], CommitUncertain)
    assert not results[0].resolvable
    assert isinstance(results[1], Appended)
    assert results[1].duplicate
    # Fail stop: no further write, not ready, no lookup, until a restart.
    with pytest.raises(StoreUnavailable) as refused:
        await store.append("s1", message("after", client_id="c2"))
    assert refused.value.cause == "stopped"
    with pytest.raises(StoreUnavailable, match="restart"):
        await store.ping()
    with pytest.raises(StoreUnavailable):
        await store.find("s1", "alice", "c1")
    await store.close()
    # Restarted, the store tells the truth: the batch had reached the disk.
    reopened = SqliteStore(path, FakeClock())
    await reopened.open()
    try:
        found = await reopened.find("s1", "alice", "c1")
        assert found is not None
        assert found.seq == 3
        retry = await reopened.append("s1", message("in doubt", client_id="c1"))
        assert isinstance(retry, Appended)
        assert retry.duplicate
        assert await reopened.find("s1", "alice", "c2") is None
    finally:
        await reopened.close()


async def test_a_full_disk_at_commit_is_not_stored_and_the_store_goes_on(
    store: SqliteStore,
) -> None:
    await store.create_session("s1", title="T", agent="echo", owner="alice")
    store.run_commit = _disk_full
    with pytest.raises(StoreUnavailable) as failed:
        await store.append("s1", message("lost", client_id="c1"))
    assert failed.value.cause == "disk_full"
    store.run_commit = _commit
    event = appended(await store.append("s1", message("kept", client_id="c1")))
    assert event.seq == 2
    await store.ping()
