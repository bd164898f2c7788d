"""The session log over real sockets: order, resume, idempotency, compare-and-set."""

from __future__ import annotations

import asyncio

from tests.server.harness import Client, Server, message, send_frame
from tidings.backends.memory_broker import MemoryBroker


async def test_a_send_is_acked_after_storage_and_echoed_to_the_sender(server: Server) -> None:
    sid = await server.create_session("al")
    client = await server.client("al")
    await client.subscribe(sid)
    ack = await client.request({**message("hi", "tmp_1"), "session": sid})
    assert ack == {
        "type": "ack",
        "re": ack["re"],
        "session": sid,
        "client_id": "tmp_1",
        "seq": 2,
        "event_id": "m_2",
        "duplicate": False,
    }
    [event] = await client.events(sid, 1)
    assert event["seq"] == 2
    assert event["kind"] == "message.created"
    assert event["client_id"] == "tmp_1"
    assert event["author"] == "al"
    msg = event["data"]["message"]
    assert (msg["id"], msg["role"], msg["content"], msg["status"]) == (
        "m_2",
        "user",
        "hi",
        "complete",
    )
    assert msg["created_at"] == event["ts"]
    await client.close()


async def test_subscribe_without_after_carries_a_snapshot(server: Server) -> None:
    sid = await server.create_session("al", title="Plans")
    client = await server.client("al")
    await client.request({**message("one"), "session": sid})
    await client.request(
        send_frame(sid, "card.add", {"title": "Spec", "content": "abc", "source": "doc"}, "k1")
    )
    reply = await client.subscribe(sid)
    snap = reply["snapshot"]
    assert reply["seq"] == 3
    assert snap["title"] == "Plans"
    assert snap["members"] == [{"user": "al", "role": "owner"}]
    assert snap["presence"] == ["al"] or snap["presence"] == []
    assert [m["content"] for m in snap["messages"]] == ["one"]
    assert [c["title"] for c in snap["cards"]] == ["Spec"]
    assert snap["stats"]["messages"] == 1
    assert snap["stats"]["cards"] == 1
    await client.close()


async def test_total_order_with_five_writers_and_three_observers(server: Server) -> None:
    sid = await server.create_session("al")
    for n in range(5):
        await server.add_member("al", sid, f"w{n}", "member")
    observers = [await server.client("al") for _ in range(3)]
    for observer in observers:
        await observer.subscribe(sid)
    writers = [await server.client(f"w{n}") for n in range(5)]
    per_writer = 40

    async def write(client: Client, n: int) -> None:
        for i in range(per_writer):
            ack = await client.request({**message(f"w{n}-{i}"), "session": sid})
            assert ack["type"] == "ack", ack

    await asyncio.gather(*(write(c, n) for n, c in enumerate(writers)))
    total = 5 * per_writer
    seen = [await o.events(sid, total) for o in observers]
    sequences = [[e["seq"] for e in events] for events in seen]
    first_seq = sequences[0][0]
    assert sequences[0] == list(range(first_seq, first_seq + total))
    assert sequences[1] == sequences[0] == sequences[2]
    contents = [[e["data"]["message"]["content"] for e in events] for events in seen]
    assert contents[0] == contents[1] == contents[2]
    for n in range(5):  # each writer's own messages keep their order
        mine = [c for c in contents[0] if c.startswith(f"w{n}-")]
        assert mine == [f"w{n}-{i}" for i in range(per_writer)]
    for c in observers + writers:
        await c.close()


async def test_pipelined_sends_from_one_connection_keep_their_order(server: Server) -> None:
    sid = await server.create_session("al")
    client = await server.client("al")
    await client.subscribe(sid)
    for i in range(30):
        await client.send({**message(f"p{i}", f"p{i}"), "session": sid, "id": 1000 + i})
    acks = [await client.next(lambda f: f.get("type") == "ack") for _ in range(30)]
    by_client = {a["client_id"]: a["seq"] for a in acks}
    assert [by_client[f"p{i}"] for i in range(30)] == list(range(2, 32))
    await client.close()


