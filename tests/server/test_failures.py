"""When the store fails, clients get `unavailable` or `internal`, never internals."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.server.harness import Server, message, running_server
from tidings.backends.base import StoreUnavailable
from tidings.backends.memory import MemoryStore
from tidings.core.model import Appended, Conflict, Draft, SessionInfo
from tidings.server.node import wall_clock_ms


class FailingStore(MemoryStore):
    """A memory store whose appends and pings can be made to fail on demand."""

    def __init__(self) -> None:
        super().__init__(wall_clock_ms)
        self.failure: Exception | None = None

    async def append(self, session_id: str, draft: Draft) -> Appended | Conflict:
        return await self.submit(session_id, draft)

    def submit(self, session_id: str, draft: Draft) -> asyncio.Future[Appended | Conflict]:
        if self.failure is not None:
            future: asyncio.Future[Appended | Conflict] = asyncio.get_running_loop().create_future()
            future.set_exception(self.failure)
            return future
        return super().submit(session_id, draft)

    async def ping(self) -> None:
        if self.failure is not None:
            raise StoreUnavailable("down")


@pytest.fixture
def store() -> FailingStore:
    return FailingStore()


@pytest.fixture
async def flaky(tmp_path: Path, store: FailingStore) -> AsyncIterator[Server]:
    async with running_server(tmp_path, store=store) as running:
        yield running


async def test_a_store_outage_is_unavailable_and_the_retry_succeeds(
    flaky: Server, store: FailingStore
) -> None:
    sid = await flaky.create_session("al")
    client = await flaky.client("al")
    store.failure = StoreUnavailable("disk on fire at /var/lib/db")
    reply = await client.request(message("hi", "r1", session=sid))
    assert (reply["type"], reply["code"]) == ("error", "unavailable")
    assert "/var/lib" not in reply["message"]
    async with flaky.http() as http:
        assert (await http.get("/readyz")).status_code == 503
    store.failure = None
    reply = await client.request(message("hi", "r1", session=sid))
    assert (reply["type"], reply["duplicate"]) == ("ack", False)
    await client.close()


async def test_an_unexpected_failure_is_internal_and_reveals_nothing(
    flaky: Server, store: FailingStore
) -> None:
    sid = await flaky.create_session("al")
    client = await flaky.client("al")
    store.failure = RuntimeError("secret table name tidings_events_v2")
    reply = await client.request(message("hi", "x1", session=sid))
    assert (reply["type"], reply["code"]) == ("error", "internal")
    assert "tidings_events" not in reply["message"]
    store.failure = None
    assert (await client.request({"type": "ping"}))["type"] == "pong"
    await client.close()


async def test_http_failures_use_the_error_shape(flaky: Server, store: FailingStore) -> None:
    sid = await flaky.create_session("al")
    async with flaky.http("al") as http:
        body = {"client_id": "h1", "kind": "message", "data": {"content": "hi"}}
        store.failure = StoreUnavailable("down")
        response = await http.post(f"/v1/sessions/{sid}/events", json=body)
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "unavailable"
        store.failure = RuntimeError("secret")
        response = await http.post(f"/v1/sessions/{sid}/events", json=body)
        assert response.status_code == 500
        assert response.json() == {"error": {"code": "internal", "message": "internal error"}}


class FailingReads(FailingStore):
    """Reads fail too (a subscription needs them)."""

    async def get_session(self, session_id: str) -> SessionInfo:
        if self.failure is not None:
            raise self.failure
        return await super().get_session(session_id)


async def test_a_subscribe_during_an_outage_is_unavailable(tmp_path: Path) -> None:
    store = FailingReads()
    async with running_server(tmp_path, store=store) as server:
        sid = await server.create_session("al")
        client = await server.client("al")
        store.failure = StoreUnavailable("down")
        reply = await client.request({"type": "subscribe", "session": sid})
        assert (reply["type"], reply["code"]) == ("error", "unavailable")
        store.failure = None
        assert (await client.subscribe(sid))["seq"] == 1
        await client.close()
