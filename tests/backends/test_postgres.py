"""The contract suite on PostgreSQL, each test in a fresh schema of the `test` database.

Set `TIDINGS_TEST_POSTGRES_URL` to use another server. Without a server the tests skip,
except under `CI=true`, where they fail.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from asyncpg.transaction import Transaction

from tidings.backends.base import CommitUncertain, EventStore, StoreUnavailable
from tidings.backends.migrations.postgres import MIGRATIONS
from tidings.backends.postgres import PostgresStore, _commit
from tidings.backends.postgres_sql import commit_failure
from tidings.core.model import Appended, Event

from .contract import EventStoreContract, FakeClock, StoreFactory, appended, message

pytestmark = pytest.mark.postgres

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


class TestPostgresStore(EventStoreContract):
    @pytest.fixture
    def make_store(self, clock: FakeClock, postgres_dsn: str) -> StoreFactory:
        async def make() -> EventStore:
            store = PostgresStore(postgres_dsn, clock, max_size=4)
            await store.open()
            return store

        return make


async def test_two_nodes_appending_to_one_session_keep_seqs_gap_free(postgres_dsn: str) -> None:
    clock = FakeClock()
    one = PostgresStore(postgres_dsn, clock, max_size=4)
    two = PostgresStore(postgres_dsn, clock, max_size=4)
    await one.open()
    await two.open()
    try:
        await one.create_session("s1", title="T", agent="echo", owner="alice")
        results = await asyncio.gather(
            *(
                (one if i % 2 else two).append("s1", message(f"m{i}", client_id=f"c{i % 30}"))
                for i in range(60)
            )
        )
        fresh = sorted(appended(r).seq for r in results if not getattr(r, "duplicate", True))
        assert fresh == list(range(2, 32))  # 30 distinct client ids, one event each
        assert [e.seq for e in await two.read("s1", 0)] == list(range(1, 32))
        assert (await one.get_session("s1")).seq == 31
    finally:
        await one.close()
        await two.close()


async def test_migrate_is_idempotent_and_reports_the_version(postgres_dsn: str) -> None:
    store = PostgresStore(postgres_dsn, FakeClock(), max_size=2)
    assert await store.migrate() == len(MIGRATIONS)
    await store.open()
    try:
        assert await store.migrate() == len(MIGRATIONS)
    finally:
        await store.close()


async def test_an_unreachable_server_makes_the_store_unavailable() -> None:
    # Port 9 (discard) on loopback is closed on any sane test machine.
    store = PostgresStore("postgresql://postgres@127.0.0.1:9/test", FakeClock())
    with pytest.raises(StoreUnavailable):
        await store.open()


async def test_a_version_2_database_migrates_to_dedupe_per_author(postgres_dsn: str) -> None:
    from tidings.backends.migrations.postgres import VERSION_TABLE

    conn = await asyncpg.connect(postgres_dsn)
    try:
        await conn.execute(VERSION_TABLE)
        for script in MIGRATIONS[:2]:
            await conn.execute(script)
        await conn.execute("UPDATE tidings_schema SET version = 2")
        await conn.execute(
            "INSERT INTO sessions (id, title, agent, owner, created_at, seq, version)"
            " VALUES ('s1', 'Old', 'echo', 'alice', 1, 1, 0);"
            " INSERT INTO events (session_id, seq, kind, ts, author, client_id, data)"
            " VALUES ('s1', 1, 'agent.status', 1, 'alice', 'c1', '{\"status\": \"idle\"}')"
        )
    finally:
        await conn.close()
    store = PostgresStore(postgres_dsn, FakeClock(), max_size=2)
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
        assert await store.migrate() == len(MIGRATIONS)
    finally:
        await store.close()


@pytest.fixture
async def pg_store(postgres_dsn: str) -> AsyncIterator[PostgresStore]:
    name = f"tidings-test-{uuid.uuid4().hex[:8]}"
    store = PostgresStore(postgres_dsn, FakeClock(), max_size=4, application_name=name)
    await store.open()
    yield store
    await store.close()


async def test_concurrent_appends_share_transactions(pg_store: PostgresStore) -> None:
    await pg_store.create_session("s1", title="T", agent="echo", owner="alice")
    commits = pg_store.commits
    results = await asyncio.gather(*(pg_store.append("s1", message(f"m{i}")) for i in range(100)))
    assert sorted(appended(r).seq for r in results) == list(range(2, 102))
    assert pg_store.commits - commits < 20  # group commit: far fewer than 100


async def test_a_statement_failing_in_a_batch_fails_only_its_own_append(
    pg_store: PostgresStore,
) -> None:
    await pg_store.create_session("s1", title="T", agent="echo", owner="alice")
    # PostgreSQL text cannot hold NUL: the batch's message insert fails, the batch is
    # rolled back, and its appends are retried one by one.
    drafts = [message("a"), message("bad\x00"), message("b")]
    results = await asyncio.gather(
        *(pg_store.append("s1", d) for d in drafts), return_exceptions=True
    )
    assert isinstance(results[1], StoreUnavailable)
    good = [r.event.seq for r in results if isinstance(r, Appended)]
    assert sorted(good) == [2, 3]
    assert [e.seq for e in await pg_store.read("s1", 0)] == [1, 2, 3]


# -- commit outcomes (issue 10 points 1 and 3) -------------------------------------------


async def _terminate(dsn: str, pid: int) -> None:
    """End one backend of ours (never another's) and wait until it is gone."""
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute("SELECT pg_terminate_backend($1)", pid)
        for _ in range(200):  # bounded: about 2 s
            if not await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid
            ):
                return
            await asyncio.sleep(0.01)
    finally:
        await admin.close()


