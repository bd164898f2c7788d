from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidings.core import rules
from tidings.core.fold import SessionState, checkpoint, fold, restore
from tidings.core.model import Draft, Event, Kind, finalize_data

SESSION = "s_1"
RELAXED = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class Log:
    """A tiny in-memory log: turns drafts into events the way a store does."""

    def __init__(self, owner: str = "alice") -> None:
        self.events: list[Event] = []
        self.version = 0
        self.append(rules.draft_member_added(owner, "owner", author=owner))

    def append(self, draft: Draft) -> Event:
        seq = len(self.events) + 1
        if draft.kind == Kind.SESSION_UPDATED:
            self.version += 1
        ts = 1_000 + seq
        event = Event(
            session=SESSION,
            seq=seq,
            kind=draft.kind,
            ts=ts,
            author=draft.author,
            data=finalize_data(draft.kind, draft.data, seq, ts, self.version),
            client_id=draft.client_id,
        )
        self.events.append(event)
        return event

    def say(self, author: str, content: str) -> Event:
        return self.append(
            rules.draft_for_send("message", {"content": content}, author=author, client_id=None)
        )


def snap(state: SessionState, partials: dict[str, str] | None = None) -> dict[str, Any]:
    return state.snapshot(presence=["alice"], partials=partials or {})


# ---------------------------------------------------------------- examples


def test_a_new_session_has_its_owner_and_defaults() -> None:
    state = fold(SESSION, Log().events)
    assert snap(state) == {
        "session": SESSION,
        "seq": 1,
        "title": "",
        "status": "active",
        "metadata": {},
        "version": 0,
        "members": [{"user": "alice", "role": "owner"}],
        "presence": ["alice"],
        "agent": {"status": "idle"},
        "cards": [],
        "stats": {
            "messages": 0,
            "tokens": {"prompt": 0, "completion": 0},
            "cards": 0,
            "participants": 0,
        },
        "messages": [],
    }


def test_events_out_of_order_are_refused() -> None:
    log = Log()
    log.say("alice", "one")
    log.say("alice", "two")
    state = SessionState(SESSION)
    state.apply(log.events[0])
    with pytest.raises(ValueError, match="expected seq 2, got 3"):
        state.apply(log.events[2])
    state.apply(log.events[1])
    with pytest.raises(ValueError, match="expected seq 3, got 2"):
        state.apply(log.events[1])
    assert state.seq == 2


def test_an_event_of_another_session_is_refused() -> None:
    event = msgspec.structs.replace(Log().events[0], session="s_other")
    with pytest.raises(ValueError, match="s_other"):
        SessionState(SESSION).apply(event)


def test_a_streaming_reply_shows_its_partial_content_and_offset_in_code_points() -> None:
    log = Log()
    log.say("alice", "hi")
    reply = log.append(rules.draft_assistant_message(author="echo"))
    state = fold(SESSION, log.events)
    message_id = reply.data["message"]["id"]
    assert state.streaming_message_ids() == [message_id]
    shown = snap(state, {message_id: "héllo 👋"})["messages"][-1]
    assert shown["content"] == "héllo 👋"
    assert shown["offset"] == 7
    assert shown["status"] == "streaming"
    # Without a partial, the stored content (empty) and offset 0.
    assert snap(state)["messages"][-1]["offset"] == 0
    # Complete messages carry no offset.
    assert "offset" not in snap(state)["messages"][0]


def test_a_completed_reply_takes_its_content_usage_and_counts_tokens() -> None:
    log = Log()
    reply = log.append(rules.draft_assistant_message())
    mid = reply.data["message"]["id"]
    log.append(
        rules.draft_message_completed(mid, "done", {"prompt_tokens": 7, "completion_tokens": 2})
    )
    state = fold(SESSION, log.events)
    message = state.message(mid)
    assert message is not None
    assert (message["content"], message["status"]) == ("done", "complete")
    assert message["usage"] == {"prompt_tokens": 7, "completion_tokens": 2}
    assert snap(state, {mid: "do"})["messages"][0]["content"] == "done"
    assert state.streaming_message_ids() == []
    assert state.stats()["tokens"] == {"prompt": 7, "completion": 2}


def test_usage_may_use_short_keys() -> None:
    log = Log()
    mid = log.append(rules.draft_assistant_message()).data["message"]["id"]
    log.append(rules.draft_message_completed(mid, "x", {"prompt": 4, "completion": 5}))
    assert fold(SESSION, log.events).stats()["tokens"] == {"prompt": 4, "completion": 5}


def test_a_failed_reply_carries_its_error() -> None:
    log = Log()
    mid = log.append(rules.draft_assistant_message()).data["message"]["id"]
    log.append(rules.draft_message_failed(mid, "cancelled"))
    message = fold(SESSION, log.events).message(mid)
    assert message is not None
    assert (message["status"], message["error"]) == ("failed", "cancelled")


