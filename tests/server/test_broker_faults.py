"""The broker carries news, not truth: lost or repeated frames cost nothing but latency."""

from __future__ import annotations

from pathlib import Path

from tests.server.harness import message, running_server, server_config
from tidings.backends.memory_broker import MemoryBroker
from tidings.server.node import Node


class FaultyBroker(MemoryBroker):
    """Drops every third event frame and delivers every fifth one twice."""

    def publish(
        self, session_id: str, seq: int | None, frame: bytes, origin: str | None = None
    ) -> None:
        if seq is not None and seq % 3 == 0:
            return
        super().publish(session_id, seq, frame, origin)
        if seq is not None and seq % 5 == 0:
            super().publish(session_id, seq, frame, origin)


async def test_subscribers_get_every_event_once_in_order_through_a_faulty_broker(
    tmp_path: Path,
) -> None:
    config = server_config(tmp_path, rate_limit=0)
    node = Node(config, broker=FaultyBroker())
    async with running_server(tmp_path, node=node) as server:
        sid = await server.create_session("al")
        watcher = await server.client("al")
        await watcher.subscribe(sid)
        writer = await server.client("al")
        for i in range(30):
            ack = await writer.request(message(f"m{i}", f"f{i}", session=sid))
            assert ack["type"] == "ack"
        # The last event (seq 31) reaches the watcher directly, 30 (dropped) through the
        # gap it reveals.
        events = await watcher.events(sid, 30)
        assert [e["seq"] for e in events] == list(range(2, 32))
        assert [e["data"]["message"]["content"] for e in events] == [f"m{i}" for i in range(30)]
        await watcher.close()
        await writer.close()