async def test_resume_with_after_yields_exactly_the_missed_events_once(server: Server) -> None:
    sid = await server.create_session("al")
    reader = await server.client("al")
    writer = await server.client("al")
    await reader.subscribe(sid)
    for i in range(5):
        await writer.request({**message(f"a{i}"), "session": sid})
    got = await reader.events(sid, 5)
    last = got[-1]["seq"]
    await reader.close()  # disconnect, and miss some
    for i in range(7):
        await writer.request({**message(f"b{i}"), "session": sid})
    again = await server.client("al")
    reply = await again.subscribe(sid, after=last)
    assert reply["recovered"] is True
    assert reply["snapshot"] is None
    assert reply["seq"] == last + 7
    missed = await again.events(sid, 7)
    assert [e["seq"] for e in missed] == list(range(last + 1, last + 8))
    # Live events follow with no duplicate.
    await writer.request({**message("c"), "session": sid})
    [live] = await again.events(sid, 1)
    assert live["seq"] == last + 8
    await asyncio.sleep(0.1)
    assert again.inbox.empty()
    for c in (writer, again):
        await c.close()


async def test_resume_racing_live_sends_has_no_gap_and_no_duplicate(server: Server) -> None:
    sid = await server.create_session("al")
    writer = await server.client("al")
    # 35 sends: within the default burst of 40, so none is rate-limited.
    for i in range(10):
        await writer.request({**message(f"x{i}"), "session": sid})
    sends = asyncio.gather(
        *(writer.request({**message(f"y{i}"), "session": sid}) for i in range(25))
    )
    reader = await server.client("al")
    reply = await reader.subscribe(sid, after=5)
    assert all(ack["type"] == "ack" for ack in await sends)
    head = 1 + 10 + 25
    events = await reader.events(sid, head - 5)
    assert [e["seq"] for e in events] == list(range(6, head + 1))
    assert reply["seq"] >= 11
    await asyncio.sleep(0.1)
    # Nothing more of the log: no duplicate. (The reader's own `presence` frame may come
    # after the last caught-up event, when no live event follows it.)
    left = [reader.inbox.get_nowait() for _ in range(reader.inbox.qsize())]
    assert [frame for frame in left if frame["type"] != "presence"] == []
    await writer.close()
    await reader.close()


async def test_resume_from_beyond_the_head_falls_back_to_a_snapshot(server: Server) -> None:
    sid = await server.create_session("al")
    client = await server.client("al")
    reply = await client.subscribe(sid, after=999)
    assert reply["recovered"] is False
    assert reply["snapshot"]["seq"] == 1
    await client.close()


async def test_a_duplicate_client_id_over_ws_and_http_is_one_event(server: Server) -> None:
    sid = await server.create_session("al")
    client = await server.client("al")
    first = await client.request({**message("once", "dup-1"), "session": sid})
    again = await client.request({**message("twice?", "dup-1"), "session": sid})
    assert first["duplicate"] is False
    assert again["duplicate"] is True
    assert (again["seq"], again["event_id"]) == (first["seq"], first["event_id"])
    async with server.http("al") as http:
        response = await http.post(
            f"/v1/sessions/{sid}/events",
            json={"client_id": "dup-1", "kind": "message", "data": {"content": "thrice?"}},
        )
        assert response.status_code == 200
        body = response.json()
        assert body == {
            "session": sid,
            "client_id": "dup-1",
            "seq": first["seq"],
            "event_id": first["event_id"],
            "duplicate": True,
        }
        events = (await http.get(f"/v1/sessions/{sid}/events")).json()["events"]
    assert [e["client_id"] for e in events if e.get("client_id") == "dup-1"] == ["dup-1"]
    assert events[-1]["data"]["message"]["content"] == "once"
    await client.close()