def test_only_the_latest_messages_are_kept_but_every_one_is_counted() -> None:
    log = Log()
    for i in range(5):
        log.say(f"u{i % 2}", f"m{i}")
    state = fold(SESSION, log.events, max_messages=3)
    assert [m["content"] for m in snap(state)["messages"]] == ["m2", "m3", "m4"]
    assert state.stats()["messages"] == 5
    assert state.stats()["participants"] == 2


def test_completing_a_message_out_of_the_window_still_counts_its_tokens() -> None:
    log = Log()
    mid = log.append(rules.draft_assistant_message()).data["message"]["id"]
    log.say("alice", "newer")
    log.append(rules.draft_message_completed(mid, "old", {"completion_tokens": 3}))
    state = fold(SESSION, log.events, max_messages=1)
    assert state.message(mid) is None
    assert state.stats()["tokens"] == {"prompt": 0, "completion": 3}


def test_participants_count_distinct_authors_of_user_messages_only() -> None:
    log = Log()
    log.say("alice", "a")
    log.say("alice", "b")
    log.say("bob", "c")
    log.append(rules.draft_assistant_message(author="echo"))
    assert fold(SESSION, log.events).stats()["participants"] == 2


def test_cards_keep_insertion_order_and_removal_forgets_them() -> None:
    log = Log()
    ids = [
        log.append(
            rules.draft_for_send(
                "card.add", {"title": t, "content": "c"}, author="a", client_id=None
            )
        ).data["card"]["id"]
        for t in ("one", "two", "three")
    ]
    log.append(rules.draft_for_send("card.remove", {"card_id": ids[1]}, author="a", client_id=None))
    log.append(
        rules.draft_for_send("card.remove", {"card_id": "c_999"}, author="a", client_id=None)
    )
    state = fold(SESSION, log.events)
    assert [c["title"] for c in snap(state)["cards"]] == ["one", "three"]
    assert state.stats()["cards"] == 2


def test_session_updates_apply_field_by_field_and_move_the_version() -> None:
    log = Log()

    def update(changes: dict[str, Any]) -> None:
        log.append(
            rules.draft_for_send("session.update", {"changes": changes}, author="a", client_id=None)
        )

    update({"title": "First", "metadata": {"a": 1, "b": 2}})
    update({"status": "archived"})
    update({"metadata": {"c": 3}})
    state = fold(SESSION, log.events)
    assert (state.title, state.status, state.metadata, state.version) == (
        "First",
        "archived",
        {"c": 3},
        3,
    )


def test_members_join_change_role_and_leave() -> None:
    log = Log()
    log.append(rules.draft_member_added("bob", "viewer", author="alice"))
    log.append(rules.draft_member_added("carol", "member", author="alice"))
    log.append(rules.draft_member_added("bob", "member", author="alice"))
    log.append(rules.draft_member_removed("carol", "member", author="alice"))
    assert snap(fold(SESSION, log.events))["members"] == [
        {"user": "alice", "role": "owner"},
        {"user": "bob", "role": "member"},
    ]


def test_the_agent_status_is_the_latest_one() -> None:
    log = Log()
    log.append(rules.draft_agent_status("processing", task="reply"))
    assert snap(fold(SESSION, log.events))["agent"] == {"status": "processing", "task": "reply"}
    log.append(rules.draft_agent_status("idle"))
    assert snap(fold(SESSION, log.events))["agent"] == {"status": "idle"}


def test_an_unknown_event_kind_still_advances_the_seq() -> None:
    log = Log()
    log.append(Draft(kind="poll.created", author="a", data={"q": "?"}))
    log.say("alice", "after")
    state = fold(SESSION, log.events)
    assert state.seq == 3
    assert state.stats()["messages"] == 1


def test_mutating_a_snapshot_does_not_touch_the_state() -> None:
    log = Log()
    log.say("alice", "hi")
    log.append(
        rules.draft_for_send(
            "session.update", {"changes": {"metadata": {"k": 1}}}, author="a", client_id=None
        )
    )
    state = fold(SESSION, log.events)
    before = snap(state)
    changed = snap(state)
    changed["messages"][0]["content"] = "tampered"
    changed["metadata"]["k"] = 2
    changed["members"].clear()
    assert snap(state) == before


# ---------------------------------------------------------------- properties

USERS = ["alice", "bob", "carol"]


