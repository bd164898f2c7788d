"""The AsyncAPI document of `/v1/ws` covers every frame type and validates real frames."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from websockets.asyncio.client import ClientConnection, connect

import tidings
from tests.server.harness import Server, make_token, message, running_server
from tidings.protocol import messages
from tidings.protocol.asyncapi import document, reply_types

DOC = document(tidings.__version__)


def _validator(name: str) -> jsonschema.protocols.Validator:
    schema = {"$ref": f"#/components/schemas/{name}", "components": DOC["components"]}
    validator: jsonschema.protocols.Validator = jsonschema.Draft202012Validator(schema)
    return validator


def _names(operation: str) -> set[str]:
    refs = DOC["operations"][operation]["messages"]
    return {ref["$ref"].rsplit("/", 1)[1] for ref in refs}


def test_the_document_is_asyncapi_3() -> None:
    assert DOC["asyncapi"] == "3.0.0"
    assert DOC["channels"]["ws"]["address"] == "/v1/ws"


def test_every_request_type_the_server_parses_is_a_received_message() -> None:
    received = _names("receiveRequests")
    assert received == {cls.__name__ for cls in messages.REQUEST_TYPES.values()}
    for tag, cls in messages.REQUEST_TYPES.items():
        payload = DOC["components"]["schemas"][cls.__name__]
        assert payload["properties"]["type"]["enum"] == [tag]


def test_every_frame_type_the_server_sends_is_a_sent_message() -> None:
    assert _names("sendFrames") == {cls.__name__ for cls in reply_types()}
    assert "Event" in _names("sendFrames")


def test_every_channel_message_reference_resolves() -> None:
    for name, ref in DOC["channels"]["ws"]["messages"].items():
        assert ref["$ref"] == f"#/components/messages/{name}"
        payload = DOC["components"]["messages"][name]["payload"]["$ref"]
        assert payload.rsplit("/", 1)[1] in DOC["components"]["schemas"]


@pytest.mark.parametrize(
    ("name", "frame"),
    [
        ("Connect", {"type": "connect", "id": 1, "token": "t"}),
        ("Send", {"type": "send", "id": 2, "session": "s", "client_id": "c", "kind": "message"}),
        ("Ping", {"type": "ping", "id": 3}),
    ],
)
def test_request_schemas_accept_valid_requests(name: str, frame: dict[str, Any]) -> None:
    _validator(name).validate(frame)


def test_request_schemas_refuse_a_request_without_its_id() -> None:
    assert not _validator("Subscribe").is_valid({"type": "subscribe", "session": "s"})


async def _recv_until(ws: ClientConnection, seen: list[dict[str, Any]], frame_type: str) -> None:
    async with asyncio.timeout(10):
        while not any(frame["type"] == frame_type for frame in seen):
            value = json.loads(await ws.recv())
            seen.extend(value if isinstance(value, list) else [value])


async def _frames_of_a_short_session(server: Server) -> list[dict[str, Any]]:
    """Every frame the server sent one client over connect, subscribe, a message with its
    echo reply, a ping, a refused subscribe and a signal from another member."""
    session = await server.create_session("alice", agent="echo")
    await server.add_member("alice", session, "bob", "member")
    seen: list[dict[str, Any]] = []
    bob_saw: list[dict[str, Any]] = []
    async with connect(server.ws_url) as ws, connect(server.ws_url) as bob:
        await bob.send(json.dumps({"type": "connect", "id": 1, "token": make_token("bob")}))
        await ws.send(json.dumps({"type": "connect", "id": 1, "token": make_token("alice")}))
        await _recv_until(bob, bob_saw, "connected")
        await bob.send(json.dumps({"type": "subscribe", "id": 2, "session": session}))
        await _recv_until(ws, seen, "connected")
        await _recv_until(bob, bob_saw, "subscribed")
        requests: list[dict[str, Any]] = [
            {"type": "subscribe", "id": 2, "session": session},
            message("hello there", session=session) | {"id": 3},
            {"type": "ping", "id": 4},
            {"type": "subscribe", "id": 5, "session": "s_0000000000000000"},
        ]
        for request in requests:
            await ws.send(json.dumps(request))
        await _recv_until(ws, seen, "subscribed")
        signal = {"type": "signal", "session": session, "name": "typing", "data": {}}
        await bob.send(json.dumps(signal))
        await _recv_until(ws, seen, "signal")
        async with asyncio.timeout(10):
            while not any(frame.get("kind") == "message.completed" for frame in seen):
                value = json.loads(await ws.recv())
                seen.extend(value if isinstance(value, list) else [value])
    return seen


async def test_every_frame_a_live_server_sends_validates_against_its_schema(
    tmp_path: Path,
) -> None:
    by_type = {str(cls.__struct_config__.tag): cls.__name__ for cls in reply_types()}
    async with running_server(tmp_path) as server:
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            served = (await http.get("/asyncapi.json")).json()
        seen = await _frames_of_a_short_session(server)
    assert served == DOC
    assert {frame["type"] for frame in seen} >= {
        "connected",
        "subscribed",
        "ack",
        "event",
        "pong",
        "error",
        "presence",
        "stream",
        "signal",
    }
    for frame in seen:
        name = by_type[frame["type"]]
        _validator(name).validate(frame)
        # Every field the server sends is documented (schemas allow extra fields, so
        # that clients ignore unknown ones; the document itself must not lag behind).
        assert set(frame) <= set(DOC["components"]["schemas"][name]["properties"]), frame
