"""The history checker catches each kind of anomaly, and passes a correct history."""

from __future__ import annotations

from typing import Any

import pytest

from tidings.testing.history import LOG, Counts, History, Identity, Kind, fingerprint

S = "s_1"


def event(seq: int, author: str = "al", client_id: str | None = None, content: str = "") -> Any:
    return {
        "type": "event",
        "session": S,
        "seq": seq,
        "kind": "message.created",
        "author": author,
        "client_id": client_id if client_id is not None else f"c{seq}",
        "data": {"content": content or f"m{seq}"},
    }


def acked(history: History, seq: int, author: str = "al", *, duplicate: bool = False) -> None:
    key = history.invoke(S, author, f"c{seq}")
    history.ok(key, seq, duplicate=duplicate)


def kinds(history: History) -> list[Kind]:
    return [a.kind for a in history.check()]


def test_a_correct_history_has_no_anomaly_and_counts_everything() -> None:
    history = History()
    for seq in (1, 2, 3):
        acked(history, seq)
    # One retry after a lost answer, acked as a duplicate of the first, stored once.
    key = history.invoke(S, "bo", "c4")
    history.unknown(key)
    history.invoke(S, "bo", "c4")
    history.ok(key, 4, duplicate=True)
    refused = history.invoke(S, "al", "never")
    history.fail(refused, "unavailable")
    log = [event(1), event(2), event(3), event(4, "bo")]
    for observer in ("x", "y"):
        history.start(observer, S, 0)
        for frame in log:
            history.deliver_frame(observer, frame)
    history.log(S, log)
    assert history.check() == []
    assert history.assert_valid() == Counts(
        sends=5,
        attempts=6,
        acked=4,
        duplicates=1,
        failed=1,
        unknown=0,
        retried=1,
        delivered=8,
        stored=4,
        observers=2,
    )


def test_an_acked_write_missing_from_the_log_is_lost() -> None:
    history = History()
    acked(history, 1)
    acked(history, 2)
    history.log(S, [event(1)])
    assert kinds(history) == [Kind.LOST]
    with pytest.raises(AssertionError, match="lost in s_1: 'al''s 'c2' acked at seq 2"):
        history.assert_valid()


def test_an_acked_write_whose_seq_holds_another_event_is_lost() -> None:
    history = History()
    acked(history, 1)
    history.deliver_frame("x", event(1, "bo", "other"))
    assert kinds(history) == [Kind.LOST]


def test_an_acked_write_to_an_empty_log_is_lost() -> None:
    history = History()
    acked(history, 1)
    history.log(S, [])
    assert kinds(history) == [Kind.LOST]


def test_a_log_read_from_a_later_seq_does_not_call_earlier_acks_lost() -> None:
    history = History()
    acked(history, 1)
    acked(history, 2)
    history.log(S, [event(2)])
    assert history.check() == []


def test_a_refused_write_that_shows_up_is_caught() -> None:
    history = History()
    key = history.invoke(S, "al", "c1")
    history.fail(key, "unavailable")
    history.deliver_frame("x", event(1))
    assert kinds(history) == [Kind.FAILED_APPEARS]


def test_a_refused_write_later_acked_as_a_duplicate_is_caught() -> None:
    # The issue-10 lie: `unavailable`, then the retry is confirmed as a duplicate.
    history = History()
    key = history.invoke(S, "al", "c1")
    history.fail(key, "unavailable")
    history.invoke(S, "al", "c1")
    history.ok(key, 1, duplicate=True)
    assert kinds(history) == [Kind.FAILED_APPEARS]


def test_a_refused_write_retried_and_stored_fresh_is_fine() -> None:
    history = History()
    key = history.invoke(S, "al", "c1")
    history.fail(key, "rate_limited")
    history.invoke(S, "al", "c1")
    history.ok(key, 1)
    history.log(S, [event(1)])
    assert history.check() == []


