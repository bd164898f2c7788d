"""The one contract suite every `EventStore` passes (see `tidings.backends.base`).

A backend's test module subclasses `EventStoreContract` and provides the `make_store`
fixture: an async factory that returns a *new, opened* store on that backend's data
(the same file or database each time), built with the `clock` fixture. The suite
closes what it opens.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from tidings.backends.base import EventStore, NotFound
from tidings.core.model import Appended, Conflict, Draft, Event, Kind, Role

StoreFactory = Callable[[], Awaitable[EventStore]]

START_MS = 1_764_000_000_000


class FakeClock:
    """A clock that moves on by one millisecond at every reading (so times differ)."""

    def __init__(self, now: int = START_MS) -> None:
        self.now = now

    def __call__(self) -> int:
        self.now += 1
        return self.now


def message(
    content: str,
    *,
    client_id: str | None = None,
    author: str = "alice",
    role: str = "user",
    status: str = "complete",
) -> Draft:
    body = {"role": role, "author": author, "content": content, "is_code": False}
    return Draft(
        kind=Kind.MESSAGE_CREATED,
        author=author,
        data={"message": {**body, "status": status}},
        client_id=client_id,
    )


def update(
    changes: dict[str, Any], *, client_id: str | None = None, base_version: int | None = None
) -> Draft:
    return Draft(
        kind=Kind.SESSION_UPDATED,
        author="alice",
        data={"changes": changes},
        client_id=client_id,
        base_version=base_version,
    )


def appended(result: Appended | Conflict) -> Event:
    assert isinstance(result, Appended), result
    return result.event


class EventStoreContract:
    @pytest.fixture
    def clock(self) -> FakeClock:
        return FakeClock()

    @pytest.fixture
    def make_store(self) -> StoreFactory:
        raise NotImplementedError("a backend's test module provides `make_store`")

    @pytest.fixture
    async def store(self, make_store: StoreFactory) -> AsyncIterator[EventStore]:
        store = await make_store()
        yield store
        await store.close()

    @pytest.fixture
    async def sid(self, store: EventStore) -> str:
        await store.create_session("s1", title="Plans", agent="echo", owner="alice")
        return "s1"

    # -- sessions and members --------------------------------------------------------

    async def test_a_new_session_starts_with_its_owner_added_at_seq_1(
        self, store: EventStore, clock: FakeClock
    ) -> None:
        info = await store.create_session("s1", title="Plans", agent="echo", owner="alice")
        assert (info.id, info.title, info.agent, info.owner) == ("s1", "Plans", "echo", "alice")
        assert (info.seq, info.version, info.status) == (1, 0, "active")
        assert info.created_at == clock.now
        assert await store.get_session("s1") == info
        [first] = await store.read("s1", 0)
        assert first.seq == 1
        assert first.kind == Kind.MEMBER_ADDED
        assert first.author == "alice"
        assert first.ts == info.created_at
        assert first.data == {"user": "alice", "role": "owner"}
        assert await store.members("s1") == {"alice": Role.OWNER}
        assert await store.head("s1") == 1

    async def test_creating_a_session_twice_is_refused(self, store: EventStore, sid: str) -> None:
        with pytest.raises(ValueError, match="exists"):
            await store.create_session(sid, title="Again", agent="echo", owner="bob")
        assert (await store.get_session(sid)).owner == "alice"

    async def test_member_rows_follow_member_events(self, store: EventStore, sid: str) -> None:
        for user, role in (("bob", "member"), ("carol", "viewer"), ("bob", "viewer")):
            draft = Draft(kind=Kind.MEMBER_ADDED, author="alice", data={"user": user, "role": role})
            appended(await store.append(sid, draft))
        assert await store.members(sid) == {
            "alice": Role.OWNER,
            "bob": Role.VIEWER,
            "carol": Role.VIEWER,
        }
        removal = Draft(kind=Kind.MEMBER_REMOVED, author="alice", data={"user": "carol"})
        appended(await store.append(sid, removal))
        assert await store.members(sid) == {"alice": Role.OWNER, "bob": Role.VIEWER}
        assert await store.role(sid, "bob") == Role.VIEWER
        assert await store.role(sid, "carol") is None

    async def test_list_sessions_shows_a_users_sessions_newest_first(
        self, store: EventStore
    ) -> None:
        await store.create_session("a", title="A", agent="echo", owner="alice")
        await store.create_session("b", title="B", agent="echo", owner="bob")
        await store.create_session("c", title="C", agent="none", owner="alice")
        invite = Draft(
            kind=Kind.MEMBER_ADDED, author="bob", data={"user": "alice", "role": "member"}
        )
        appended(await store.append("b", invite))
        assert [s.id for s in await store.list_sessions("alice")] == ["c", "b", "a"]
        assert [s.id for s in await store.list_sessions("bob")] == ["b"]
        assert await store.list_sessions("nobody") == []
        [b] = await store.list_sessions("bob")
        assert b.seq == 2

    async def test_title_and_status_follow_session_updates(
        self, store: EventStore, sid: str
    ) -> None:
        first = appended(await store.append(sid, update({"title": "New plans"})))
        assert first.data == {"changes": {"title": "New plans"}, "version": 1}
        second = appended(await store.append(sid, update({"status": "archived", "metadata": {}})))
        assert second.data["version"] == 2
        info = await store.get_session(sid)
        assert (info.title, info.status, info.version, info.seq) == ("New plans", "archived", 2, 3)

    # -- checkpoints ---------------------------------------------------------------

    async def test_a_checkpoint_is_kept_and_only_a_later_one_replaces_it(
        self, store: EventStore, sid: str
    ) -> None:
        assert await store.load_checkpoint(sid) is None
        await store.save_checkpoint(sid, 5, b'{"at":5}')
        assert await store.load_checkpoint(sid) == (5, b'{"at":5}')
        await store.save_checkpoint(sid, 3, b'{"at":3}')  # late and older: ignored
        assert await store.load_checkpoint(sid) == (5, b'{"at":5}')
        await store.save_checkpoint(sid, 9, b'{"at":9}')
        assert await store.load_checkpoint(sid) == (9, b'{"at":9}')

    async def test_checkpoints_of_an_unknown_session_are_not_found(self, store: EventStore) -> None:
        with pytest.raises(NotFound):
            await store.save_checkpoint("nope", 1, b"{}")
        with pytest.raises(NotFound):
            await store.load_checkpoint("nope")

    # -- append: order, idempotency, compare-and-set ---------------------------------

    async def test_concurrent_appends_get_gap_free_ordered_seqs(
        self, store: EventStore, sid: str
    ) -> None:
        results = await asyncio.gather(*(store.append(sid, message(f"m{i}")) for i in range(50)))
        seqs = sorted(appended(r).seq for r in results)
        assert seqs == list(range(2, 52))
        events = await store.read(sid, 0)
        assert [e.seq for e in events] == list(range(1, 52))
        assert await store.head(sid) == 51
        assert (await store.get_session(sid)).seq == 51

    async def test_submitted_appends_get_seqs_in_submission_order(
        self, store: EventStore, sid: str
    ) -> None:
        futures = [store.submit(sid, message(f"m{i}", client_id=f"c{i}")) for i in range(30)]
        results = [appended(await future) for future in futures]
        assert [r.seq for r in results] == list(range(2, 32))
        assert [r.client_id for r in results] == [f"c{i}" for i in range(30)]

    async def test_seqs_are_counted_per_session(self, store: EventStore, sid: str) -> None:
        await store.create_session("s2", title="Other", agent="echo", owner="bob")
        await asyncio.gather(*(store.append(s, message("hi")) for s in (sid, "s2", sid, "s2", sid)))
        assert await store.head(sid) == 4
        assert await store.head("s2") == 3

    async def test_the_appended_event_is_the_one_read_back(
        self, store: EventStore, sid: str, clock: FakeClock
    ) -> None:
        event = appended(await store.append(sid, message("Hello!", client_id="tmp_1")))
        assert event.session == sid
        assert event.seq == 2
        assert event.ts == clock.now
        assert event.client_id == "tmp_1"
        assert event.event_id == "m_2"
        assert event.data["message"]["id"] == "m_2"
        assert event.data["message"]["created_at"] == event.ts
        assert await store.read(sid, 1) == [event]

    async def test_a_duplicate_client_id_returns_the_original_event(
        self, store: EventStore, sid: str
    ) -> None:
        first = await store.append(sid, message("Hello!", client_id="tmp_9"))
        again = await store.append(sid, message("Different text", client_id="tmp_9"))
        assert isinstance(first, Appended)
        assert isinstance(again, Appended)
        assert not first.duplicate
        assert again.duplicate
        assert again.event == first.event
        assert await store.head(sid) == 2

    async def test_concurrent_appends_with_one_client_id_store_one_event(
        self, store: EventStore, sid: str
    ) -> None:
        results = await asyncio.gather(
            *(store.append(sid, message(f"try {i}", client_id="same")) for i in range(20))
        )
        events = [appended(r) for r in results]
        assert sum(1 for r in results if isinstance(r, Appended) and not r.duplicate) == 1
        assert {e.seq for e in events} == {2}
        assert len({e.data["message"]["content"] for e in events}) == 1
        assert await store.head(sid) == 2

    async def test_another_authors_send_with_the_same_client_id_is_a_new_event(
        self, store: EventStore, sid: str
    ) -> None:
        mine = appended(await store.append(sid, message("from alice", client_id="c1")))
        result = await store.append(sid, message("from bob", client_id="c1", author="bob"))
        assert isinstance(result, Appended)
        assert not result.duplicate
        assert result.event.seq == mine.seq + 1
        assert result.event.author == "bob"
        assert result.event.data["message"]["content"] == "from bob"
        assert [e.author for e in await store.read(sid, 1)] == ["alice", "bob"]

    async def test_claiming_the_client_id_another_will_use_next_swallows_nothing(
        self, store: EventStore, sid: str
    ) -> None:
        appended(await store.append(sid, message("bob first", client_id="next", author="bob")))
        result = await store.append(sid, message("alice's message", client_id="next"))
        assert isinstance(result, Appended)
        assert not result.duplicate
        assert result.event.author == "alice"
        retry = await store.append(sid, message("alice again", client_id="next"))
        assert isinstance(retry, Appended)
        assert retry.duplicate
        assert retry.event == result.event
        assert await store.head(sid) == 3

    async def test_concurrent_sends_of_two_authors_with_one_client_id_store_one_each(
        self, store: EventStore, sid: str
    ) -> None:
        drafts = [message(f"{a} {i}", client_id="same", author=a) for i in range(5) for a in "ab"]
        results = await asyncio.gather(*(store.append(sid, d) for d in drafts))
        fresh = [r.event for r in results if isinstance(r, Appended) and not r.duplicate]
        assert sorted(e.author for e in fresh) == ["a", "b"]
        assert await store.head(sid) == 3

    async def test_find_looks_an_event_up_by_session_author_and_client_id(
        self, store: EventStore, sid: str
    ) -> None:
        event = appended(await store.append(sid, message("hi", client_id="k")))
        assert await store.find(sid, "alice", "k") == event
        assert await store.find(sid, "bob", "k") is None
        assert await store.find(sid, "alice", "other") is None
        with pytest.raises(NotFound):
            await store.find("nope", "alice", "k")

    async def test_client_ids_are_scoped_to_their_session(
        self, store: EventStore, sid: str
    ) -> None:
        await store.create_session("s2", title="Other", agent="echo", owner="alice")
        one = await store.append(sid, message("a", client_id="x"))
        two = await store.append("s2", message("b", client_id="x"))
        assert isinstance(one, Appended)
        assert isinstance(two, Appended)
        assert not one.duplicate
        assert not two.duplicate

    async def test_a_matching_compare_and_set_bumps_the_version(
        self, store: EventStore, sid: str
    ) -> None:
        event = appended(await store.append(sid, update({"title": "T"}, base_version=0)))
        assert event.data["version"] == 1
        event = appended(await store.append(sid, update({"title": "U"}, base_version=1)))
        assert event.data["version"] == 2
        assert (await store.get_session(sid)).version == 2

    async def test_a_compare_and_set_conflict_returns_the_version_and_appends_nothing(
        self, store: EventStore, sid: str
    ) -> None:
        appended(await store.append(sid, update({"title": "T"})))
        result = await store.append(sid, update({"title": "Stale"}, base_version=0))
        assert result == Conflict(version=1)
        assert await store.head(sid) == 2
        assert (await store.get_session(sid)).title == "T"

    async def test_a_retried_compare_and_set_returns_its_original_event_not_a_conflict(
        self, store: EventStore, sid: str
    ) -> None:
        first = appended(
            await store.append(sid, update({"title": "T"}, client_id="u1", base_version=0))
        )
        retry = await store.append(sid, update({"title": "T"}, client_id="u1", base_version=0))
        assert isinstance(retry, Appended)
        assert retry.duplicate
        assert retry.event == first

    async def test_only_one_of_concurrent_compare_and_sets_on_one_version_wins(
        self, store: EventStore, sid: str
    ) -> None:
        results = await asyncio.gather(
            *(store.append(sid, update({"title": f"T{i}"}, base_version=0)) for i in range(10))
        )
        assert sum(1 for r in results if isinstance(r, Appended)) == 1
        assert [r for r in results if isinstance(r, Conflict)] == [Conflict(version=1)] * 9
        assert (await store.get_session(sid)).version == 1

    async def test_a_failing_append_spoils_no_concurrent_append(
        self, store: EventStore, sid: str
    ) -> None:
        bad = Draft(kind=Kind.MEMBER_ADDED, author="alice", data={"user": "x", "role": "admin"})
        drafts = [message("a"), bad, message("b"), message("c")]
        results = await asyncio.gather(
            *(store.append(sid, d) for d in drafts), return_exceptions=True
        )
        assert isinstance(results[1], ValueError)
        good = [r for r in results if isinstance(r, Appended)]
        assert sorted(r.event.seq for r in good) == [2, 3, 4]
        assert [e.seq for e in await store.read(sid, 0)] == [1, 2, 3, 4]
        assert "x" not in await store.members(sid)

    # -- reads -----------------------------------------------------------------------

    async def test_read_returns_exactly_the_events_after_a_seq_up_to_the_limit(
        self, store: EventStore, sid: str
    ) -> None:
        for i in range(9):
            appended(await store.append(sid, message(f"m{i}")))
        assert [e.seq for e in await store.read(sid, 0)] == list(range(1, 11))
        assert [e.seq for e in await store.read(sid, 4)] == [5, 6, 7, 8, 9, 10]
        assert [e.seq for e in await store.read(sid, 4, limit=3)] == [5, 6, 7]
        assert [e.seq for e in await store.read(sid, 8, limit=5)] == [9, 10]
        assert await store.read(sid, 10) == []
        assert await store.read(sid, 3, limit=0) == []

    async def test_messages_are_listed_newest_first_with_before_and_limit(
        self, store: EventStore, sid: str
    ) -> None:
        appended(await store.append(sid, update({"title": "not a message"})))  # seq 2
        for i in range(5):  # seqs 3..7
            appended(await store.append(sid, message(f"m{i}")))
        everything = await store.messages(sid)
        assert [m.seq for m in everything] == [7, 6, 5, 4, 3]
        assert [m.content for m in everything] == ["m4", "m3", "m2", "m1", "m0"]
        assert [m.seq for m in await store.messages(sid, limit=2)] == [7, 6]
        assert [m.seq for m in await store.messages(sid, before=6, limit=2)] == [5, 4]
        assert [m.seq for m in await store.messages(sid, before=4)] == [3]
        assert await store.messages(sid, before=3) == []
        first = everything[-1]
        assert (first.id, first.role, first.author, first.is_code) == (
            "m_3",
            "user",
            "alice",
            False,
        )
        assert (first.status, first.offset, first.error, first.usage) == (
            "complete",
            None,
            None,
            None,
        )

    async def test_a_streaming_message_carries_its_partial_content_and_offset(
        self, store: EventStore, sid: str, clock: FakeClock
    ) -> None:
        event = appended(
            await store.append(
                sid, message("", author="echo", role="assistant", status="streaming")
            )
        )
        message_id = event.data["message"]["id"]
        streaming = await store.message(sid, message_id)
        assert (streaming.content, streaming.offset, streaming.status) == ("", 0, "streaming")
        assert streaming.created_at == event.ts
        await store.save_partial(sid, message_id, "Héllo")
        streaming = await store.message(sid, message_id)
        assert (streaming.content, streaming.offset) == ("Héllo", 5)
        [listed] = await store.messages(sid)
        assert (listed.content, listed.offset) == ("Héllo", 5)
        assert await store.head(sid) == 2  # a partial is not an event

    async def test_completion_updates_the_message_row(self, store: EventStore, sid: str) -> None:
        event = appended(await store.append(sid, message("", role="assistant", status="streaming")))
        message_id = event.data["message"]["id"]
        await store.save_partial(sid, message_id, "Hel")
        done = Draft(
            kind=Kind.MESSAGE_COMPLETED,
            author="echo",
            data={"message_id": message_id, "content": "Hello", "usage": {"prompt_tokens": 3}},
        )
        appended(await store.append(sid, done))
        completed = await store.message(sid, message_id)
        assert (completed.status, completed.content, completed.offset) == (
            "complete",
            "Hello",
            None,
        )
        assert completed.usage == {"prompt_tokens": 3}
        await store.save_partial(sid, message_id, "Hel")  # late: must not overwrite
        assert (await store.message(sid, message_id)).content == "Hello"

    async def test_failure_updates_the_message_row(self, store: EventStore, sid: str) -> None:
        event = appended(await store.append(sid, message("", role="assistant", status="streaming")))
        message_id = event.data["message"]["id"]
        await store.save_partial(sid, message_id, "partial")
        failed = Draft(
            kind=Kind.MESSAGE_FAILED,
            author="echo",
            data={"message_id": message_id, "error": "The reply was interrupted."},
        )
        appended(await store.append(sid, failed))
        row = await store.message(sid, message_id)
        assert (row.status, row.error, row.content) == (
            "failed",
            "The reply was interrupted.",
            "partial",
        )
        assert await store.streaming_messages() == []

    async def test_streaming_messages_lists_every_message_still_streaming(
        self, store: EventStore, sid: str
    ) -> None:
        await store.create_session("s2", title="Other", agent="echo", owner="bob")
        assert await store.streaming_messages() == []
        a = appended(await store.append(sid, message("", role="assistant", status="streaming")))
        appended(await store.append(sid, message("done")))
        b = appended(await store.append("s2", message("", role="assistant", status="streaming")))
        expected = {(sid, a.data["message"]["id"]), ("s2", b.data["message"]["id"])}
        assert set(await store.streaming_messages()) == expected

    async def test_an_unknown_session_raises_not_found(self, store: EventStore, sid: str) -> None:
        calls: list[Callable[[], Awaitable[object]]] = [
            lambda: store.get_session("nope"),
            lambda: store.members("nope"),
            lambda: store.role("nope", "alice"),
            lambda: store.append("nope", message("hi")),
            lambda: store.read("nope", 0),
            lambda: store.head("nope"),
            lambda: store.messages("nope"),
            lambda: store.message("nope", "m_2"),
            lambda: store.save_partial("nope", "m_2", "x"),
        ]
        for call in calls:
            with pytest.raises(NotFound):
                await call()

    async def test_an_unknown_message_raises_not_found(self, store: EventStore, sid: str) -> None:
        with pytest.raises(NotFound):
            await store.message(sid, "m_99")
        with pytest.raises(NotFound):
            await store.save_partial(sid, "m_99", "x")

    async def test_the_store_answers_ping(self, store: EventStore) -> None:
        await store.ping()

    # -- durability ------------------------------------------------------------------

    async def test_data_survives_close_and_reopen(
        self, store: EventStore, sid: str, make_store: StoreFactory
    ) -> None:
        appended(await store.append(sid, update({"title": "Kept"}, client_id="u1")))
        streaming = appended(
            await store.append(sid, message("", role="assistant", status="streaming"))
        )
        message_id = streaming.data["message"]["id"]
        await store.save_partial(sid, message_id, "so far")
        before = await store.read(sid, 0)
        await store.close()

        reopened = await make_store()
        try:
            assert await reopened.read(sid, 0) == before
            info = await reopened.get_session(sid)
            assert (info.title, info.seq, info.version) == ("Kept", 3, 1)
            assert (await reopened.message(sid, message_id)).content == "so far"
            assert await reopened.streaming_messages() == [(sid, message_id)]
            again = await reopened.append(sid, update({"title": "Other"}, client_id="u1"))
            assert isinstance(again, Appended)
            assert again.duplicate
            assert appended(await reopened.append(sid, message("next"))).seq == 4
        finally:
            await reopened.close()
