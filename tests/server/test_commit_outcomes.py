"""One rule for uncertain outcomes (issue 10 point 1), over real sockets.

An `error` to a send means *not stored*. When the store cannot tell whether a commit
happened (`CommitUncertain`), the server looks the send up by (session, author,
client_id) and answers the truth; if it cannot find out in time it answers nothing and
closes the connection (1011), so that the client retries with the same client id.

`UncertainStore` is a real memory store whose commits can be made to end in doubt:
committed (or not) and then reported as `CommitUncertain`, like a PostgreSQL connection
lost while awaiting the reply to COMMIT; its lookups can be made to fail like a store
that does not answer yet.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from asyncpg.transaction import Transaction

from tests.backends.test_postgres import _terminate
from tests.server.harness import (
    Server,
    fetch_events,
    message,
    metric,
    running_server,
    server_config,
)
from tidings.agents.runner import end_client_id
from tidings.backends.base import CommitUncertain, StoreUnavailable
from tidings.backends.memory import MemoryStore
from tidings.backends.postgres import PostgresStore
from tidings.backends.postgres import _commit as _pg_commit
from tidings.backends.sqlite import SqliteStore
from tidings.core import rules
from tidings.core.model import Appended, Conflict, Draft, Event
from tidings.server.commits import orphaned_replies
from tidings.server.node import Node, wall_clock_ms
from tidings.testing.history import History


class UncertainStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__(wall_clock_ms)
        #: "committed": the next user message commits, then reports CommitUncertain;
        #: "lost": it reports CommitUncertain without committing; None: normal.
        self.doubt: str | None = None
        #: While True, `find` raises StoreUnavailable (the store does not answer yet).
        self.unreachable = False
        self.lookups = 0
        self.looked_up = asyncio.Event()

    async def append(self, session_id: str, draft: Draft) -> Appended | Conflict:
        return await self.submit(session_id, draft)

    def submit(self, session_id: str, draft: Draft) -> asyncio.Future[Appended | Conflict]:
        doubt = self.doubt if draft.author != "echo" and draft.kind == "message.created" else None
        if doubt is None:
            return super().submit(session_id, draft)
        self.doubt = None
        future: asyncio.Future[Appended | Conflict] = asyncio.get_running_loop().create_future()
        if doubt == "committed":
            self._append_now(session_id, draft)
        future.set_exception(CommitUncertain("connection lost awaiting COMMIT", cause="connection"))
        return future

    async def find(self, session_id: str, author: str, client_id: str) -> Event | None:
        self.lookups += 1
        self.looked_up.set()
        if self.unreachable:
            raise StoreUnavailable("still down", cause="connection")
        return await super().find(session_id, author, client_id)


@pytest.fixture
def store() -> UncertainStore:
    return UncertainStore()


@pytest.fixture
async def server(tmp_path: Path, store: UncertainStore) -> AsyncIterator[Server]:
    async with running_server(
        tmp_path, store=store, agent="echo", echo_delay_ms=1, uncertain_commit_ms=300
    ) as running:
        yield running


def _is_reply(frame: dict[str, Any]) -> bool:
    return frame.get("kind") == "message.completed" or (
        frame.get("kind") == "message.created" and frame["data"]["message"]["role"] == "assistant"
    )


async def test_a_commit_in_doubt_that_happened_is_acked_delivered_and_answered(
    server: Server, store: UncertainStore
) -> None:
    sid = await server.create_session("al", agent="echo")
    sender = await server.client("al")
    watcher = await server.client("al")
    await watcher.subscribe(sid)
    store.doubt = "committed"
    ack = await sender.request(message("hello", "m1", session=sid))
    assert (ack["type"], ack["duplicate"], ack["seq"]) == ("ack", False, 2)
    [event] = await watcher.events(sid, 1)
    assert (event["seq"], event["client_id"]) == (2, "m1")
    reply = await watcher.next(_is_reply)
    assert reply["kind"] == "message.created"
    assert store.lookups == 1
    assert await metric(server, 'tidings_store_write_failures_total{cause="connection"}') == 1
    await sender.close()
    await watcher.close()


async def test_a_commit_in_doubt_that_did_not_happen_answers_unavailable(
    server: Server, store: UncertainStore
) -> None:
    sid = await server.create_session("al", agent="echo")
    client = await server.client("al")
    store.doubt = "lost"
    reply = await client.request(message("hello", "m1", session=sid))
    assert (reply["type"], reply["code"]) == ("error", "unavailable")
    assert [e["seq"] for e in await fetch_events(server, "al", sid)] == [1]
    retry = await client.request(message("hello", "m1", session=sid))
    assert (retry["type"], retry["duplicate"]) == ("ack", False)
    await client.close()


async def test_an_outcome_still_unknown_after_the_bound_closes_without_an_answer(
    server: Server, store: UncertainStore
) -> None:
    sid = await server.create_session("al", agent="echo")
    client = await server.client("al")
    store.doubt = "committed"
    store.unreachable = True
    await client.send({**message("hello", "m1", session=sid), "id": 7})
    code, reason = await client.wait_closed()
    assert code == 1011
    assert "same client_id" in reason
    assert all(frame.get("re") != 7 for frame in _drain(client))
    assert store.lookups >= 2  # it kept asking until the bound
    # The client retries with the same client id once the store answers: the original
    # event, and the reply that never started starts now.
    store.unreachable = False
    again = await server.client("al")
    await again.subscribe(sid)
    retry = await again.request(message("hello", "m1", session=sid))
    assert (retry["type"], retry["duplicate"], retry["seq"]) == ("ack", True, 2)
    completed = await again.next(lambda f: f.get("kind") == "message.completed")
    assert completed["data"]["content"] == "echo: hello"
    # A second retry does not answer the message twice.
    assert (await again.request(message("hello", "m1", session=sid)))["duplicate"] is True
    await asyncio.sleep(0.2)
    kinds = [e["kind"] for e in await fetch_events(server, "al", sid)]
    assert kinds.count("message.completed") == 1
    await again.close()


async def test_http_answers_503_saying_the_outcome_is_unknown(
    server: Server, store: UncertainStore
) -> None:
    sid = await server.create_session("al", agent="none")
    store.doubt = "committed"
    store.unreachable = True
    body = {"client_id": "h1", "kind": "message", "data": {"content": "hi"}}
    async with server.http("al") as http:
        response = await http.post(f"/v1/sessions/{sid}/events", json=body)
        assert response.status_code == 503
        error = response.json()["error"]
        assert error["code"] == "unavailable"
        assert "outcome of this send is unknown" in error["message"]
        assert "same client_id" in error["message"]
        store.unreachable = False
        response = await http.post(f"/v1/sessions/{sid}/events", json=body)
        assert response.status_code == 200
        assert response.json()["duplicate"] is True


def _drain(client: Any) -> list[dict[str, Any]]:
    frames = []
    while not client.inbox.empty():
        frames.append(client.inbox.get_nowait())
    return frames


def _fsync_failure(conn: sqlite3.Connection) -> None:
    """COMMIT as a failed fsync leaves it: the frames may be on disk, SQLite says EIO."""
    conn.execute("COMMIT")
    exc = sqlite3.OperationalError("disk I/O error")
    exc.sqlite_errorcode = sqlite3.SQLITE_IOERR_FSYNC
    raise exc


def _read_only(conn: sqlite3.Connection) -> None:
    exc = sqlite3.OperationalError("attempt to write a readonly database")
    exc.sqlite_errorcode = sqlite3.SQLITE_READONLY
    raise exc


def _commit(conn: sqlite3.Connection) -> None:
    conn.execute("COMMIT")


async def test_sqlite_fails_stop_after_an_fsync_error_and_a_restart_tells_the_truth(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = str(tmp_path / "tidings.db")
    store = SqliteStore(path, wall_clock_ms)
    async with running_server(tmp_path, store=store, agent="echo", echo_delay_ms=1) as server:
        sid = await server.create_session("al", agent="echo")
        client = await server.client("al")
        store.run_commit = _fsync_failure
        await client.send({**message("hello", "m1", session=sid), "id": 7})
        code, _ = await client.wait_closed()
        assert code == 1011  # no answer: it may be stored
        assert all(frame.get("re") != 7 for frame in _drain(client))
        other = await server.client("al")
        refused = await other.request(message("later", "m2", session=sid))
        assert (refused["type"], refused["code"]) == ("error", "unavailable")
        async with server.http() as http:
            ready = await http.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["reason"] == "stopped"
        assert await metric(server, 'tidings_store_write_failures_total{cause="io_error"}') == 1
        assert await metric(server, 'tidings_store_write_failures_total{cause="stopped"}') == 1
        await other.close()
    assert "stopped writing after an I/O failure at commit" in caplog.text
    # Restarted on the same file: the send was on disk; its retry gets the original
    # event, and its reply (which never started) starts.
    async with running_server(tmp_path, agent="echo", echo_delay_ms=1) as server:
        client = await server.client("al")
        await client.subscribe(sid)
        retry = await client.request(message("hello", "m1", session=sid))
        assert (retry["type"], retry["duplicate"]) == ("ack", True)
        completed = await client.next(lambda f: f.get("kind") == "message.completed")
        assert completed["data"]["content"] == "echo: hello"
        await client.close()


async def test_readyz_reports_failing_writes_until_one_succeeds_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = SqliteStore(str(tmp_path / "tidings.db"), wall_clock_ms)
    async with running_server(tmp_path, store=store) as server:
        sid = await server.create_session("al")
        client = await server.client("al")
        store.run_commit = _read_only
        for i in range(3):
            reply = await client.request(message("x", f"r{i}", session=sid))
            assert (reply["type"], reply["code"]) == ("error", "unavailable")
        async with server.http() as http:
            ready = await http.get("/readyz")
            assert (ready.status_code, ready.json()["reason"]) == (503, "read_only")
            assert (
                await metric(server, 'tidings_store_write_failures_total{cause="read_only"}') == 3
            )
            assert caplog.text.count("store writes are failing (read_only)") == 1
            store.run_commit = _commit  # the disk is writable again
            assert (await http.get("/readyz")).status_code == 200
        reply = await client.request(message("x", "r0", session=sid))
        assert (reply["type"], reply["duplicate"]) == ("ack", False)
        await client.close()


async def test_a_shutdown_during_a_lookup_ends_it_without_a_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = UncertainStore()
    async with running_server(tmp_path, store=store, uncertain_commit_ms=60_000) as server:
        sid = await server.create_session("al")
        client = await server.client("al")
        store.doubt = "committed"
        store.unreachable = True
        await client.send({**message("hello", "m1", session=sid), "id": 1})
        await asyncio.wait_for(store.looked_up.wait(), 5)
    code, _ = await client.wait_closed()
    assert code == 1001
    assert "Exception in callback" not in caplog.text
    assert "Traceback" not in caplog.text


async def test_commits_in_doubt_keep_every_promise_the_history_checker_knows(
    tmp_path: Path,
) -> None:
    """A bounded run mixing plain commits, commits in doubt that happened, that did not,
    and whose outcome stayed unknown (then retried), checked by `tidings.testing.history`:
    no acked write lost, no refused write stored, no duplicate, gap or reorder."""
    store = UncertainStore()
    history = History()
    modes: list[tuple[str | None, bool]] = [
        (None, False),
        ("committed", False),
        ("lost", False),
        ("committed", True),
        ("lost", True),
    ]
    async with running_server(tmp_path, store=store, uncertain_commit_ms=150) as server:
        sid = await server.create_session("al")
        watcher = await server.client("al")
        history.start("watcher", sid, (await watcher.subscribe(sid))["seq"])
        sender = await server.client("al")
        for i in range(20):
            doubt, unreachable = modes[i % len(modes)]
            store.doubt, store.unreachable = doubt, unreachable
            client_id = f"op{i}"
            while True:
                key = history.invoke(sid, "al", client_id)
                reply = await _answer_or_close(sender, message(f"text {i}", client_id, session=sid))
                if reply is not None and reply["type"] == "ack":
                    history.ok(key, reply["seq"], duplicate=reply["duplicate"])
                    break
                if reply is not None:
                    history.fail(key, reply["code"])
                    break
                # No answer: the connection was closed. Retry once the store answers.
                history.unknown(key)
                assert (await sender.wait_closed())[0] == 1011
                store.unreachable = False
                sender = await server.client("al")
        log = await fetch_events(server, "al", sid)
        history.log(sid, log)
        for frame in await watcher.events(sid, len(log) - 1):
            history.deliver_frame("watcher", frame)
        await sender.close()
        await watcher.close()
    counts = history.assert_valid()
    assert (counts.sends, counts.acked, counts.failed, counts.unknown) == (20, 16, 4, 0)
    assert counts.retried == 8  # the outcomes that stayed unknown, retried with their id
    assert counts.duplicates == 4  # those whose first commit had happened
    assert counts.delivered == counts.stored - 1 == 16


async def _answer_or_close(client: Any, frame: dict[str, Any]) -> dict[str, Any] | None:
    """The reply to `frame`, or None when the connection closes first."""
    request = asyncio.ensure_future(client.request(frame))
    closed = asyncio.ensure_future(asyncio.shield(client.closed))
    await asyncio.wait({request, closed}, return_when=asyncio.FIRST_COMPLETED)
    closed.cancel()
    if request.done():
        reply: dict[str, Any] = request.result()
        return reply
    request.cancel()
    return None


async def test_a_recovering_node_does_not_end_a_reply_the_agent_ended_meanwhile(
    tmp_path: Path,
) -> None:
    """Dedupe is per author, so the "interrupted" end a recovering node appends carries
    the reply's author: it meets the end the agent appended on another node meanwhile."""
    store = MemoryStore(wall_clock_ms)
    await store.create_session("s1", title="T", agent="echo", owner="al")
    created = await store.append("s1", rules.draft_assistant_message(author="echo"))
    assert isinstance(created, Appended)
    message_id = created.event.data["message"]["id"]
    orphans = await orphaned_replies(store)  # listed while still streaming
    assert orphans == [("s1", message_id, "echo")]
    end = rules.draft_message_completed(
        message_id, "done", None, author="echo", client_id=end_client_id(message_id)
    )
    await store.append("s1", end)  # the agent finished on the other node
    node = Node(server_config(tmp_path), store=store)
    await node.start()
    try:
        await node.runner.recover(orphans)
    finally:
        await node.close()
    kinds = [e.kind for e in await store.read("s1", 0)]
    assert kinds.count("message.completed") == 1
    assert "message.failed" not in kinds


