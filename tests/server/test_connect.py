"""Connecting and authenticating over a real WebSocket."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.server.harness import Server, make_token, running_server


async def test_connect_with_a_valid_token_replies_connected(server: Server) -> None:
    client = await server.client()
    reply = await client.request(
        {"type": "connect", "token": make_token("alice"), "client": "tests/1"}
    )
    assert reply["type"] == "connected"
    assert reply["user"] == "alice"
    assert reply["protocol"] == 1
    assert reply["heartbeat_ms"] == server.config.heartbeat_ms
    assert reply["conn"].startswith("c_")
    assert isinstance(reply["server_time"], int)
    await client.close()


async def test_the_subprotocol_tidings_v1_is_accepted_when_offered(server: Server) -> None:
    client = await server.client(subprotocols=["tidings.v1"])
    assert client.ws.subprotocol == "tidings.v1"
    await client.close()


async def test_a_request_before_connect_is_refused_unauthorized_then_closed_4001(
    server: Server,
) -> None:
    client = await server.client()
    reply = await client.request({"type": "ping"})
    assert reply["type"] == "error"
    assert reply["code"] == "unauthorized"
    code, _ = await client.wait_closed()
    assert code == 4001


async def test_a_bad_token_gets_unauthorized_then_close_4001(server: Server) -> None:
    client = await server.client()
    reply = await client.request({"type": "connect", "token": "not-a-jwt"})
    assert (reply["type"], reply["code"]) == ("error", "unauthorized")
    code, _ = await client.wait_closed()
    assert code == 4001


async def test_an_expired_token_is_refused(server: Server) -> None:
    client = await server.client()
    reply = await client.request({"type": "connect", "token": make_token("al", ttl_s=-10)})
    assert (reply["type"], reply["code"]) == ("error", "unauthorized")
    code, _ = await client.wait_closed()
    assert code == 4001


async def test_a_token_signed_with_another_key_is_refused(server: Server) -> None:
    client = await server.client()
    token = make_token("mallory", secret="some-other-secret-of-enough-length")
    reply = await client.request({"type": "connect", "token": token})
    assert reply["code"] == "unauthorized"
    assert (await client.wait_closed())[0] == 4001


async def test_the_token_may_come_from_the_query_string(server: Server) -> None:
    client = await server.client_at(f"?token={make_token('carol')}")
    reply = await client.request({"type": "connect"})
    assert reply["user"] == "carol"
    await client.close()


async def test_the_token_may_come_from_the_authorization_header(server: Server) -> None:
    client = await server.client(
        additional_headers={"Authorization": f"Bearer {make_token('dave')}"}
    )
    reply = await client.request({"type": "connect"})
    assert reply["user"] == "dave"
    await client.close()


async def test_the_frame_token_wins_over_the_query_token(server: Server) -> None:
    client = await server.client_at(f"?token={make_token('carol')}")
    reply = await client.request({"type": "connect", "token": make_token("erin")})
    assert reply["user"] == "erin"
    await client.close()


async def test_no_connect_within_the_deadline_closes_4001(tmp_path: Path) -> None:
    async with running_server(tmp_path, connect_timeout_ms=300) as server:
        client = await server.client()
        code, _ = await client.wait_closed(timeout=5)
        assert code == 4001


async def test_a_token_expiring_mid_connection_closes_4001(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server:
        client = await server.client()
        reply = await client.request({"type": "connect", "token": make_token("al", ttl_s=1)})
        assert reply["type"] == "connected"
        error = await client.next(lambda f: f.get("type") == "error", timeout=5)
        assert error["code"] == "unauthorized"
        assert (await client.wait_closed())[0] == 4001


async def test_a_refreshed_token_keeps_the_connection_open_past_the_first_expiry(
    server: Server,
) -> None:
    client = await server.client()
    await client.request({"type": "connect", "token": make_token("al", ttl_s=1)})
    reply = await client.request({"type": "refresh", "token": make_token("al", ttl_s=60)})
    assert reply["type"] == "ok"
    await asyncio.sleep(1.6)
    pong = await client.request({"type": "ping"})
    assert pong["type"] == "pong"
    assert not client.closed.done()
    await client.close()


async def test_a_refresh_for_another_user_is_refused(server: Server) -> None:
    client = await server.client("al")
    reply = await client.request({"type": "refresh", "token": make_token("bob")})
    assert (reply["type"], reply["code"]) == ("error", "unauthorized")
    await client.close()


async def test_a_second_connect_is_a_bad_request(server: Server) -> None:
    client = await server.client("al")
    reply = await client.request({"type": "connect", "token": make_token("al")})
    assert (reply["type"], reply["code"]) == ("error", "bad_request")
    await client.close()


async def test_ping_gets_pong_with_server_time(server: Server) -> None:
    client = await server.client("al")
    reply = await client.request({"type": "ping"})
    assert reply["type"] == "pong"
    assert isinstance(reply["server_time"], int)
    await client.close()
