"""The sans-I/O replica: ordering, duplicates, gaps, streams and optimistic sends."""

from __future__ import annotations

from typing import Any

from tidings.client.replica import Replica

SID = "s_1"


def created(
    seq: int, content: str, *, client_id: str | None = None, **extra: Any
) -> dict[str, Any]:
    message = {
        "id": f"m_{seq}",
        "role": "user",
        "author": "al",
        "content": content,
        "is_code": False,
        "status": "complete",
        "created_at": 1000 + seq,
        **extra,
    }
    event: dict[str, Any] = {
        "type": "event",
        "session": SID,
        "seq": seq,
        "kind": "message.created",
        "ts": 1000 + seq,
        "author": message["author"],
        "data": {"message": message},
    }
    if client_id is not None:
        event["client_id"] = client_id
    return event


def event(seq: int, kind: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "event",
        "session": SID,
        "seq": seq,
        "kind": kind,
        "ts": 1,
        "author": "al",
        "data": data,
    }


def snapshot(seq: int, messages: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "session": SID,
        "seq": seq,
        "title": "Plans",
        "status": "active",
        "metadata": {},
        "version": 0,
        "members": [{"user": "al", "role": "owner"}],
        "presence": ["al"],
        "agent": {"status": "idle"},
        "cards": [],
        "stats": {
            "messages": len(messages or []),
            "tokens": {"prompt": 0, "completion": 0},
            "cards": 0,
            "participants": 1 if messages else 0,
        },
        "messages": messages or [],
    }


def loaded(seq: int = 1) -> Replica:
    replica = Replica(SID, user="al")
    replica.load_snapshot(seq, snapshot(seq))
    replica.take_touched()
    return replica


def gap_of(replica: Replica) -> tuple[int, int] | None:
    return replica.gap


def contents(replica: Replica) -> list[str]:
    return [m.content for m in replica.state.messages]


def test_out_of_order_events_are_buffered_and_applied_in_order() -> None:
    replica = loaded()
    replica.receive_event(created(4, "c"))
    replica.receive_event(created(3, "b"))
    assert contents(replica) == []
    assert replica.seq == 1
    replica.receive_event(created(2, "a"))
    assert contents(replica) == ["a", "b", "c"]
    assert replica.seq == 4
    assert replica.gap is None


def test_duplicate_events_are_ignored() -> None:
    replica = loaded()
    for seq in (2, 2, 3, 2, 3):
        replica.receive_event(created(seq, f"x{seq}"))
    assert contents(replica) == ["x2", "x3"]
    assert replica.state.stats["messages"] == 2


def test_events_of_another_session_are_ignored() -> None:
    replica = loaded()
    replica.receive_event({**created(2, "elsewhere"), "session": "s_other"})
    assert contents(replica) == []


def test_a_gap_asks_for_the_missing_events_and_closes_when_they_come() -> None:
    replica = loaded()
    replica.receive_event(created(5, "e"))
    assert replica.gap == (2, 4)
    replica.receive_events([created(2, "b"), created(3, "c"), created(4, "d")])
    assert gap_of(replica) is None
    assert contents(replica) == ["b", "c", "d", "e"]


def test_an_optimistic_message_is_pending_at_once_and_reconciles_with_its_event() -> None:
    replica = loaded()
    message = replica.add_send("tmp_1", "message", {"content": "hi"})
    assert message is not None
    assert [(m.key, m.status, m.id) for m in replica.state.messages] == [("tmp_1", "pending", None)]
    replica.receive_event(created(2, "other"))
    # Still pending, after the confirmed messages.
    assert [m.key for m in replica.state.messages] == ["m_2", "tmp_1"]
    replica.receive_event(created(3, "hi", client_id="tmp_1"))
    [_other, mine] = replica.state.messages
    assert (mine.key, mine.id, mine.seq, mine.status) == ("tmp_1", "m_3", 3, "complete")
    assert len(replica.state.messages) == 2  # never twice
    [resolved] = replica.take_resolved()
    assert (resolved.client_id, resolved.ok, resolved.seq, resolved.event_id) == (
        "tmp_1",
        True,
        3,
        "m_3",
    )
    replica.receive_ack("tmp_1", 3, "m_3")  # the ack after the event changes nothing
    assert replica.take_resolved() == []
    assert len(replica.state.messages) == 2


def test_an_ack_before_the_event_confirms_only_when_the_event_is_applied() -> None:
    replica = loaded()
    replica.add_send("tmp_1", "message", {"content": "hi"})
    replica.receive_ack("tmp_1", 3, "m_3")
    assert replica.take_resolved() == []
    assert replica.state.messages[0].status == "pending"
    assert replica.unacked() == []
    replica.receive_event(created(3, "hi", client_id="tmp_1"))
    assert replica.gap == (2, 2)
    replica.receive_event(created(2, "before"))
    assert [m.content for m in replica.state.messages] == ["before", "hi"]
    assert [r.client_id for r in replica.take_resolved()] == ["tmp_1"]


