"""Malformed input on a live WebSocket: bad JSON, binary frames, deep nesting, huge
numbers, a wrong type in every field of every request, and frames that break RFC 6455.

JSON-level garbage is answered with `bad_request` and the connection goes on (a ping
after it is answered); frame-level violations close with the RFC's code. Nothing logs an
error, and the whole barrage leaves the server's memory where it was.
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tests.security.attacks import KNOWN_HOLES, RSS_BUDGET_MIB, ServerErrors, known_hole
from tests.security.memory import sampled_rss
from tests.server.harness import Client, Frame, RawClient, Server, make_token, running_server
from tidings.protocol.messages import REQUEST_TYPES

#: Text frames that are not JSON a server can read, by name.
BAD_JSON: dict[str, str] = {
    "empty": "",
    "whitespace": "  \n\t ",
    "truncated object": '{"type": "ping", "id": 1',
    "trailing comma": '{"type": "ping", "id": 1,}',
    "single quotes": "{'type': 'ping', 'id': 1}",
    "bare word": "ping",
    "NaN": '{"type": "ping", "id": NaN}',
    "Infinity": '{"type": "ping", "id": Infinity}',
    "comment": '{"type": "ping", "id": 1 /* hi */}',
    "two values": '{"type": "ping", "id": 1}{"type": "ping", "id": 2}',
    "byte order mark": '\ufeff{"type": "ping", "id": 1}',
    "lone surrogate escape": '{"type": "ping", "id": 1, "x": "\\ud800"}',
    "control character in a string": '{"type": "ping", "id": 1, "x": "a\x01b"}',
    "a string": '"ping"',
    "a number": "42",
    "null": "null",
    "true": "true",
    "empty array": "[]",
    "array of garbage": "[1, 2, 3]",  # a batch: one error per item
    "object without type": '{"id": 1}',
    "type not a string": '{"type": 1, "id": 1}',
    "unknown type": '{"type": "sudo", "id": 1}',
    "type with a NUL": '{"type": "ping\\u0000", "id": 1}',
    "duplicate keys": '{"type": "ping", "type": "sudo", "id": 1}',
    "deep array": "[" * 60_000,
    "deep object": '{"a":' * 20_000,
    "deep data": '{"type": "signal", "session": "s", "name": "n", "data": '
    + '{"a":' * 40
    + "{}"
    + "}" * 40
    + "}",
    "4000-digit id": '{"type": "ping", "id": ' + "9" * 4000 + "}",
    "id above 2^53": '{"type": "ping", "id": 9007199254740993}',
    "id 2^64": '{"type": "ping", "id": 18446744073709551616}',
    "negative id": '{"type": "ping", "id": -1}',
    "float id": '{"type": "ping", "id": 1.5}',
    "1e400 id": '{"type": "ping", "id": 1e400}',
}


def _answer_codes(frames: list[Frame]) -> list[str]:
    return [f"{f['type']}:{f.get('code', '')}" for f in frames]


async def _until_pong(client: Client) -> list[Frame]:
    """Send a ping; every frame that arrives before its answer (which proves the
    connection still serves requests: a pong, or before `connect` an `unauthorized`)."""
    answer = await client.request({"type": "ping"})
    assert answer["type"] == "pong" or answer.get("code") == "unauthorized", answer
    out = []
    while not client.inbox.empty():
        out.append(client.inbox.get_nowait())
    return out


async def test_every_kind_of_bad_json_is_a_bad_request_and_the_connection_goes_on(
    tmp_path: Path, server_errors: ServerErrors
) -> None:
    # A frame limit that lets the deep-nesting cases through whole.
    async with running_server(tmp_path, max_frame=1 << 20) as server:
        client = await server.client("alice")
        seen = {}
        for name, text in BAD_JSON.items():
            await client.send(text)
            seen[name] = _answer_codes(await _until_pong(client))
        expected = {name: ["error:bad_request"] for name in BAD_JSON}
        expected["array of garbage"] = ["error:bad_request"] * 3
        assert seen == expected
        await client.close()
    assert not server_errors.lines()


async def test_every_kind_of_bad_json_before_connect_gets_one_unauthorized_and_close_4001(
    tmp_path: Path, server_errors: ServerErrors
) -> None:
    async with running_server(tmp_path, max_frame=1 << 20) as server:
        seen = {}
        for name, text in BAD_JSON.items():
            client = await server.client()
            await client.send(text)
            seen[name] = (await client.wait_closed())[0], _answer_codes(_drain(client))
        assert seen == {name: (4001, ["error:unauthorized"]) for name in BAD_JSON}
    assert not server_errors.lines()


def _drain(client: Client) -> list[Frame]:
    out = []
    while not client.inbox.empty():
        out.append(client.inbox.get_nowait())
    return out


async def test_binary_frames_are_read_as_json_or_refused_as_bad_requests(
    server: Server, server_errors: ServerErrors
) -> None:
    client = await server.client("alice")
    await client.ws.send(json.dumps({"type": "ping", "id": 77}).encode())
    assert [f["type"] for f in await _until_pong(client)] == ["pong"]
    for payload in (b"\xff\xfe\xfd", os.urandom(512), b"\x00" * 100, b'{"type":"ping","id":\xff}'):
        await client.ws.send(payload)
        assert _answer_codes(await _until_pong(client)) == ["error:bad_request"]
    await client.close()
    assert not server_errors.lines()


async def test_huge_numbers_where_numbers_belong_are_answered_without_an_internal_error(
    server: Server, server_errors: ServerErrors
) -> None:
    session = await server.create_session("alice")
    client = await server.client("alice")
    # The largest seq a store holds is past the head: the reply carries the current state.
    reply = await client.request({"type": "subscribe", "session": session, "after": 2**63 - 1})
    assert reply["type"] == "subscribed", reply
    for after in (2**63, 2**64, 10**400, 10**4000):
        # Beyond any seq: bad_request, as over HTTP (issue 10 point 7).
        reply = await client.request({"type": "subscribe", "session": session, "after": after})
        assert reply["code"] == "bad_request", reply
    await client.close()
    assert not server_errors.lines()


WRONG_VALUES: tuple[Any, ...] = (
    None,
    True,
    0,
    -1,
    2**53 + 1,
    2**64,
    1.5,
    "",
    "x",
    "x" * 200,
    [],
    [1],
    {},
    {"a": 1},
)


#: Fields for which none of WRONG_VALUES is valid, whatever its type.
ALWAYS_BAD = {("send", "kind"), ("send", "data")}


def _valid_request(kind: str, session: str) -> Frame:
    base: dict[str, Frame] = {
        "connect": {"token": "t"},
        "refresh": {"token": "t"},
        "subscribe": {"session": session, "after": 0},
        "unsubscribe": {"session": session},
        "send": {
            "session": session,
            "client_id": "c",
            "kind": "message",
            "data": {"content": "hi"},
        },
        "signal": {"session": session, "name": "typing", "data": {}},
        "cancel": {"session": session, "message_id": "m_1"},
        "ping": {},
    }
    return {"type": kind, "id": 1, **base[kind]}


def _fits(value: Any, annotation: Any) -> bool:
    """The oracle: whether `value` is of the field's declared type (msgspec's rules)."""
    try:
        msgspec.convert(value, annotation)
    except msgspec.ValidationError:
        return False
    return True


def _valid_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 2**53


async def _answers(client: Client, frame: Frame) -> list[Frame]:
    """What the server answers `frame` with. A request with a valid id is answered by a
    frame naming it (some run on the connection's worker, after later pings); a signal
    or a frame whose id is itself wrong is answered, if at all, before a following pong."""
    if frame["type"] == "signal" or not _valid_id(frame.get("id")):
        await client.send(frame)
        return await _until_pong(client)
    reply: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
    client._waiting[frame["id"]] = reply
    try:
        await client.send(frame)
        return [await asyncio.wait_for(reply, 5)]
    finally:
        client._waiting.pop(frame["id"], None)


async def test_a_wrong_type_in_any_field_of_any_request_is_a_bad_request(
    tmp_path: Path, server_errors: ServerErrors
) -> None:
    async with running_server(tmp_path, rate_limit=0) as server:
        session = await server.create_session("alice")
        client = await server.client("alice")
        ids = iter(range(1000, 1_000_000))
        mismatches = []
        tried = 0
        for kind, cls in REQUEST_TYPES.items():
            for field in msgspec.structs.fields(cls):
                for value in WRONG_VALUES:
                    frame = _valid_request(kind, session)
                    frame["id"] = next(ids)
                    frame[field.name] = value
                    answers = await _answers(client, frame)
                    tried += 1
                    # The error names the request's id whenever it is an integer (even an
                    # invalid one: it is the client's only way to match the refusal).
                    raw_id = frame["id"]
                    re = (
                        raw_id if isinstance(raw_id, int) and not isinstance(raw_id, bool) else None
                    )
                    bad = [a for a in answers if a.get("code") == "bad_request"]
                    # A connect while connected is a bad request whatever its fields, and
                    # no value tried is a send kind or a message's data.
                    always_bad = kind == "connect" or (kind, field.name) in ALWAYS_BAD
                    expect_bad = always_bad or not _fits(value, field.type)
                    if bool(bad) != expect_bad or any(a.get("re") != re for a in bad):
                        mismatches.append((kind, field.name, value, answers))
                    if any(a.get("code") == "internal" for a in answers):
                        mismatches.append((kind, field.name, value, answers))
        assert tried > 200
        assert not mismatches
        await client.close()
    assert not server_errors.lines()


def _frame(
    opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, mask: bool = True
) -> bytes:
    """One WebSocket frame built by hand (RFC 6455 §5.2), masked unless told otherwise."""
    head = bytes(((0x80 if fin else 0) | rsv << 4 | opcode,))
    length = len(payload)
    mask_bit = 0x80 if mask else 0
    if length < 126:
        head += bytes((mask_bit | length,))
    elif length < 65536:
        head += bytes((mask_bit | 126,)) + struct.pack("!H", length)
    else:
        head += bytes((mask_bit | 127,)) + struct.pack("!Q", length)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


PING = b'{"type":"ping","id":1}'

#: Frames that break RFC 6455, and the close code each must get (1002: protocol error).
VIOLATIONS: dict[str, tuple[bytes, int]] = {
    "an unmasked client frame": (_frame(0x1, PING, mask=False), 1002),
    "reserved opcode 0x3": (_frame(0x3, b"x"), 1002),
    "reserved control opcode 0xB": (_frame(0xB, b""), 1002),
    "RSV1 without an extension": (_frame(0x1, PING, rsv=4), 1002),
    "RSV3": (_frame(0x1, PING, rsv=1), 1002),
    "a fragmented ping": (_frame(0x9, b"x", fin=False), 1002),
    "a ping over 125 bytes": (_frame(0x9, b"x" * 126), 1002),
    "a continuation with no message begun": (_frame(0x0, b"x"), 1002),
    "a text frame inside a fragmented message": (
        _frame(0x1, b'{"type"', fin=False) + _frame(0x1, b"x"),
        1002,
    ),
    "a close frame with a 1-byte payload": (_frame(0x8, b"\x03"), 1002),
    "a close frame with a reserved code": (_frame(0x8, struct.pack("!H", 1005)), 1002),
    # RFC 6455 §8.1: a text message that is not UTF-8 fails the connection with 1007.
    "invalid UTF-8 in a text frame": (_frame(0x1, b'{"type":"ping","id":1,"x":"\xff"}'), 1007),
    # §5.4: control frames may come between fragments; this close is a normal one.
    "a close frame between fragments": (
        _frame(0x1, b'{"type"', fin=False) + _frame(0x8, struct.pack("!H", 1000)),
        1000,
    ),
}


@pytest.mark.parametrize(
    "name", [pytest.param(name, marks=known_hole(name)) for name in VIOLATIONS]
)
async def test_a_frame_that_breaks_rfc_6455_closes_with_the_rfc_code(
    server: Server, name: str, server_errors: ServerErrors
) -> None:
    data, code = VIOLATIONS[name]
    client = await RawClient.open(server.ws_url)
    reply = await client.request({"type": "connect", "token": make_token("alice")})
    assert reply["type"] == "connected"
    try:
        client.writer.write(data)
        await client.writer.drain()
        assert await client.wait_closed(timeout=3) == code
    finally:
        client.abort()
        await client.close()
    # The server goes on serving others.
    other = await server.client("bob")
    assert (await other.request({"type": "ping"}))["type"] == "pong"
    await other.close()
    assert not server_errors.lines()


async def test_a_barrage_of_malformed_input_leaves_memory_bounded(tmp_path: Path) -> None:
    async with running_server(tmp_path, max_frame=1 << 20) as server:
        async with sampled_rss() as rss:
            for _ in range(5):
                client = await server.client("alice")
                for text in BAD_JSON.values():
                    await client.send(text)
                await _until_pong(client)
                await client.close()
                for name, (data, code) in VIOLATIONS.items():
                    if name in KNOWN_HOLES:
                        continue
                    raw = await RawClient.open(server.ws_url)
                    try:
                        raw.writer.write(data)
                        assert await raw.wait_closed() == code
                    finally:
                        raw.abort()
                        await raw.close()
        assert rss.growth_mib < RSS_BUDGET_MIB, rss.growth_mib
