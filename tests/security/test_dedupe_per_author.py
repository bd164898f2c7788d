"""Issue 9 point 8: idempotency is keyed by `(session, author, client_id)`, over the socket.

Before the fix the key was `(session, client_id)`: a member sending with another member's
client id got the other's ack (and their text was dropped), and a member claiming the id
another would use next made that member's message vanish as a "duplicate".
"""

from __future__ import annotations

from pathlib import Path

from tests.server.harness import fetch_events, message, running_server


async def test_a_member_sending_with_anothers_client_id_gets_a_fresh_event(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path) as server:
        session = await server.create_session("alice")
        await server.add_member("alice", session, "bob", "member")
        alice = await server.client("alice")
        bob = await server.client("bob")
        try:
            mine = await alice.request(message("alice's text", "shared-id", session=session))
            theirs = await bob.request(message("bob's text", "shared-id", session=session))
            assert mine["type"] == theirs["type"] == "ack"
            assert theirs["duplicate"] is False
            assert theirs["seq"] == mine["seq"] + 1
            retry = await bob.request(message("bob's text", "shared-id", session=session))
            assert (retry["duplicate"], retry["seq"]) == (True, theirs["seq"])
        finally:
            await alice.close()
            await bob.close()
        texts = [
            (e["author"], e["data"]["message"]["content"])
            for e in await fetch_events(server, "alice", session)
            if e["kind"] == "message.created"
        ]
        assert texts == [("alice", "alice's text"), ("bob", "bob's text")]


async def test_claiming_the_client_id_another_member_uses_next_swallows_nothing(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path) as server:
        session = await server.create_session("alice")
        await server.add_member("alice", session, "bob", "member")
        alice = await server.client("alice")
        bob = await server.client("bob")
        try:
            squat = await bob.request(message("squatting", "alice-next", session=session))
            assert squat["type"] == "ack"
            ack = await alice.request(message("alice's next", "alice-next", session=session))
            assert ack["type"] == "ack"
            assert ack["duplicate"] is False
            assert ack["seq"] == squat["seq"] + 1
        finally:
            await alice.close()
            await bob.close()
        authors = [
            e["author"]
            for e in await fetch_events(server, "alice", session)
            if e["kind"] == "message.created"
        ]
        assert authors == ["bob", "alice"]
