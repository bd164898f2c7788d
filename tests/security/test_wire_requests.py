"""Attacks on how `/v1/ws` handles the requests of a frame (issue 9, points 7 and 14).

Before a successful `connect` a client may make the server do one request's work, not a
frame's: anything but `connect` gets one `unauthorized` and close 4001, and the rest of
its batch is never parsed. A batch holds at most `TIDINGS_MAX_BATCH` requests; a longer
one gets one error. The requests of a batch run in order, each after the previous one
completed, and every `rate_limited` error carries `retry_after_ms`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.security.attacks import RSS_BUDGET_MIB, ServerErrors
from tests.security.memory import sampled_rss
from tests.server.harness import Client, Frame, Server, make_token, message, running_server

#: One 64 KiB frame of invalid items: the attack that cost the loop ~140 ms per frame.
INVALID_ITEMS = 32_701


def invalid_batch(count: int = INVALID_ITEMS) -> str:
    """A batch of `count` items that are not requests (`0` is not even an object)."""
    return "[" + ",".join(["0"] * count) + "]"


async def frames_until_closed(client: Client, timeout: float = 10) -> list[Frame]:
    """Every frame the server sends until it closes the connection."""
    await client.wait_closed(timeout)
    frames: list[Frame] = []
    while not client.inbox.empty():
        frames.append(client.inbox.get_nowait())
    return frames


async def test_a_huge_invalid_batch_before_connect_gets_one_error_and_close_4001(
    server: Server, server_errors: ServerErrors
) -> None:
    frame = invalid_batch()
    assert len(frame) < server.config.max_frame
    async with sampled_rss() as rss:
        clients = [await server.client() for _ in range(4)]
        for client in clients:
            await client.send(frame)
        replies = [await frames_until_closed(client) for client in clients]
    for client, frames in zip(clients, replies, strict=True):
        assert [(f["type"], f["code"]) for f in frames] == [("error", "unauthorized")]
        assert "at most 100 requests" in frames[0]["message"]
        assert client.closed.result()[0] == 4001
    assert rss.growth_mib < RSS_BUDGET_MIB
    assert not server_errors.lines()


@pytest.mark.parametrize(
    "first",
    [
        {"type": "ping", "id": 1},
        {"type": "subscribe", "id": 1, "session": "s_0000000000000000"},
        {"type": "launch", "id": 1},
        "junk",
    ],
)
async def test_a_batch_before_connect_that_does_not_start_with_connect_ends_at_its_first_item(
    server: Server, first: Any
) -> None:
    client = await server.client()
    await client.send(json.dumps([first] + [{"type": "ping", "id": n} for n in range(2, 100)]))
    frames = await frames_until_closed(client)
    assert [(f["type"], f["code"]) for f in frames] == [("error", "unauthorized")]
    assert client.closed.result()[0] == 4001


async def test_malformed_json_before_connect_gets_one_error_and_close_4001(server: Server) -> None:
    client = await server.client()
    await client.send('{"type": "connect", "id": 1, "token": ')
    frames = await frames_until_closed(client)
    assert [(f["type"], f["code"]) for f in frames] == [("error", "unauthorized")]
    assert "malformed JSON" in frames[0]["message"]
    assert client.closed.result()[0] == 4001


async def test_a_batch_over_the_cap_once_connected_gets_one_too_large_error_and_nothing_runs(
    server: Server,
) -> None:
    client = await server.client("al")
    await client.send(json.dumps([{"type": "ping", "id": 1000 + n} for n in range(101)]))
    error = await client.next()
    assert (error["type"], error["code"]) == ("error", "too_large")
    assert "at most 100 requests, this one 101" in error["message"]
    pong = await client.request({"type": "ping"})
    assert pong["type"] == "pong"
    assert client.inbox.empty()  # none of the 101 pings was answered
    await client.close()


async def test_a_batch_at_the_cap_is_answered_item_by_item_in_order(server: Server) -> None:
    client = await server.client("al")
    await client.send(json.dumps([{"type": "ping", "id": 1000 + n} for n in range(100)]))
    replies = [await client.next() for _ in range(100)]
    assert [r["re"] for r in replies] == [1000 + n for n in range(100)]
    assert {r["type"] for r in replies} == {"pong"}
    await client.close()


async def test_connect_then_subscribe_in_one_batch_are_handled_in_order(server: Server) -> None:
    sid = await server.create_session("al")
    client = await server.client()
    batch = [
        {"type": "connect", "id": 1, "token": make_token("al")},
        {"type": "subscribe", "id": 2, "session": sid},
        {"type": "ping", "id": 3},
        {"type": "send", "id": 4, **message("hi", session=sid)},
    ]
    await client.send(json.dumps(batch))
    replies = [await client.next(lambda f: "re" in f) for _ in range(4)]
    assert [(r["re"], r["type"]) for r in replies] == [
        (1, "connected"),
        (2, "subscribed"),
        (3, "pong"),
        (4, "ack"),
    ]
    await client.close()


async def test_requests_behind_a_subscribe_wait_for_it(server: Server) -> None:
    """A ping sent in the same frame as a subscribe is answered after `subscribed`."""
    sid = await server.create_session("al")
    client = await server.client("al")
    await client.send(
        json.dumps([{"type": "subscribe", "id": 1, "session": sid}, {"type": "ping", "id": 2}])
    )
    replies = [await client.next(lambda f: "re" in f) for _ in range(2)]
    assert [r["type"] for r in replies] == ["subscribed", "pong"]
    await client.close()


async def test_pipelined_sends_in_one_batch_are_acked_in_order(server: Server) -> None:
    sid = await server.create_session("al")
    client = await server.client("al")
    await client.subscribe(sid)
    sends = [{"id": 100 + n, **message(f"m{n}", session=sid)} for n in range(40)]
    await client.send(json.dumps(sends[:20]))
    await client.send(json.dumps(sends[20:]))
    acks = [await client.next(lambda f: f.get("type") == "ack") for _ in range(40)]
    assert [a["re"] for a in acks] == [100 + n for n in range(40)]
    assert [a["seq"] for a in acks] == sorted(a["seq"] for a in acks)
    await client.close()


@pytest.fixture
async def strict_server(tmp_path: Path) -> AsyncIterator[Server]:
    async with running_server(tmp_path, rate_limit=1.0, rate_burst=1, rate_strikes=5) as s:
        yield s


async def test_every_rate_limited_error_carries_retry_after_even_the_last_before_4008(
    strict_server: Server,
) -> None:
    server = strict_server
    sid = await server.create_session("al")
    client = await server.client("al")
    await client.send(json.dumps([{"id": 10 + n, **message("x", session=sid)} for n in range(20)]))
    frames = await frames_until_closed(client)
    limited = [f for f in frames if f.get("code") == "rate_limited"]
    assert len(limited) >= 5
    assert all(isinstance(f.get("retry_after_ms"), int) for f in limited), limited
    assert all(f["retry_after_ms"] > 0 for f in limited)
    assert limited[-1]["message"] == "rate limit persistently exceeded"
    assert client.closed.result()[0] == 4008


async def test_frames_sent_behind_a_pending_connect_are_answered_after_connected(
    server: Server,
) -> None:
    client = await server.client()
    token = make_token("al")
    await client.send(json.dumps({"type": "connect", "id": 1, "token": token}))
    await client.send(json.dumps([{"type": "ping", "id": 2 + n} for n in range(50)]))
    replies = [await client.next(lambda f: "re" in f) for _ in range(51)]
    assert replies[0]["type"] == "connected"
    assert [r["re"] for r in replies[1:]] == [2 + n for n in range(50)]
    await client.close()
