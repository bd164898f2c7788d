"""Issue 10 point 7: HTTP and SSE resume edge cases answered as on the WebSocket — an
`after` beyond any seq is `bad_request` on every store, and an SSE resume past the head
opens with a snapshot marked `recovered: false`."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import postgres_schema
from tests.server.harness import Server, make_token, message, running_server

HUGE = 2**63


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def server(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Server]:
    async with contextlib.AsyncExitStack() as stack:
        overrides: dict[str, Any] = {}
        if request.param == "postgres":
            overrides["database_url"] = await stack.enter_async_context(postgres_schema())
        yield await stack.enter_async_context(running_server(tmp_path, **overrides))


@pytest.mark.parametrize(
    "query",
    [
        f"events?after={HUGE}",
        f"events?after={HUGE}&wait=1",
        f"messages?before={HUGE}",
        f"sse?after={HUGE}",
    ],
)
async def test_a_seq_beyond_any_store_is_bad_request(server: Server, query: str) -> None:
    session = await server.create_session("alice")
    async with server.http("alice") as http:
        response = await http.get(f"/v1/sessions/{session}/{query}")
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "bad_request"


async def test_a_huge_last_event_id_is_bad_request(server: Server) -> None:
    session = await server.create_session("alice")
    async with server.http("alice") as http:
        response = await http.get(
            f"/v1/sessions/{session}/sse", headers={"Last-Event-ID": str(HUGE)}
        )
    assert response.status_code == 400


async def test_a_websocket_subscribe_beyond_any_seq_is_bad_request(server: Server) -> None:
    session = await server.create_session("alice")
    alice = await server.client("alice")
    reply = await alice.request({"type": "subscribe", "session": session, "after": HUGE})
    assert reply["code"] == "bad_request"
    await alice.close()


async def first_sse_message(
    server: Server, session: str, after: int
) -> tuple[str, dict[str, object]]:
    headers = {"Authorization": f"Bearer {make_token('alice')}"}
    event = "message"
    async with (
        server.http() as http,
        http.stream(
            "GET", f"/v1/sessions/{session}/sse", params={"after": after}, headers=headers
        ) as response,
    ):
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                return event, json.loads(line[6:])
    raise AssertionError("the stream ended without a message")


async def test_an_sse_resume_past_the_head_opens_with_a_snapshot_not_recovered(
    server: Server,
) -> None:
    session = await server.create_session("alice")
    alice = await server.client("alice")
    await alice.request(message("hi", session=session))
    await alice.close()
    event, data = await first_sse_message(server, session, after=500)
    assert event == "snapshot"
    assert data["type"] == "subscribed"
    assert data["recovered"] is False
    assert data["seq"] == 2
    assert isinstance(data["snapshot"], dict)
