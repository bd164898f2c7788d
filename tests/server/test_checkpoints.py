"""Checkpoints of the folded session state: a node reopening a session reads the log from
its latest checkpoint, not from seq 1, and ends with the same state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.server.harness import Server, running_server, send_frame
from tidings.backends.sqlite import SqliteStore
from tidings.core.model import Event
from tidings.server.node import wall_clock_ms


class RecordingStore(SqliteStore):
    """The SQLite store, noting where each read of the log starts."""

    def __init__(self, path: Path) -> None:
        super().__init__(str(path), wall_clock_ms)
        self.reads_after: list[int] = []

    async def read(self, session_id: str, after: int, limit: int | None = None) -> list[Event]:
        self.reads_after.append(after)
        return await super().read(session_id, after, limit)


def comparable(snapshot: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in snapshot.items() if k != "presence"}


async def fill(server: Server, sid: str, count: int) -> None:
    client = await server.client("al")
    for i in range(count):
        kind = "card.add" if i % 5 == 0 else "message"
        data = {"title": f"t{i}", "content": "c"} if kind == "card.add" else {"content": f"m{i}"}
        ack = await client.request(send_frame(sid, kind, data, f"f{i}"))
        assert ack["type"] == "ack", ack
    await client.close()


async def test_a_reopened_session_folds_from_its_checkpoint_to_the_same_state(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path, rate_limit=0) as server:
        assert server.node is not None
        server.node.hub.checkpoint_every = 10
        sid = await server.create_session("al", title="Long")
        await fill(server, sid, 25)
        channel = server.node.hub.channels[sid]
        if channel.checkpoint_task is not None:
            await channel.checkpoint_task
        saved = await server.node.store.load_checkpoint(sid)
        assert saved is not None
        assert saved[0] >= 20
        before = (await (await server.client("al")).subscribe(sid))["snapshot"]

    store = RecordingStore(tmp_path / "tidings.db")
    async with running_server(tmp_path, store=store) as server:
        after = (await (await server.client("al")).subscribe(sid))["snapshot"]
    assert comparable(after) == comparable(before)
    assert after["seq"] == 26
    assert store.reads_after
    assert min(store.reads_after) >= 20  # never from seq 1


async def test_a_damaged_checkpoint_is_ignored(tmp_path: Path) -> None:
    async with running_server(tmp_path, rate_limit=0) as server:
        assert server.node is not None
        sid = await server.create_session("al", title="Kept")
        await fill(server, sid, 6)
        before = (await (await server.client("al")).subscribe(sid))["snapshot"]
        await server.node.store.save_checkpoint(sid, 4, b"not json at all")
        await server.node.store.save_checkpoint(sid, 5, b'{"session_id": "x"}')

    async with running_server(tmp_path) as server:
        after = (await (await server.client("al")).subscribe(sid))["snapshot"]
    assert comparable(after) == comparable(before)
    assert after["title"] == "Kept"
