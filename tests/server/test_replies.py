"""Assistant replies streamed to every participant over real sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.agents.fake_openai import WORDS, FakeOpenAI
from tests.server.harness import Client, Frame, Server, message, running_server

THIRTY_WORDS = " ".join(f"word{i}" for i in range(30))


def is_completed(frame: Frame) -> bool:
    return frame.get("type") == "event" and frame.get("kind") in (
        "message.completed",
        "message.failed",
    )


async def collect_reply(client: Client, *, timeout: float = 10) -> tuple[str, Frame, int]:
    """Stream text (in offset order, checked contiguous), the end event, frame count."""
    text = ""
    frames = 0
    async with asyncio.timeout(timeout):
        while True:
            frame = await client.next()
            if frame.get("type") == "stream":
                assert frame["offset"] == len(text), (frame, text)
                text += frame["text"]
                frames += 1
            elif is_completed(frame):
                return text, frame, frames


@pytest.fixture
async def echo_server(tmp_path: Path) -> AsyncIterator[Server]:
    async with running_server(tmp_path, agent="echo", echo_delay_ms=20) as running:
        yield running


async def test_three_participants_see_the_identical_reply(echo_server: Server) -> None:
    server = echo_server
    sid = await server.create_session("al", agent="echo")
    for user in ("bo", "cy"):
        await server.add_member("al", sid, user, "member")
    clients = [await server.client(u) for u in ("al", "bo", "cy")]
    for c in clients:
        await c.subscribe(sid)
    await clients[0].request(message(session=sid, content="the quick brown fox"))
    results = await asyncio.gather(*(collect_reply(c) for c in clients))
    for text, end, _ in results:
        assert end["kind"] == "message.completed"
        assert text == end["data"]["content"] == "echo: the quick brown fox"
    for c in clients:
        await c.close()


async def test_the_ack_arrives_before_the_first_stream_frame(echo_server: Server) -> None:
    sid = await echo_server.create_session("al", agent="echo")
    client = await echo_server.client("al")
    await client.subscribe(sid)
    frame = message(session=sid, content="hello")
    await client.send({**frame, "id": 77})
    order = []
    while True:
        got = await client.next()
        order.append(got.get("type"))
        if got.get("type") == "stream":
            break
    assert "ack" in order
    assert order.index("ack") < order.index("stream")
    await client.close()


async def test_a_participant_rejoining_mid_reply_gets_the_whole_text_once(
    echo_server: Server,
) -> None:
    server = echo_server
    sid = await server.create_session("al", agent="echo")
    writer = await server.client("al")
    await writer.subscribe(sid)
    await writer.request(message(session=sid, content=THIRTY_WORDS))
    expected = "echo: " + THIRTY_WORDS
    # Wait until about a third of the reply has streamed, then join.
    seen = ""
    while len(seen.split()) < 11:
        frame = await writer.next()
        if frame.get("type") == "stream":
            seen += frame["text"]
    late = await server.client("al")
    reply = await late.subscribe(sid)
    [streaming] = [m for m in reply["snapshot"]["messages"] if m["status"] == "streaming"]
    content, offset = streaming["content"], streaming["offset"]
    assert offset == len(content) > 0
    assert expected.startswith(content)
    text = content
    async with asyncio.timeout(10):
        while True:
            frame = await late.next()
            if frame.get("type") == "stream":
                end = frame["offset"] + len(frame["text"])
                if end <= len(text):
                    continue  # already in the snapshot: drop
                assert frame["offset"] == len(text), "a gap in the stream"
                text += frame["text"]
            elif is_completed(frame):
                assert frame["data"]["content"] == expected
                break
    assert text == expected
    await writer.close()
    await late.close()


async def test_the_message_endpoint_shows_partial_content_while_streaming(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path, agent="echo", echo_delay_ms=60) as server:
        sid = await server.create_session("al", agent="echo")
        client = await server.client("al")
        await client.subscribe(sid)
        await client.request(message(session=sid, content=THIRTY_WORDS))
        created = await client.next(
            lambda f: (
                f.get("kind") == "message.created" and f["data"]["message"]["role"] == "assistant"
            )
        )
        message_id = created["data"]["message"]["id"]
        await client.next(lambda f: f.get("type") == "stream" and f["offset"] > 20)
        async with server.http("al") as http:
            body = (await http.get(f"/v1/sessions/{sid}/messages/{message_id}")).json()
        assert body["status"] == "streaming"
        assert body["offset"] == len(body["content"]) > 20
        await client.close()


async def test_cancel_stops_a_reply_with_message_failed(echo_server: Server) -> None:
    sid = await echo_server.create_session("al", agent="echo")
    client = await echo_server.client("al")
    await client.subscribe(sid)
    await client.request(message(session=sid, content=THIRTY_WORDS))
    first = await client.next(lambda f: f.get("type") == "stream")
    ok = await client.request({"type": "cancel", "session": sid, "message_id": first["message_id"]})
    assert ok["type"] == "ok"
    failed = await client.next(lambda f: f.get("kind") == "message.failed")
    assert failed["data"] == {"message_id": first["message_id"], "error": "cancelled"}
    again = await client.request(
        {"type": "cancel", "session": sid, "message_id": first["message_id"]}
    )
    assert again["code"] == "not_found"
    await client.close()


async def test_an_agent_that_raises_fails_cleanly_and_the_session_goes_on(
    tmp_path: Path,
) -> None:
    spec = "tests.server.agents_for_tests:make_raising"
    async with running_server(tmp_path, agents=(spec,)) as server:
        sid = await server.create_session("al", agent=spec)
        client = await server.client("al")
        await client.subscribe(sid)
        await client.request(message(session=sid, content="hi"))
        _, end, _ = await collect_reply(client)
        assert end["kind"] == "message.failed"
        error = end["data"]["error"]
        for secret in ("SECRET", "sk-live", "/srv"):
            assert secret not in error
        assert error.startswith("The assistant failed to reply")
        ack = await client.request(message(session=sid, content="still there?"))
        assert ack["type"] == "ack"
        _, end, _ = await collect_reply(client)
        assert end["kind"] == "message.failed"
        await client.close()


async def openai_server(tmp_path: Path, fake: FakeOpenAI, model: str, **overrides: Any) -> Any:
    settings = {
        "TIDINGS_OPENAI_BASE_URL": fake.base_url,
        "TIDINGS_OPENAI_API_KEY": "sk-test-secret",
        "TIDINGS_OPENAI_MODEL": model,
        "TIDINGS_OPENAI_TIMEOUT_S": "1",
    }
    return running_server(tmp_path, agent="openai", settings=settings, **overrides)


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAI]:
    fake = FakeOpenAI()
    await fake.start()
    yield fake
    await fake.stop()


async def test_the_openai_agent_streams_from_a_compatible_server(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    async with await openai_server(tmp_path, fake_openai, "tiny-model") as server:
        sid = await server.create_session("al", agent="openai")
        client = await server.client("al")
        reply = await client.subscribe(sid)
        assert reply["seq"] == 1
        await client.request(message(session=sid, content="hello model"))
        text, end, _ = await collect_reply(client)
        assert end["kind"] == "message.completed"
        assert text == end["data"]["content"] == "".join(WORDS)
        snapshot = (await (await server.client("al")).subscribe(sid))["snapshot"]
        assert snapshot["stats"]["tokens"]["completion"] == len(WORDS)
        await client.close()


@pytest.mark.parametrize("model", ["fail-midstream", "stall"])
async def test_openai_failures_and_timeouts_become_message_failed(
    tmp_path: Path, fake_openai: FakeOpenAI, model: str
) -> None:
    async with await openai_server(tmp_path, fake_openai, model) as server:
        sid = await server.create_session("al", agent="openai")
        client = await server.client("al")
        await client.subscribe(sid)
        await client.request(message(session=sid, content="hello model"))
        _, end, _ = await collect_reply(client, timeout=15)
        assert end["kind"] == "message.failed"
        assert "sk-test" not in end["data"]["error"]
        await client.close()


async def test_a_backlogged_connection_gets_stream_chunks_merged(echo_server: Server) -> None:
    server = echo_server
    sid = await server.create_session("al", agent="echo")
    client = await server.client("al")
    await client.subscribe(sid)
    assert server.node is not None
    [conn] = [c for c in server.node.connections if c.user == "al"]
    # The send is in (acked) before the pause: a paused transport pauses reading too.
    ack = await client.request(message(session=sid, content=THIRTY_WORDS))
    assert ack["type"] == "ack"
    conn.socket.pause_writing()  # as the transport does when the peer reads slowly
    await asyncio.sleep(1.0)  # 31 chunks 20 ms apart pile up
    conn.socket.resume_writing()
    text, end, frames = await collect_reply(client)
    assert text == end["data"]["content"] == "echo: " + THIRTY_WORDS
    assert frames < 31
    await client.close()


async def test_twenty_sessions_reply_at_once_under_a_bound_of_four(tmp_path: Path) -> None:
    async with running_server(
        tmp_path, agent="echo", echo_delay_ms=2, agent_concurrency=4, rate_limit=0
    ) as server:
        sessions = [await server.create_session("al", agent="echo") for _ in range(20)]
        client = await server.client("al")
        for sid in sessions:
            await client.subscribe(sid)
        for sid in sessions:
            for n in range(2):
                await client.request(message(session=sid, content=f"{sid} message {n}"))
        done: dict[str, list[str]] = {sid: [] for sid in sessions}
        async with asyncio.timeout(30):
            while sum(len(v) for v in done.values()) < 40:
                frame = await client.next(lambda f: f.get("kind") == "message.completed")
                done[frame["session"]].append(frame["data"]["content"])
        for sid in sessions:
            assert done[sid] == [f"echo: {sid} message 0", f"echo: {sid} message 1"]
        await client.close()