async def test_compare_and_set_conflicts_when_the_version_moved_on(server: Server) -> None:
    sid = await server.create_session("al")
    client = await server.client("al")
    await client.subscribe(sid)
    ok = await client.request(
        send_frame(sid, "session.update", {"changes": {"title": "A"}, "base_version": 0}, "u1")
    )
    assert ok["type"] == "ack"
    [event] = await client.events(sid, 1)
    assert event["kind"] == "session.updated"
    assert event["data"] == {"changes": {"title": "A"}, "version": 1}
    stale = await client.request(
        send_frame(sid, "session.update", {"changes": {"title": "B"}, "base_version": 0}, "u2")
    )
    assert stale["type"] == "error"
    assert stale["code"] == "conflict"
    assert stale["version"] == 1
    # Without base_version, the later write wins field by field.
    await client.request(
        send_frame(sid, "session.update", {"changes": {"status": "archived"}}, "u3")
    )
    reply = await (await server.client("al")).subscribe(sid)
    assert (reply["snapshot"]["title"], reply["snapshot"]["status"]) == ("A", "archived")
    assert reply["snapshot"]["version"] == 2
    await client.close()


async def test_viewers_may_read_but_not_send(server: Server) -> None:
    sid = await server.create_session("al")
    await server.add_member("al", sid, "vic", "viewer")
    viewer = await server.client("vic")
    await viewer.subscribe(sid)
    reply = await viewer.request({**message("let me in"), "session": sid})
    assert (reply["type"], reply["code"]) == ("error", "forbidden")
    await viewer.close()


async def test_strangers_may_neither_subscribe_nor_send(server: Server) -> None:
    sid = await server.create_session("al")
    stranger = await server.client("zed")
    reply = await stranger.request({"type": "subscribe", "session": sid})
    assert (reply["type"], reply["code"]) == ("error", "forbidden")
    reply = await stranger.request({**message("hi"), "session": sid})
    assert (reply["type"], reply["code"]) == ("error", "forbidden")
    await stranger.close()


async def test_an_unknown_session_is_not_found(server: Server) -> None:
    client = await server.client("al")
    reply = await client.request({"type": "subscribe", "session": "s_nope"})
    assert (reply["type"], reply["code"]) == ("error", "not_found")
    reply = await client.request({**message("hi"), "session": "s_nope"})
    assert (reply["type"], reply["code"]) == ("error", "not_found")
    await client.close()


async def test_removing_a_member_ends_their_subscription_at_once(server: Server) -> None:
    sid = await server.create_session("al")
    await server.add_member("al", sid, "bo", "member")
    bo = await server.client("bo")
    await bo.subscribe(sid)
    async with server.http("al") as http:
        response = await http.delete(f"/v1/sessions/{sid}/members/bo")
        assert response.status_code == 200
    error = await bo.next(lambda f: f.get("type") == "error")
    assert error["code"] == "forbidden"
    assert error["session"] == sid
    reply = await bo.request({**message("still here?"), "session": sid})
    assert reply["code"] == "forbidden"
    await bo.close()


async def test_unsubscribe_stops_the_events(server: Server) -> None:
    sid = await server.create_session("al")
    client = await server.client("al")
    writer = await server.client("al")
    await client.subscribe(sid)
    assert (await client.request({"type": "unsubscribe", "session": sid}))["type"] == "ok"
    await writer.request({**message("unseen"), "session": sid})
    await client.request({"type": "ping"})
    assert all(f.get("type") != "event" for f in list(client.inbox._queue))  # type: ignore[attr-defined]
    await client.close()
    await writer.close()


async def test_requests_for_unknown_sessions_leave_nothing_behind(server: Server) -> None:
    assert server.node is not None
    broker = server.node.broker
    assert isinstance(broker, MemoryBroker)
    client = await server.client("al")
    for i in range(20):
        reply = await client.request({"type": "subscribe", "session": f"s_missing{i}"})
        assert reply["code"] == "not_found"
        reply = await client.request({**message("hi"), "session": f"s_missing{i}"})
        assert reply["code"] == "not_found"
    assert not server.node.hub.channels
    assert broker.sessions() == []
    await client.close()
