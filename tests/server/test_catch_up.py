"""Issue 10 point 4: a resume at any distance succeeds. The missed events are read and
sent in pages as the socket drains, under the outbound bound, while other connections
stay served and live events queue behind the catch-up in order."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.server.harness import Server, message, running_server

#: Over 5 MiB of missed events, resumed through a 128 KiB outbound bound.
EVENTS = 180
CONTENT = 30_000
QUEUE_BYTES = 128 * 1024


async def _post_many(server: Server, sid: str) -> None:
    writer = await server.client("al")
    body = "x" * CONTENT
    replies = []
    for i in range(EVENTS):
        replies.append(asyncio.ensure_future(writer.request(message(f"{i}:{body}", session=sid))))
    for reply in replies:
        assert (await reply)["type"] == "ack"
    await writer.close()


async def test_a_resume_past_5_mib_of_missed_events_gets_every_event_once_in_order(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path, rate_limit=0, queue_bytes=QUEUE_BYTES) as server:
        sid = await server.create_session("al")
        await _post_many(server, sid)
        head = 1 + EVENTS
        reader = await server.client("al")
        pinger = await server.client("al")
        live = await server.client("al")
        subscribed = await reader.subscribe(sid, after=0)
        assert subscribed["recovered"] is True
        # Live events posted while the catch-up runs, and pings of another client.
        for i in range(3):
            assert (await live.request(message(f"live {i}", session=sid)))["type"] == "ack"
        pongs = 0
        pinging = True

        async def ping() -> None:
            nonlocal pongs
            while True:
                # Each pong must come within the request's timeout while the catch-up runs.
                assert (await pinger.request({"type": "ping"}))["type"] == "pong"
                pongs += 1
                if not pinging:
                    return
                await asyncio.sleep(0.01)

        pings = asyncio.ensure_future(ping())
        frames = await reader.events(sid, head + 3, timeout=30)
        pinging = False
        await pings
        assert [f["seq"] for f in frames] == list(range(1, head + 4))
        assert pongs > 0
        assert not reader.closed.done()
        for client in (reader, pinger, live):
            await client.close()


async def test_an_sse_resume_far_behind_gets_every_event_once_in_order(tmp_path: Path) -> None:
    async with running_server(tmp_path, rate_limit=0, queue_bytes=QUEUE_BYTES) as server:
        sid = await server.create_session("al")
        await _post_many(server, sid)
        seen: list[int] = []
        async with (
            server.http("al") as http,
            http.stream("GET", f"/v1/sessions/{sid}/sse", headers={"Last-Event-ID": "0"}) as r,
        ):
            async for line in r.aiter_lines():
                if line.startswith("id: "):
                    seen.append(int(line[4:]))
                    if len(seen) == 1 + EVENTS:
                        break
        assert seen == list(range(1, 2 + EVENTS))