@st.composite
def logs(draw: st.DrawFn) -> Log:
    """A valid log: every step is something a real session could record."""
    log = Log()
    streaming: list[str] = []
    cards: list[str] = []
    for _ in range(draw(st.integers(0, 40))):
        step = draw(
            st.sampled_from(
                ["say", "reply", "complete", "fail", "card", "uncard", "update", "member", "agent"]
            )
        )
        if step == "say":
            content = draw(st.text(min_size=1, max_size=5).filter(str.strip))
            log.say(draw(st.sampled_from(USERS)), content)
        elif step == "reply":
            event = log.append(rules.draft_assistant_message())
            streaming.append(event.data["message"]["id"])
        elif step in ("complete", "fail") and streaming:
            mid = streaming.pop(draw(st.integers(0, len(streaming) - 1)))
            if step == "complete":
                usage = draw(
                    st.none()
                    | st.fixed_dictionaries(
                        {
                            "prompt_tokens": st.integers(0, 99),
                            "completion_tokens": st.integers(0, 99),
                        }
                    )
                )
                log.append(rules.draft_message_completed(mid, draw(st.text(max_size=5)), usage))
            else:
                log.append(rules.draft_message_failed(mid, "interrupted"))
        elif step == "card":
            draft = rules.draft_for_send(
                "card.add",
                {"title": draw(st.sampled_from(["a", "b"])), "content": draw(st.text(max_size=9))},
                author="a",
                client_id=None,
            )
            cards.append(log.append(draft).data["card"]["id"])
        elif step == "uncard" and cards:
            card_id = cards.pop(draw(st.integers(0, len(cards) - 1)))
            log.append(
                rules.draft_for_send(
                    "card.remove", {"card_id": card_id}, author="a", client_id=None
                )
            )
        elif step == "update":
            changes = draw(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "title": st.sampled_from(["T1", "T2", "T3"]),
                        "status": st.sampled_from(["active", "archived"]),
                        "metadata": st.dictionaries(
                            st.sampled_from("xyz"), st.integers(), max_size=2
                        ),
                    },
                ).filter(bool)
            )
            log.append(
                rules.draft_for_send(
                    "session.update", {"changes": changes}, author="a", client_id=None
                )
            )
        elif step == "member":
            user = draw(st.sampled_from(USERS[1:]))
            if draw(st.booleans()):
                log.append(rules.draft_member_added(user, "member", author="alice"))
            else:
                log.append(rules.draft_member_removed(user, "member", author="alice"))
        elif step == "agent":
            log.append(rules.draft_agent_status(draw(st.sampled_from(["idle", "processing"]))))
    return log


@RELAXED
@given(log=logs(), data=st.data())
def test_folding_a_prefix_then_the_rest_equals_folding_the_whole(
    log: Log, data: st.DataObject
) -> None:
    split = data.draw(st.integers(0, len(log.events)))
    whole = fold(SESSION, log.events, max_messages=5)
    partial = fold(SESSION, log.events[:split], max_messages=5)
    at_split = snap(partial)
    for event in log.events[split:]:
        partial.apply(event)
    assert snap(partial) == snap(whole)
    # A snapshot taken earlier is not changed by what came after it.
    assert at_split == snap(fold(SESSION, log.events[:split], max_messages=5))


@RELAXED
@given(log=logs())
def test_stats_count_the_whole_log(log: Log) -> None:
    state = fold(SESSION, log.events, max_messages=5)
    created = [e for e in log.events if e.kind == Kind.MESSAGE_CREATED]
    stats = state.stats()
    assert stats["messages"] == len(created)
    assert stats["participants"] == len(
        {e.data["message"]["author"] for e in created if e.data["message"]["role"] == "user"}
    )
    completed = [e.data.get("usage") or {} for e in log.events if e.kind == Kind.MESSAGE_COMPLETED]
    assert stats["tokens"] == {
        "prompt": sum(u.get("prompt_tokens", 0) for u in completed),
        "completion": sum(u.get("completion_tokens", 0) for u in completed),
    }
    assert [m["id"] for m in state.messages] == [e.data["message"]["id"] for e in created][-5:]
    assert stats["cards"] == len(state.cards)


@RELAXED
@given(log=logs())
def test_each_session_field_holds_its_last_written_value(log: Log) -> None:
    state = fold(SESSION, log.events)
    updates = [e.data["changes"] for e in log.events if e.kind == Kind.SESSION_UPDATED]
    expected: dict[str, Any] = {"title": "", "status": "active", "metadata": {}}
    for changes in updates:
        expected.update(changes)
    assert {"title": state.title, "status": state.status, "metadata": state.metadata} == expected
    assert state.version == len(updates)


@RELAXED
@given(log=logs())
def test_a_snapshot_is_json(log: Log) -> None:
    state = fold(SESSION, log.events)
    partials = {mid: "so far" for mid in state.streaming_message_ids()}
    snapshot = snap(state, partials)
    assert msgspec.json.decode(msgspec.json.encode(snapshot)) == snapshot
    for message in snapshot["messages"]:
        assert ("offset" in message) == (message["status"] == "streaming")


@RELAXED
@given(log=logs(), data=st.data())
def test_folding_resumed_from_a_checkpoint_equals_folding_the_whole(
    log: Log, data: st.DataObject
) -> None:
    split = data.draw(st.integers(0, len(log.events)))
    saved = checkpoint(fold(SESSION, log.events[:split], max_messages=5))
    resumed = restore(saved)
    for event in log.events[split:]:
        resumed.apply(event)
    whole = fold(SESSION, log.events, max_messages=5)
    assert snap(resumed) == snap(whole)
    assert resumed.streaming_message_ids() == whole.streaming_message_ids()
    assert checkpoint(resumed) == checkpoint(whole)
