from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidings.core.presence import PresenceTracker


def test_the_first_connection_of_a_user_brings_them_online() -> None:
    presence = PresenceTracker()
    assert presence.join("s", "bob", "c1") == ["bob"]
    assert presence.join("s", "alice", "c2") == ["alice", "bob"]
    assert presence.online("s") == ["alice", "bob"]


def test_a_second_connection_of_an_online_user_changes_nothing() -> None:
    presence = PresenceTracker()
    presence.join("s", "alice", "c1")
    assert presence.join("s", "alice", "c2") is None
    assert presence.join("s", "alice", "c2") is None


def test_a_user_stays_online_until_their_last_connection_leaves() -> None:
    presence = PresenceTracker()
    presence.join("s", "alice", "c1")
    presence.join("s", "alice", "c2")
    presence.join("s", "bob", "c3")
    assert presence.leave("s", "alice", "c1") is None
    assert presence.is_online("s", "alice")
    assert presence.leave("s", "alice", "c2") == ["bob"]
    assert not presence.is_online("s", "alice")


def test_leaving_with_an_unknown_connection_changes_nothing() -> None:
    presence = PresenceTracker()
    assert presence.leave("s", "alice", "c1") is None
    presence.join("s", "alice", "c1")
    assert presence.leave("s", "alice", "c9") is None
    assert presence.leave("s", "bob", "c1") is None
    assert presence.online("s") == ["alice"]


def test_an_empty_session_is_forgotten() -> None:
    presence = PresenceTracker()
    presence.join("s", "alice", "c1")
    assert presence.leave("s", "alice", "c1") == []
    assert presence.sessions() == []
    assert presence.online("s") == []


def test_sessions_are_independent() -> None:
    presence = PresenceTracker()
    presence.join("s1", "alice", "c1")
    assert presence.join("s2", "alice", "c1") == ["alice"]
    assert presence.leave("s1", "alice", "c1") == []
    assert presence.online("s2") == ["alice"]


def test_a_disconnect_leaves_every_session_of_that_connection() -> None:
    presence = PresenceTracker()
    presence.join("s1", "alice", "c1")
    presence.join("s2", "alice", "c1")
    presence.join("s2", "bob", "c2")
    presence.join("s3", "alice", "c1")
    presence.join("s3", "alice", "c3")
    assert presence.leave_all("alice", "c1") == {"s1": [], "s2": ["bob"]}
    assert presence.online("s3") == ["alice"]
    assert sorted(presence.sessions()) == ["s2", "s3"]


ops = st.lists(
    st.tuples(
        st.booleans(),
        st.sampled_from(["s1", "s2"]),
        st.sampled_from(["alice", "bob", "carol"]),
        st.sampled_from(["c1", "c2", "c3"]),
    ),
    max_size=60,
)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=ops)
def test_reported_changes_always_match_the_connections_held(
    ops: list[tuple[bool, str, str, str]],
) -> None:
    presence = PresenceTracker()
    held: set[tuple[str, str, str]] = set()
    seen: dict[str, list[str]] = {}
    for joining, session, user, conn in ops:
        before = presence.online(session)
        if joining:
            held.add((session, user, conn))
            change = presence.join(session, user, conn)
        else:
            held.discard((session, user, conn))
            change = presence.leave(session, user, conn)
        truth = sorted({u for s, u, _ in held if s == session})
        assert presence.online(session) == truth
        # A change is reported exactly when the online set changed, with the new set.
        assert change == (truth if truth != before else None)
        if change is not None:
            seen[session] = change
    for session in ("s1", "s2"):
        assert seen.get(session, []) == presence.online(session)
    assert set(presence.sessions()) == {s for s, _, _ in held}
