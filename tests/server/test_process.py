"""`tidings serve` as a real process: shutdown, crashes and restarts on the same SQLite
file, and what it writes to its log."""

from __future__ import annotations

import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.server.harness import (
    Client,
    Frame,
    Server,
    ServerProcess,
    fetch_events,
    make_token,
    message,
)


@pytest.fixture
async def children(tmp_path: Path) -> AsyncIterator[list[ServerProcess]]:
    """Child servers started by a test (all on `tmp_path`), killed if still running."""
    started: list[ServerProcess] = []
    yield started
    for child in started:
        await child.stop()


async def _start(children: list[ServerProcess], tmp_path: Path, **env: str) -> Server:
    child = ServerProcess(tmp_path, **env)
    children.append(child)
    return await child.start()


def _assert_logged(acks: list[Frame], log: list[Frame]) -> None:
    by_seq = {event["seq"]: event for event in log}
    for ack in acks:
        assert ack["type"] == "ack", ack
        event = by_seq.get(ack["seq"])
        assert event is not None, f"acked seq {ack['seq']} is missing after the restart"
        assert event["client_id"] == ack["client_id"]


async def test_sigterm_closes_every_websocket_with_1001_exits_0_and_keeps_acked_events(
    tmp_path: Path, children: list[ServerProcess]
) -> None:
    server = await _start(children, tmp_path)
    session = await server.create_session("al")
    subscribers = [await server.client("al") for _ in range(3)]
    for client in subscribers:
        await client.subscribe(session)
    not_yet_connected = await server.client()
    acks = [
        await subscribers[0].request(message(f"hello {i}", f"m{i}", session=session))
        for i in range(10)
    ]

    children[0].signal(signal.SIGTERM)
    for client in [*subscribers, not_yet_connected]:
        code, _ = await client.wait_closed()
        assert code == 1001
        await client.close()
    assert await children[0].wait() == 0

    restarted = await _start(children, tmp_path)
    _assert_logged(acks, await fetch_events(restarted, "al", session))


async def test_a_kill_9_right_after_the_last_ack_loses_no_acked_event(
    tmp_path: Path, children: list[ServerProcess]
) -> None:
    server = await _start(children, tmp_path, TIDINGS_RATE_LIMIT="0")
    session = await server.create_session("al")
    client = await server.client("al")
    count = 200
    for i in range(count):  # pipelined: no send waits for the previous ack
        await client.send({**message(f"fast {i}", f"p{i}", session=session), "id": 1000 + i})
    acks: list[Frame] = []
    while len(acks) < count:
        acks.append(await client.next(lambda f: f.get("type") in ("ack", "error")))
    children[0].kill()  # at once, after the last ack
    assert await children[0].wait() == -signal.SIGKILL
    await client.wait_closed()
    await client.close()

    assert sorted(ack["client_id"] for ack in acks) == sorted(f"p{i}" for i in range(count))
    restarted = await _start(children, tmp_path, TIDINGS_RATE_LIMIT="0")
    log = await fetch_events(restarted, "al", session)
    _assert_logged(acks, log)
    assert len({e["client_id"] for e in log if e["kind"] == "message.created"}) == count


async def test_a_reply_cut_by_a_kill_9_is_failed_interrupted_after_a_restart(
    tmp_path: Path, children: list[ServerProcess]
) -> None:
    env = {"TIDINGS_AGENT": "echo", "TIDINGS_ECHO_DELAY_MS": "200"}
    server = await _start(children, tmp_path, **env)
    session = await server.create_session("al", agent="echo")
    client = await server.client("al")
    await client.subscribe(session)
    words = " ".join(f"word{i}" for i in range(100))  # ~20 s of reply at 200 ms a word
    ack = await client.request(message(words, "long", session=session))
    assert ack["type"] == "ack"
    first = await client.next(lambda f: f.get("type") == "stream")
    children[0].kill()
    await children[0].wait()
    await client.wait_closed()
    await client.close()

    restarted = await _start(children, tmp_path, **env)
    message_id = first["message_id"]
    async with restarted.http("al") as http:
        response = await http.get(f"/v1/sessions/{session}/messages/{message_id}")
    response.raise_for_status()
    stored = response.json()
    assert stored["status"] == "failed"
    assert stored["error"] == "interrupted"
    failed = [
        e for e in await fetch_events(restarted, "al", session) if e["kind"] == "message.failed"
    ]
    assert [e["data"] for e in failed] == [{"message_id": message_id, "error": "interrupted"}]


async def _requests_carrying(server: Server, token: str) -> None:
    """WebSocket upgrades and HTTP requests with `token` in their query or headers."""
    client = await Client.open(f"{server.ws_url}?token={token}")
    assert (await client.request({"type": "connect"}))["type"] == "connected"
    await client.close()
    client = await Client.open(
        server.ws_url, additional_headers={"Authorization": f"Bearer {token}"}
    )
    assert (await client.request({"type": "connect"}))["type"] == "connected"
    await client.close()
    async with server.http() as http:
        await http.get(f"/v1/sessions?token={token}")
        await http.get(f"/v1/sessions?x=1&token={token}")


@pytest.mark.parametrize("level", ["info", "debug"])
async def test_tokens_in_query_strings_and_headers_never_reach_the_log(
    tmp_path: Path, children: list[ServerProcess], level: str
) -> None:
    server = await _start(children, tmp_path, TIDINGS_LOG_LEVEL=level)
    token = make_token("al")
    await _requests_carrying(server, token)
    children[0].signal(signal.SIGTERM)
    assert await children[0].wait() == 0

    log = children[0].log()
    assert token not in log
    # Not even its signature, the part that makes it usable.
    assert token.rsplit(".", 1)[1] not in log
    lines = [json.loads(line) for line in log.splitlines() if line.strip()]
    assert lines, "the server wrote no log"
    assert all({"ts", "level", "logger", "msg"} <= line.keys() for line in lines)
    if level == "debug":
        # At debug the upgrade request is logged: proof that redaction, not silence,
        # kept the token out.
        assert "token=[redacted]" in log
        assert "Bearer [redacted]" in log