async def test_postgres_connections_lost_after_commit_keep_every_promise(
    tmp_path: Path,
    postgres_dsn: str,
) -> None:
    """Real asyncpg connection losses: every third append transaction commits, then its
    backend is terminated before the answer is read. Each such send is looked up and
    acked; the history checker finds nothing lost, doubled or reordered."""
    store = PostgresStore(postgres_dsn, wall_clock_ms, application_name="tidings-outcomes")
    commits = 0

    async def sometimes_lost(conn: asyncpg.Connection, transaction: Transaction) -> None:
        nonlocal commits
        commits += 1
        await transaction.commit()
        if commits % 3 == 0:
            await _terminate(postgres_dsn, conn.get_server_pid())
            await conn.fetchval("SELECT 1")  # the answer that never comes

    history = History()
    async with running_server(tmp_path, store=store) as server:
        sid = await server.create_session("al")
        watcher = await server.client("al")
        history.start("watcher", sid, (await watcher.subscribe(sid))["seq"])
        sender = await server.client("al")
        store.run_commit = sometimes_lost
        for i in range(12):
            key = history.invoke(sid, "al", f"pg{i}")
            reply = await _answer_or_close(sender, message(f"text {i}", f"pg{i}", session=sid))
            assert reply is not None
            if reply["type"] == "ack":
                history.ok(key, reply["seq"], duplicate=reply["duplicate"])
            else:
                history.fail(key, reply["code"])
        store.run_commit = _pg_commit
        log = await fetch_events(server, "al", sid)
        history.log(sid, log)
        for frame in await watcher.events(sid, len(log) - 1):
            history.deliver_frame("watcher", frame)
        await sender.close()
        await watcher.close()
    counts = history.assert_valid()
    assert counts.acked == counts.sends == 12
    assert commits >= 12
