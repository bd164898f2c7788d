"""The SDK against a real server: joining, sending, changes, errors, lifecycle."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.client.helpers import client_for, until
from tests.server.harness import SECRET, Server, make_token
from tidings.client import (
    AuthError,
    ChangeBatch,
    ConnectionState,
    OfflineQueueFull,
    SendFailed,
    TidingsError,
    connect,
)
from tidings.core.auth import issue
from tidings.testing.proxy import FaultyProxy


async def test_a_sent_message_is_pending_at_once_then_confirmed_and_seen_by_others(
    server: Server,
) -> None:
    sid = await server.create_session("al", title="Plans")
    await server.add_member("al", sid, "bo", "member")
    async with client_for(server, "al") as al, client_for(server, "bo") as bo:
        mine = await al.join(sid)
        theirs = await bo.join(sid)
        assert mine.state.title == "Plans"
        assert mine.state.members == {"al": "owner", "bo": "member"}
        handle = mine.send_message("Hello!")
        [pending] = mine.state.messages
        assert (pending.status, pending.id, pending.key) == ("pending", None, handle.client_id)
        await handle
        assert handle.status == "confirmed"
        assert handle.event_id == f"m_{handle.seq}"
        [confirmed] = mine.state.messages
        assert (confirmed.key, confirmed.id, confirmed.status) == (
            handle.client_id,
            handle.event_id,
            "complete",
        )
        await until(lambda: len(theirs.state.messages) == 1)
        assert theirs.state.messages[0].content == "Hello!"
        assert theirs.state.messages[0].author == "al"
        assert mine.state.stats["messages"] == theirs.state.stats["messages"] == 1


async def test_changes_come_in_debounced_batches_that_keep_every_message(server: Server) -> None:
    sid = await server.create_session("al")
    async with client_for(server, "al", debounce_s=0.2) as al:
        session = await al.join(sid)
        stream = session.changes()
        callback_batches: list[ChangeBatch] = []
        session.on_change(callback_batches.append)
        handles = [session.send_message(f"m{i}") for i in range(5)]
        await asyncio.gather(*(h.wait() for h in handles))
        session.update({"title": "one"})
        session.update({"title": "two"})
        seen: list[str] = []
        titles: list[str] = []
        async with asyncio.timeout(5):
            async for batch in stream:
                seen.extend(m.content for m in batch.messages if m.status == "complete")
                titles.extend(c.value for c in batch.of("title"))
                if titles and titles[-1] == "two":
                    break
        stream.close()
        # Five distinct messages, none merged away; one batch saw them pending and
        # confirmed at once (coalesced to the latest); the title twice at most.
        assert sorted(set(seen)) == [f"m{i}" for i in range(5)]
        assert len(titles) <= 2
        assert callback_batches


async def test_a_compare_and_set_update_on_an_old_version_fails_with_conflict(
    server: Server,
) -> None:
    sid = await server.create_session("al")
    async with client_for(server, "al") as al:
        session = await al.join(sid)
        await session.update({"title": "a"}, base_version=0)
        assert session.state.version == 1
        handle = session.update({"title": "b"}, base_version=0)
        with pytest.raises(SendFailed) as caught:
            await handle
        assert caught.value.code == "conflict"
        assert caught.value.version == 1
        assert handle.status == "failed"
        assert session.state.title == "a"


async def test_cards_are_added_and_removed(server: Server) -> None:
    sid = await server.create_session("al")
    async with client_for(server, "al") as al:
        session = await al.join(sid)
        handle = session.add_card("Spec", "the spec", "doc")
        await handle
        assert handle.event_id is not None
        assert session.state.cards[handle.event_id]["title"] == "Spec"
        await session.remove_card(handle.event_id)
        assert session.state.cards == {}
        assert session.state.stats["cards"] == 0


async def test_joining_a_session_you_are_not_in_raises_forbidden(server: Server) -> None:
    sid = await server.create_session("al")
    async with client_for(server, "eve") as eve:
        with pytest.raises(TidingsError) as caught:
            await eve.join(sid)
        assert caught.value.code == "forbidden"
        with pytest.raises(TidingsError) as missing:
            await eve.join("s_nope")
        assert missing.value.code in ("not_found", "forbidden")


async def test_a_viewer_send_fails_and_stays_in_the_state_as_failed(server: Server) -> None:
    sid = await server.create_session("al")
    await server.add_member("al", sid, "vi", "viewer")
    async with client_for(server, "vi") as vi:
        session = await vi.join(sid)
        handle = session.send_message("can I?")
        with pytest.raises(SendFailed):
            await handle
        assert handle.error is not None
        assert handle.error.code == "forbidden"
        assert [m.status for m in session.state.messages] == ["failed"]


async def test_signals_reach_the_other_members(server: Server) -> None:
    sid = await server.create_session("al")
    await server.add_member("al", sid, "bo", "member")
    async with client_for(server, "al") as al, client_for(server, "bo") as bo:
        mine = await al.join(sid)
        theirs = await bo.join(sid)
        got: list[ChangeBatch] = []
        theirs.on_change(got.append)
        await mine.signal("typing", {"typing": True})
        await until(lambda: any(b.of("signal") for b in got))
        [change] = [c for b in got for c in b.of("signal")]
        assert change.value == {"from": "al", "name": "typing", "data": {"typing": True}}
        await until(lambda: sorted(theirs.state.presence) == ["al", "bo"])


async def test_a_bad_token_stops_at_once_with_an_auth_error(server: Server) -> None:
    states: list[str] = []
    client_cm = connect(server.ws_url, token="not-a-jwt", reconnect_base_s=0.01)
    with pytest.raises(AuthError) as caught:
        async with client_cm as client:
            client.on_state(states.append)
    assert caught.value.code == "unauthorized"


async def test_a_token_refused_on_reconnect_surfaces_and_stops_retrying(
    server: Server, proxy: FaultyProxy
) -> None:
    sid = await server.create_session("al")
    tokens = [make_token("al")]

    async def provider() -> str:
        return tokens.pop(0) if tokens else "expired-or-revoked"

    async with connect(
        proxy.url, token_provider=provider, http_url=server.http_url, reconnect_base_s=0.01
    ) as client:
        session = await client.join(sid)
        proxy.cut()
        await client.wait_for(ConnectionState.CLOSED, timeout=5)
        assert client.state is ConnectionState.CLOSED
        assert isinstance(client.error, AuthError)
        assert isinstance(session.error, AuthError)
        with pytest.raises(AuthError):
            session.send_message("after")


async def test_the_token_is_refreshed_before_it_expires(tmp_path: object, server: Server) -> None:
    sid = await server.create_session("al")
    calls = 0

    async def provider() -> str:
        nonlocal calls
        calls += 1
        # Two seconds of life: without a refresh the server closes with 4001 at expiry.
        return issue("al", secret=SECRET, ttl_s=2, now_s=int(time.time()))

    async with connect(server.ws_url, token_provider=provider) as client:
        session = await client.join(sid)
        await asyncio.sleep(2.5)
        assert client.state is ConnectionState.CONNECTED
        assert client.reconnects == 0
        assert calls >= 2
        await session.send_message("still here")


async def test_a_silent_server_is_detected_and_the_client_reconnects(
    server: Server, proxy: FaultyProxy
) -> None:
    sid = await server.create_session("al")
    async with client_for(
        server, "al", url=proxy.url, heartbeat_s=0.3, reconnect_base_s=0.01
    ) as client:
        session = await client.join(sid)
        states: list[str] = []
        client.on_state(states.append)
        proxy.stall()
        await client.wait_for(ConnectionState.RECONNECTING, timeout=2)
        await client.wait_for(ConnectionState.CONNECTED, timeout=5)
        assert states[:2] == ["reconnecting", "connected"]
        await session.send_message("back")


async def test_sends_beyond_the_offline_queue_bound_fail_clearly(
    server: Server, proxy: FaultyProxy
) -> None:
    sid = await server.create_session("al")
    async with client_for(
        server, "al", url=proxy.url, max_queue=3, fallback_after=None, reconnect_base_s=0.05
    ) as client:
        session = await client.join(sid)
        proxy.refuse(True)
        proxy.cut()
        await client.wait_for(ConnectionState.RECONNECTING, timeout=2)
        handles = [session.send_message(f"q{i}") for i in range(3)]
        with pytest.raises(OfflineQueueFull, match="3 sends are already waiting"):
            session.send_message("one too many")
        assert [m.status for m in session.state.messages] == ["pending"] * 3
        proxy.refuse(False)
        await asyncio.gather(*(h.wait(timeout=10) for h in handles))
        assert [m.content for m in session.state.messages] == ["q0", "q1", "q2"]


async def test_closing_leaves_no_task_behind_and_ends_change_streams(server: Server) -> None:
    sid = await server.create_session("al")
    before = set(asyncio.all_tasks())
    async with client_for(server, "al") as client:
        session = await client.join(sid)
        stream = session.changes()
        session.send_message("bye")
    # The stream ends (after the last batch) instead of hanging.
    async with asyncio.timeout(2):
        async for _ in stream:
            pass
    await asyncio.sleep(0)
    new = {t for t in asyncio.all_tasks() - before if not t.done()}
    assert {t.get_name() for t in new if "tidings-client" in t.get_name()} == set()
    assert client.state is ConnectionState.CLOSED


@pytest.mark.parametrize("code", [1001, 1011, 4009])
async def test_a_close_with_a_transient_code_is_followed_by_a_reconnect(
    server: Server, code: int
) -> None:
    sid = await server.create_session("al")
    async with client_for(server, "al", reconnect_base_s=0.01) as client:
        session = await client.join(sid)
        assert server.node is not None
        for conn in list(server.node.connections):
            conn.socket.close(code, "test")
        await client.wait_for(ConnectionState.RECONNECTING, timeout=2)
        await client.wait_for(ConnectionState.CONNECTED, timeout=5)
        await session.send_message("back")
        assert client.reconnects == 1


async def test_a_close_with_4003_stops_retrying(server: Server) -> None:
    sid = await server.create_session("al")
    async with client_for(server, "al", reconnect_base_s=0.01) as client:
        await client.join(sid)
        assert server.node is not None
        for conn in list(server.node.connections):
            conn.socket.close(4003, "go away")
        await client.wait_for(ConnectionState.CLOSED, timeout=5)
        assert isinstance(client.error, AuthError)
        assert client.error.close_code == 4003


async def test_an_assistant_reply_grows_and_can_be_cancelled(echo_server: Server) -> None:
    sid = await echo_server.create_session("al", agent="echo")
    async with client_for(echo_server, "al") as client:
        session = await client.join(sid)
        await (await session.send_message(" ".join(f"w{i}" for i in range(200))))

        def reply_content() -> str:
            replies = [m for m in session.state.messages if m.role == "assistant"]
            return replies[0].content if replies else ""

        await until(lambda: len(reply_content()) > 20, what="the reply to grow")
        [reply] = [m for m in session.state.messages if m.role == "assistant"]
        assert reply.id is not None
        await session.cancel(reply.id)
        await until(lambda: session.state.messages[-1].status == "failed")
        assert session.state.messages[-1].error