def test_a_snapshot_covering_an_acked_send_confirms_it_with_its_key_kept() -> None:
    replica = loaded()
    replica.add_send("tmp_1", "message", {"content": "hi"})
    replica.receive_ack("tmp_1", 2, "m_2")
    raw = created(2, "hi")["data"]["message"]
    replica.load_snapshot(3, snapshot(3, [raw]))
    [message] = replica.state.messages
    assert (message.key, message.id, message.status) == ("tmp_1", "m_2", "complete")
    assert [r.ok for r in replica.take_resolved()] == [True]


def test_a_refused_send_stays_in_the_state_as_failed() -> None:
    replica = loaded()
    replica.add_send("tmp_1", "message", {"content": "hi"})
    replica.send_failed("tmp_1", "you may not", "forbidden")
    [message] = replica.state.messages
    assert (message.status, message.error) == ("failed", "you may not")
    [resolved] = replica.take_resolved()
    assert (resolved.ok, resolved.code) == (False, "forbidden")


def test_unacked_lists_sends_without_an_ack_in_order() -> None:
    replica = loaded()
    for n in range(3):
        replica.add_send(f"tmp_{n}", "message", {"content": str(n)})
    replica.receive_ack("tmp_1", 2, "m_2")
    assert replica.unacked() == ["tmp_0", "tmp_2"]


def streaming_reply(replica: Replica, seq: int = 2, content: str = "") -> None:
    replica.receive_event(created(seq, content, role="assistant", status="streaming"))


def test_stream_frames_grow_a_reply_and_frames_already_held_are_dropped() -> None:
    replica = loaded()
    streaming_reply(replica)
    replica.receive_stream("m_2", 0, "Hel")
    replica.receive_stream("m_2", 3, "lo")
    replica.receive_stream("m_2", 0, "Hel")  # a repeat
    replica.receive_stream("m_2", 3, "lo, w")  # overlaps: only the new part counts
    assert replica.state.message("m_2").content == "Hello, w"  # type: ignore[union-attr]
    assert replica.take_refetches() == set()


def test_a_gap_in_a_stream_asks_for_a_refetch_and_the_refetch_fills_it() -> None:
    replica = loaded()
    streaming_reply(replica)
    replica.receive_stream("m_2", 0, "Hel")
    replica.receive_stream("m_2", 8, "orld")  # "lo, w" lost
    assert replica.take_refetches() == {"m_2"}
    assert replica.state.message("m_2").content == "Hel"  # type: ignore[union-attr]
    replica.receive_message({"id": "m_2", "status": "streaming", "content": "Hello, w"})
    # The waiting chunk joins once the text before it is there.
    assert replica.state.message("m_2").content == "Hello, world"  # type: ignore[union-attr]


def test_a_snapshot_never_shrinks_a_reply_already_held() -> None:
    replica = loaded()
    streaming_reply(replica)
    replica.receive_stream("m_2", 0, "Hello there")
    raw = created(2, "Hello", role="assistant", status="streaming")["data"]["message"]
    replica.load_snapshot(2, snapshot(2, [{**raw, "offset": 5}]))
    assert replica.state.message("m_2").content == "Hello there"  # type: ignore[union-attr]


def test_stream_frames_before_the_created_event_are_kept_for_it() -> None:
    replica = loaded()
    replica.receive_stream("m_2", 0, "Hi")
    streaming_reply(replica)
    assert replica.state.message("m_2").content == "Hi"  # type: ignore[union-attr]


def test_completion_sets_the_full_content_and_late_frames_are_ignored() -> None:
    replica = loaded()
    streaming_reply(replica)
    replica.receive_stream("m_2", 0, "He")
    replica.receive_event(
        event(
            3,
            "message.completed",
            {"message_id": "m_2", "content": "Hello", "usage": {"completion_tokens": 2}},
        )
    )
    replica.receive_stream("m_2", 2, "llo")
    message = replica.state.message("m_2")
    assert message is not None
    assert (message.content, message.status) == ("Hello", "complete")
    assert replica.state.stats["tokens"]["completion"] == 2


def test_session_fields_cards_and_members_follow_their_events() -> None:
    replica = loaded()
    replica.receive_events(
        [
            event(2, "session.updated", {"changes": {"title": "New"}, "version": 1}),
            event(3, "card.added", {"card": {"id": "c_3", "title": "Spec", "content": "x"}}),
            event(4, "member.added", {"user": "bo", "role": "member"}),
            event(5, "card.removed", {"card_id": "c_3"}),
            event(6, "agent.status", {"status": "processing"}),
        ]
    )
    state = replica.state
    assert (state.title, state.version, state.cards, state.seq) == ("New", 1, {}, 6)
    assert state.members == {"al": "owner", "bo": "member"}
    assert state.agent == {"status": "processing"}
    touched = replica.take_touched()
    assert ("title", None) in touched
    assert ("card", "c_3") in touched
    assert touched.count(("card", "c_3")) == 1  # touched twice, reported once


def test_a_full_order_buffer_asks_for_a_new_snapshot() -> None:
    replica = loaded()
    replica._order.max_buffered = 2
    for seq in (5, 6, 7):
        replica.receive_event(created(seq, "x"))
    assert replica.needs_snapshot
