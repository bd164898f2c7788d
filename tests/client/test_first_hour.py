"""The SDK as a new user meets it: an unreachable server fails fast and clearly, `join`
never waits for ever, sessions and members are managed and older history is paged from
the SDK, and a send is one await."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from tests.client.helpers import client_for, until
from tests.server.harness import Server, make_token
from tidings.client import ConnectError, ConnectionState, SendFailed, TidingsError, connect
from tidings.testing.proxy import FaultyProxy


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_connecting_to_a_port_nobody_listens_on_fails_fast_with_a_clear_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="tidings.client")
    url = f"ws://127.0.0.1:{closed_port()}/v1/ws"
    async with asyncio.timeout(10):  # before: connect() returned in fallback, no error
        with pytest.raises(ConnectError) as raised:
            async with connect(url, token=make_token("al"), reconnect_base_s=0.01):
                pass
    error = raised.value
    assert error.code == "unreachable"
    assert url in error.message
    assert "Is the server running" in error.message
    assert error.last is not None  # the HTTP probe's failure, also the __cause__
    assert error.__cause__ is error.last
    assert error.attempts >= 5
    # The log says why at INFO the first time (not only at DEBUG).
    [first] = [r for r in caplog.records if "(1 in a row)" in r.getMessage()]
    assert first.levelno == logging.INFO
    assert url in first.getMessage()


async def test_without_a_fallback_the_connect_timeout_bounds_the_wait() -> None:
    url = f"ws://127.0.0.1:{closed_port()}/v1/ws"
    async with asyncio.timeout(10):
        with pytest.raises(ConnectError, match="cannot reach the Tidings server"):
            async with connect(
                url,
                token=make_token("al"),
                fallback_after=None,
                reconnect_base_s=0.01,
                connect_timeout_s=0.3,
            ):
                pass


async def test_join_while_the_server_is_unreachable_raises_a_timeout_instead_of_waiting(
    server: Server, proxy: FaultyProxy
) -> None:
    sid = await server.create_session("al")
    async with client_for(
        server,
        "al",
        url=proxy.url,
        http_url=f"http://127.0.0.1:{proxy.port}",
        reconnect_base_s=0.01,
        reconnect_cap_s=0.05,
        fallback_after=2,
    ) as al:
        proxy.refuse(True)
        proxy.cut()
        await al.wait_for(ConnectionState.RECONNECTING, ConnectionState.FALLBACK, timeout=5)
        async with asyncio.timeout(5):  # before: join() waited for ever
            with pytest.raises(TidingsError) as raised:
                await al.join(sid, timeout=0.3)
        assert raised.value.code == "timeout"
        assert sid in raised.value.message
        assert sid not in al.sessions
        # Once the server is reachable again, joining works.
        proxy.refuse(False)
        await al.wait_for(ConnectionState.CONNECTED, timeout=5)
        session = await al.join(sid)
        assert session.state.members == {"al": "owner"}


async def test_a_session_is_created_and_its_members_managed_from_the_sdk(server: Server) -> None:
    async with client_for(server, "al") as al, client_for(server, "bo") as bo:
        sid = await al.create_session("Plans")
        mine = await al.join(sid)
        assert (mine.state.title, mine.state.members) == ("Plans", {"al": "owner"})
        await mine.add_member("bo")
        assert mine.state.members == {"al": "owner", "bo": "member"}  # shown on return
        theirs = await bo.join(sid)
        assert theirs.state.title == "Plans"
        await mine.remove_member("bo")
        assert mine.state.members == {"al": "owner"}
        await until(lambda: theirs.error is not None, what="bo's subscription to end")
        assert theirs.error is not None
        assert theirs.error.code == "forbidden"
        # The client-level calls work for sessions not joined.
        other = await al.create_session("Other", agent="none")
        seq = await al.add_member(other, "bo", "viewer")
        assert seq > 0
        assert (await bo.join(other)).state.members["bo"] == "viewer"
        with pytest.raises(TidingsError) as refused:
            await bo.add_member(other, "cy")
        assert refused.value.code == "forbidden"


async def test_older_history_is_paged_with_load_older_in_log_order(server: Server) -> None:
    sid = await server.create_session("al")
    async with client_for(server, "al") as al:
        writer = await al.join(sid)
        handles = [writer.send_message(f"m{i}") for i in range(60)]
        await asyncio.gather(*(h.wait() for h in handles))
    async with client_for(server, "al") as al:
        session = await al.join(sid)
        contents = [m.content for m in session.state.messages]
        assert contents == [f"m{i}" for i in range(10, 60)]  # the snapshot's latest 50
        page = await session.load_older(limit=8)
        assert [m.content for m in page] == [f"m{i}" for i in range(2, 10)]
        page = await session.load_older(limit=8)
        assert [m.content for m in page] == ["m0", "m1"]
        assert await session.load_older() == []
        assert [m.content for m in session.state.messages] == [f"m{i}" for i in range(60)]
        assert session.state.stats["messages"] == 60


async def test_a_send_is_confirmed_in_one_await_and_the_handle_is_there_without_one(
    server: Server,
) -> None:
    sid = await server.create_session("al")
    await server.add_member("al", sid, "vi", "viewer")
    async with client_for(server, "al") as al, client_for(server, "vi") as vi:
        session = await al.join(sid)
        sent = await session.send_message("one await")
        assert (sent.status, sent.event_id) == ("confirmed", f"m_{sent.seq}")
        assert sent.message is not None
        assert (sent.message.content, sent.message.status) == ("one await", "complete")
        handle = session.send_message("no await")  # the handle at once, pending
        assert handle.status == "pending"
        assert session.state.messages[-1].status == "pending"
        assert (await handle).status == "confirmed"
        viewer = await vi.join(sid)
        with pytest.raises(SendFailed) as refused:
            await viewer.send_message("may I?")
        assert refused.value.code == "forbidden"