def test_an_unanswered_write_may_or_may_not_be_stored() -> None:
    history = History()
    stored = history.invoke(S, "al", "c1")
    history.unknown(stored)
    never = history.invoke(S, "al", "c2")
    history.unknown(never)
    history.log(S, [event(1)])
    assert history.check() == []
    assert history.counts().unknown == 2


def test_one_client_id_stored_twice_is_a_duplicate() -> None:
    history = History()
    history.log(S, [event(1, client_id="same"), event(2, client_id="same")])
    assert kinds(history) == [Kind.DUPLICATE]


def test_the_same_client_id_from_two_authors_is_two_events() -> None:
    history = History()
    history.log(S, [event(1, "al", "same"), event(2, "bo", "same")])
    assert history.check() == []


def test_one_seq_delivered_twice_is_a_duplicate() -> None:
    history = History()
    for seq in (1, 2, 2, 3):
        history.deliver_frame("x", event(seq))
    assert kinds(history) == [Kind.DUPLICATE]


def test_one_write_acked_at_two_seqs_is_a_duplicate() -> None:
    history = History()
    key = history.invoke(S, "al", "c1")
    history.ok(key, 1)
    history.invoke(S, "al", "c1")
    history.ok(key, 2, duplicate=True)
    assert kinds(history) == [Kind.DUPLICATE]


def test_a_resume_that_redelivers_is_a_duplicate() -> None:
    history = History()
    for seq in (1, 2, 3):
        history.deliver_frame("x", event(seq))
    history.start("x", S, 1)  # resumed from before what it holds
    history.deliver_frame("x", event(2))
    assert Kind.DUPLICATE in kinds(history)


def test_a_skipped_seq_is_a_gap() -> None:
    history = History()
    for seq in (1, 2, 4):
        history.deliver_frame("x", event(seq))
    assert kinds(history) == [Kind.GAP]
    assert "missing 3..3" in str(history.check()[0])


def test_a_first_event_after_the_declared_start_is_a_gap() -> None:
    history = History()
    history.start("x", S, 0)
    history.deliver_frame("x", event(2))
    assert kinds(history) == [Kind.GAP]


def test_a_gap_in_the_stored_log_is_caught() -> None:
    history = History()
    history.log(S, [event(1), event(3)])
    assert kinds(history) == [Kind.GAP]


def test_a_declared_resume_later_on_is_not_a_gap() -> None:
    # A resume answered with a snapshot (`recovered: false`) skips on purpose.
    history = History()
    history.deliver_frame("x", event(1))
    history.start("x", S, 5)
    history.deliver_frame("x", event(6))
    assert history.check() == []


def test_going_back_to_a_lower_seq_is_a_reorder() -> None:
    history = History()
    for seq in (1, 3, 2):
        history.deliver_frame("x", event(seq))
    assert kinds(history) == [Kind.GAP, Kind.REORDER]


def test_two_observers_with_different_events_at_one_seq_disagree() -> None:
    history = History()
    history.deliver_frame("x", event(1, content="hello"))
    history.deliver_frame("y", event(1, content="hullo"))
    assert kinds(history) == [Kind.DISAGREE]


def test_an_observer_disagreeing_with_the_log_is_caught() -> None:
    history = History()
    history.deliver_frame("x", event(1, "al", "a"))
    history.log(S, [event(1, "bo", "b")])
    assert kinds(history) == [Kind.DISAGREE]
    assert LOG in str(history.check()[0])


def test_events_without_a_client_id_are_compared_by_kind_and_data() -> None:
    history = History()
    reply = Identity("message.completed", "agent", None, fingerprint({"content": "x"}))
    history.deliver("x", S, 1, reply)
    history.deliver("y", S, 1, reply)
    assert history.check() == []


def test_an_answer_without_an_attempt_is_a_recording_bug() -> None:
    history = History()
    with pytest.raises(ValueError, match="no attempt"):
        history.ok((S, "al", "c1"), 1)


def test_counts_add_up_across_runs() -> None:
    one, two = History(), History()
    acked(one, 1)
    acked(two, 1)
    acked(two, 2)
    total = one.counts() + two.counts()
    assert (total.sends, total.acked) == (3, 3)
