"""Issue 9 point 1: a member removed while a subscribe, an SSE stream or a long-poll of
theirs is still reading the log gets nothing stored after the removal — on every path.

The race is made deterministic: the store's `read` waits at a gate, the removal happens
while it waits, then the gate opens.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.server.harness import Server, make_token, message, running_server
from tidings.backends.memory import MemoryStore
from tidings.core.model import Event
from tidings.server.node import wall_clock_ms


class GatedStore(MemoryStore):
    """A memory store whose reads, once `close_gate()` is called, wait for `open_gate()`."""

    def __init__(self) -> None:
        super().__init__(wall_clock_ms)
        self.gate: asyncio.Event | None = None
        self.waiting = asyncio.Event()

    def close_gate(self) -> None:
        self.gate = asyncio.Event()
        self.waiting = asyncio.Event()

    def open_gate(self) -> None:
        assert self.gate is not None
        self.gate.set()
        self.gate = None

    async def read(self, session_id: str, after: int, limit: int | None = None) -> list[Event]:
        gate = self.gate
        if gate is not None:
            self.waiting.set()
            await gate.wait()
        return await super().read(session_id, after, limit)


@pytest.fixture
def store() -> GatedStore:
    return GatedStore()


@pytest.fixture
async def server(tmp_path: Path, store: GatedStore) -> AsyncIterator[Server]:
    async with running_server(tmp_path, store=store) as running:
        yield running


async def a_session_bob_reads(server: Server) -> str:
    session = await server.create_session("alice")
    await server.add_member("alice", session, "bob", "member")
    alice = await server.client("alice")
    for n in range(3):
        await alice.request(message(f"before {n}", session=session))
    await alice.close()
    return session


async def remove_bob_then_post(server: Server, session: str) -> None:
    async with server.http("alice") as http:
        (await http.delete(f"/v1/sessions/{session}/members/bob")).raise_for_status()
        body = {"client_id": "after-removal", "kind": "message", "data": {"content": "secret"}}
        (await http.post(f"/v1/sessions/{session}/events", json=body)).raise_for_status()


async def test_a_subscribe_catching_up_when_the_member_is_removed_is_refused(
    server: Server, store: GatedStore
) -> None:
    session = await a_session_bob_reads(server)
    bob = await server.client("bob")
    store.close_gate()
    reply = asyncio.ensure_future(
        bob.request({"type": "subscribe", "session": session, "after": 1})
    )
    await asyncio.wait_for(store.waiting.wait(), 5)
    await remove_bob_then_post(server, session)
    store.open_gate()
    answer = await reply
    assert answer["type"] == "error"
    assert answer["code"] == "forbidden"
    await asyncio.sleep(0.2)
    leaked = [f for f in list(bob.inbox._queue) if f.get("type") == "event"]  # type: ignore[attr-defined]
    assert leaked == []
    await bob.close()


async def test_an_sse_stream_opening_when_the_member_is_removed_ends_with_forbidden(
    server: Server, store: GatedStore
) -> None:
    session = await a_session_bob_reads(server)
    store.close_gate()
    lines: list[str] = []

    async def read_stream() -> None:
        headers = {"Authorization": f"Bearer {make_token('bob')}", "Last-Event-ID": "1"}
        async with (
            server.http() as http,
            http.stream("GET", f"/v1/sessions/{session}/sse", headers=headers) as response,
        ):
            async for line in response.aiter_lines():
                lines.append(line)

    reader = asyncio.ensure_future(read_stream())
    await asyncio.wait_for(store.waiting.wait(), 5)
    await remove_bob_then_post(server, session)
    store.open_gate()
    await asyncio.wait_for(reader, 5)  # the stream ends by itself
    assert "event: error" in lines
    data = [json.loads(line[6:]) for line in lines if line.startswith("data: ")]
    assert [d["code"] for d in data if d.get("type") == "error"] == ["forbidden"]
    assert not [d for d in data if d.get("type") == "event"]


async def test_a_long_poll_reading_when_the_member_is_removed_stops_at_the_removal(
    server: Server, store: GatedStore
) -> None:
    session = await a_session_bob_reads(server)
    store.close_gate()

    async def poll() -> dict[str, object]:
        async with server.http("bob") as http:
            response = await http.get(f"/v1/sessions/{session}/events", params={"after": 1})
            result: dict[str, object] = response.json()
            return result

    polled = asyncio.ensure_future(poll())
    await asyncio.wait_for(store.waiting.wait(), 5)
    await remove_bob_then_post(server, session)
    store.open_gate()
    page = await asyncio.wait_for(polled, 5)
    events = page["events"]
    assert isinstance(events, list)
    assert events[-1]["kind"] == "member.removed"
    assert not any(e.get("client_id") == "after-removal" for e in events)
