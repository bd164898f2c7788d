"""Ephemeral signals and presence."""

from __future__ import annotations

import asyncio

from tests.server.harness import Server


async def test_a_signal_reaches_the_other_subscribers_not_the_sender(server: Server) -> None:
    sid = await server.create_session("al")
    await server.add_member("al", sid, "bo", "member")
    al = await server.client("al")
    bo = await server.client("bo")
    await al.subscribe(sid)
    await bo.subscribe(sid)
    await al.send({"type": "signal", "session": sid, "name": "typing", "data": {"typing": True}})
    got = await bo.next(lambda f: f.get("type") == "signal")
    assert got == {
        "type": "signal",
        "session": sid,
        "name": "typing",
        "data": {"typing": True},
        "from": "al",
    }
    await al.request({"type": "ping"})
    assert all(f.get("type") != "signal" for f in list(al.inbox._queue))  # type: ignore[attr-defined]
    for c in (al, bo):
        await c.close()


async def test_signals_need_a_subscription(server: Server) -> None:
    sid = await server.create_session("al")
    al = await server.client("al")
    reply = await al.request({"type": "signal", "session": sid, "name": "typing", "data": {}})
    assert (reply["type"], reply["code"]) == ("error", "forbidden")
    await al.close()


async def test_viewers_may_not_signal(server: Server) -> None:
    sid = await server.create_session("al")
    await server.add_member("al", sid, "vi", "viewer")
    vi = await server.client("vi")
    await vi.subscribe(sid)
    reply = await vi.request({"type": "signal", "session": sid, "name": "typing", "data": {}})
    assert reply["code"] == "forbidden"
    await vi.close()


async def test_presence_follows_subscriptions_and_disconnects(server: Server) -> None:
    sid = await server.create_session("al")
    await server.add_member("al", sid, "bo", "member")
    al = await server.client("al")
    first = await al.subscribe(sid)
    assert first["snapshot"]["presence"] == []
    online = await al.next(lambda f: f.get("type") == "presence")
    assert online == {"type": "presence", "session": sid, "online": ["al"]}
    bo = await server.client("bo")
    reply = await bo.subscribe(sid)
    assert reply["snapshot"]["presence"] == ["al"]
    assert (await al.next(lambda f: f.get("type") == "presence"))["online"] == ["al", "bo"]
    # A second connection of the same user changes nothing; closing the last one does.
    bo2 = await server.client("bo")
    await bo2.subscribe(sid)
    await bo.close()
    await asyncio.sleep(0.2)
    assert all(f.get("type") != "presence" for f in list(al.inbox._queue))  # type: ignore[attr-defined]
    await bo2.close()
    assert (await al.next(lambda f: f.get("type") == "presence"))["online"] == ["al"]
    await al.close()
