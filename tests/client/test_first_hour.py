"""The SDK as a new user meets it: an unreachable server fails fast and clearly, `join`
never waits for ever, sessions and members are managed and older history is paged from
the SDK, and a send is one await."""

from __future__ import annotations

import asyncio
import socket

import pytest

from tests.client.helpers import client_for
from tests.client.proxy import FaultyProxy
from tests.server.harness import Server, make_token
from tidings.client import ConnectError, ConnectionState, TidingsError, connect


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_connecting_to_a_port_nobody_listens_on_fails_fast_with_a_clear_error() -> None:
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
