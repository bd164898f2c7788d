"""Bad input gets `bad_request`, and the connection keeps working."""

from __future__ import annotations

import json

import pytest

from tests.server.harness import Server, message, send_frame


@pytest.mark.parametrize(
    ("frame", "needle"),
    [
        ("{not json", "malformed"),
        ('{"type": "teleport", "id": 7}', "unknown type"),
        ('{"id": 7}', "type"),
        ('{"type": "subscribe", "id": 7, "session": 42}', "$.session"),
        (
            '{"type": "send", "id": 7, "session": "s", "client_id": "c", "kind": "message", '
            '"data": "text"}',
            "$.data",
        ),
        ('{"type": "ping", "id": "seven"}', "$.id"),
        ("[]", "empty batch"),
        ("[" * 5000 + "]" * 5000, "nested"),
    ],
)
async def test_bad_frames_get_bad_request_and_the_connection_keeps_working(
    server: Server, frame: str, needle: str
) -> None:
    client = await server.client("al")
    await client.send(frame)
    error = await client.next(lambda f: f.get("type") == "error")
    assert error["code"] == "bad_request"
    assert needle in error["message"]
    if '"id": 7' in frame:
        assert error.get("re") == 7
    pong = await client.request({"type": "ping"})
    assert pong["type"] == "pong"
    await client.close()


async def test_a_batch_of_requests_is_answered_request_by_request(server: Server) -> None:
    client = await server.client("al")
    await client.send(
        json.dumps(
            [{"type": "ping", "id": 501}, {"type": "nope", "id": 502}, {"type": "ping", "id": 503}]
        )
    )
    got = [await client.next() for _ in range(3)]
    assert [(f["type"], f["re"]) for f in got] == [("pong", 501), ("error", 502), ("pong", 503)]
    await client.close()


async def test_unknown_send_kinds_and_missing_content_are_bad_requests(server: Server) -> None:
    sid = await server.create_session("al")
    client = await server.client("al")
    reply = await client.request(send_frame(sid, "telepathy", {}, "a"))
    assert reply["code"] == "bad_request"
    reply = await client.request(send_frame(sid, "message", {}, "b"))
    assert reply["code"] == "bad_request"
    await client.close()


async def test_a_field_over_its_limit_is_too_large(server: Server) -> None:
    sid = await server.create_session("al")
    client = await server.client("al")
    reply = await client.request(message("x" * 40_000, "big", session=sid))
    assert reply["code"] == "too_large"
    await client.close()