async def _find_when_settled(store: PostgresStore, session_id: str, client_id: str) -> Event | None:
    """`find`, retried while the store says a lost commit may still be running."""
    for _ in range(100):
        try:
            return await store.find(session_id, "alice", client_id)
        except StoreUnavailable:
            await asyncio.sleep(0.02)
    raise AssertionError("the lost commit never settled")


async def test_a_connection_lost_after_commit_is_uncertain_and_find_sees_the_event(
    pg_store: PostgresStore, postgres_dsn: str
) -> None:
    await pg_store.create_session("s1", title="T", agent="echo", owner="alice")

    async def commit_then_lose(conn: asyncpg.Connection, transaction: Transaction) -> None:
        await transaction.commit()
        await _terminate(postgres_dsn, conn.get_server_pid())
        await conn.fetchval("SELECT 1")  # the reply that never comes

    pg_store.run_commit = commit_then_lose
    with pytest.raises(CommitUncertain) as uncertain:
        await pg_store.append("s1", message("in doubt", client_id="c1"))
    assert uncertain.value.resolvable
    pg_store.run_commit = _commit
    found = await _find_when_settled(pg_store, "s1", "c1")
    assert found is not None
    assert found.seq == 2
    retry = await pg_store.append("s1", message("in doubt", client_id="c1"))
    assert isinstance(retry, Appended)
    assert retry.duplicate


async def test_a_connection_lost_before_commit_is_uncertain_and_find_says_not_stored(
    pg_store: PostgresStore, postgres_dsn: str
) -> None:
    await pg_store.create_session("s1", title="T", agent="echo", owner="alice")

    async def lose_then_commit(conn: asyncpg.Connection, transaction: Transaction) -> None:
        await _terminate(postgres_dsn, conn.get_server_pid())
        await transaction.commit()

    pg_store.run_commit = lose_then_commit
    with pytest.raises(CommitUncertain):
        await pg_store.append("s1", message("lost", client_id="c1"))
    pg_store.run_commit = _commit
    assert await _find_when_settled(pg_store, "s1", "c1") is None
    assert [e.seq for e in await pg_store.read("s1", 0)] == [1]


async def test_a_commit_the_server_refuses_is_not_stored() -> None:
    refused = commit_failure(asyncpg.SerializationError("could not serialize access"))
    assert isinstance(refused, StoreUnavailable)
    for lost in (
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.InternalClientError("protocol state lost"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        ConnectionResetError("reset by peer"),
        TimeoutError(),
    ):
        assert isinstance(commit_failure(lost), CommitUncertain), lost


async def test_killed_backends_answer_unavailable_or_uncertain_never_another_error(
    pg_store: PostgresStore, postgres_dsn: str
) -> None:
    await pg_store.create_session("s1", title="T", agent="echo", owner="alice")
    appended(await pg_store.append("s1", message("warm", client_id="w")))
    allowed = (StoreUnavailable, CommitUncertain)
    for round_ in range(5):
        admin = await asyncpg.connect(postgres_dsn)
        try:
            # Every backend of this test's pool (its schema is its search_path).
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE pid <> pg_backend_pid() AND datname = current_database()"
                " AND application_name = $1",
                pg_store.application_name,
            )
        finally:
            await admin.close()
        results = await asyncio.gather(
            *(
                pg_store.append("s1", message(f"r{round_} {i}", client_id=f"r{round_}-{i}"))
                for i in range(10)
            ),
            pg_store.read("s1", 0),
            pg_store.head("s1"),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                assert isinstance(result, allowed), repr(result)
