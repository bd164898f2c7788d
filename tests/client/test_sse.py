"""`GET /v1/sessions/{id}/sse` over real sockets, and the SDK's SSE parser."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.server.harness import Server, make_token
from tidings.client.sse_parser import SseEvent, SseParser


async def say(server: Server, user: str, sid: str, content: str) -> dict[str, Any]:
    async with server.http(user) as http:
        response = await http.post(
            f"/v1/sessions/{sid}/events",
            json={"client_id": uuid.uuid4().hex, "kind": "message", "data": {"content": content}},
        )
        response.raise_for_status()
        ack: dict[str, Any] = response.json()
        return ack


async def sse_events(response: httpx.Response) -> AsyncIterator[SseEvent]:
    parser = SseParser()
    async for line in response.aiter_lines():
        event = parser.feed(line)
        if event is not None:
            yield event


class Reader:
    """The SSE events of one response, taken a few at a time."""

    def __init__(self, response: httpx.Response) -> None:
        self._lines = response.aiter_lines()
        self._parser = SseParser()

    async def take(self, count: int, timeout: float = 5) -> list[SseEvent]:
        out: list[SseEvent] = []
        async with asyncio.timeout(timeout):
            while len(out) < count:
                event = self._parser.feed(await anext(self._lines))
                if event is not None:
                    out.append(event)
        return out


def contents(events: list[SseEvent]) -> list[str]:
    return [json.loads(e.data)["data"]["message"]["content"] for e in events]


async def test_every_event_carries_its_seq_as_id_and_last_event_id_resumes_after_it(
    server: Server,
) -> None:
    sid = await server.create_session("al")
    for word in ("one", "two", "three"):
        await say(server, "al", sid, word)
    async with (
        server.http("al") as http,
        http.stream("GET", f"/v1/sessions/{sid}/sse", headers={"Last-Event-ID": "2"}) as resp,
    ):
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        reader = Reader(resp)
        missed = await reader.take(2)
        assert [e.id for e in missed] == ["3", "4"]
        assert contents(missed) == ["two", "three"]
        await say(server, "al", sid, "four")  # live, after the catch-up
        [live] = await reader.take(1)
        assert (live.id, contents([live])) == ("5", ["four"])
        assert json.loads(live.data)["type"] == "event"


async def test_after_and_a_token_in_the_query_work_without_headers(server: Server) -> None:
    sid = await server.create_session("al")
    await say(server, "al", sid, "hello")
    url = f"{server.http_url}/v1/sessions/{sid}/sse"
    params = {"after": "1", "token": make_token("al")}
    async with httpx.AsyncClient() as http, http.stream("GET", url, params=params) as resp:
        assert resp.status_code == 200
        [event] = await Reader(resp).take(1)
        assert (event.id, contents([event])) == ("2", ["hello"])


async def test_without_a_resume_point_the_stream_opens_with_a_snapshot(server: Server) -> None:
    sid = await server.create_session("al", title="Plans")
    await say(server, "al", sid, "hello")
    async with (
        server.http("al") as http,
        http.stream("GET", f"/v1/sessions/{sid}/sse") as resp,
    ):
        [first] = await Reader(resp).take(1)
        assert first.event == "snapshot"
        body = json.loads(first.data)
        assert (body["type"], body["seq"]) == ("subscribed", 2)
        assert body["snapshot"]["title"] == "Plans"
        assert [m["content"] for m in body["snapshot"]["messages"]] == ["hello"]


async def test_stream_frames_go_out_as_they_happen_without_moving_the_resume_point(
    echo_server: Server,
) -> None:
    server = echo_server
    sid = await server.create_session("al", agent="echo")
    async with (
        server.http("al") as http,
        http.stream("GET", f"/v1/sessions/{sid}/sse", headers={"Last-Event-ID": "1"}) as resp,
    ):
        await say(server, "al", sid, "a b c d")
        text = ""
        last_id = None
        async with asyncio.timeout(10):
            async for event in sse_events(resp):
                frame = json.loads(event.data)
                if frame["type"] == "stream":
                    assert frame["offset"] == len(text)
                    text += frame["text"]
                    assert event.id == last_id  # unchanged by stream frames
                else:
                    last_id = event.id
                    if frame.get("kind") == "message.completed":
                        assert frame["data"]["content"] == text == "echo: a b c d"
                        break


@pytest.mark.parametrize(
    ("user", "status"), [(None, 401), ("eve", 403)], ids=["no token", "not a member"]
)
async def test_the_stream_is_refused_without_access(
    server: Server, user: str | None, status: int
) -> None:
    sid = await server.create_session("al")
    async with server.http(user) as http:
        response = await http.get(f"/v1/sessions/{sid}/sse")
    assert response.status_code == status
    assert "error" in response.json()


async def test_a_removed_member_gets_an_error_event_and_the_stream_ends(server: Server) -> None:
    sid = await server.create_session("al")
    await server.add_member("al", sid, "bo", "member")
    async with (
        server.http("bo") as http,
        http.stream("GET", f"/v1/sessions/{sid}/sse", params={"after": "2"}) as resp,
    ):
        async with server.http("al") as owner:
            (await owner.delete(f"/v1/sessions/{sid}/members/bo")).raise_for_status()
        events = []
        async with asyncio.timeout(5):
            async for event in sse_events(resp):
                events.append(event)
        assert events[-1].event == "error"
        assert json.loads(events[-1].data)["code"] == "forbidden"


def test_the_parser_follows_the_event_stream_format() -> None:
    parser = SseParser()
    lines = [": comment", "retry: 1000", "", "id: 7", "event: x", "data: a", "data:b", ""]
    got = [e for line in lines if (e := parser.feed(line)) is not None]
    assert got == [SseEvent("x", "a\nb", "7")]
    assert parser.feed("data: next") is None
    assert parser.feed("") == SseEvent("message", "next", "7")  # the id carries over
