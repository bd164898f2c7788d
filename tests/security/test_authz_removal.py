"""Issue 9 points 1 and 15: a member removed while their read is under way gets nothing
more, and a stranger naming a session never makes the node load and fold it. (The
long-poll's case is in test_authz_removed_member.py.)

The race is made deterministic by a store that holds one read until the test has
removed the member (and posted again), then lets it run."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.server.harness import Server, make_token, message, running_server
from tidings.backends.sqlite import SqliteStore
from tidings.core.model import Event, SessionInfo
from tidings.server.node import wall_clock_ms


class HeldReadStore(SqliteStore):
    """The SQLite store; once `hold` is armed, the next log read waits for `release`."""

    def __init__(self, path: Path) -> None:
        super().__init__(str(path), wall_clock_ms)
        self.armed = False
        self.reading = asyncio.Event()
        self.release = asyncio.Event()
        self.folds = 0

    def hold(self) -> None:
        self.armed = True
        self.reading.clear()
        self.release.clear()

    async def read(self, session_id: str, after: int, limit: int | None = None) -> list[Event]:
        if self.armed:
            self.armed = False
            self.reading.set()
            await self.release.wait()
        return await super().read(session_id, after, limit)

    async def get_session(self, session_id: str) -> SessionInfo:
        self.folds += 1  # every channel opening (load and fold) starts here
        return await super().get_session(session_id)


async def _session_with_member(server: Server) -> str:
    sid = await server.create_session("al")
    await server.add_member("al", sid, "bo", "member")
    al = await server.client("al")
    for i in range(3):
        assert (await al.request(message(f"m{i}", session=sid)))["type"] == "ack"
    await al.close()
    return sid


async def _remove_bo_and_post(server: Server, sid: str) -> None:
    async with server.http("al") as http:
        response = await http.delete(f"/v1/sessions/{sid}/members/bo")
        assert response.status_code == 200, response.text
        sent = await http.post(
            f"/v1/sessions/{sid}/events",
            json={"client_id": "after-removal", "kind": "message", "data": {"content": "secret"}},
        )
        assert sent.status_code == 200, sent.text


async def test_a_member_removed_during_a_subscribe_catch_up_is_refused_and_gets_no_event(
    tmp_path: Path,
) -> None:
    store = HeldReadStore(tmp_path / "tidings.db")
    async with running_server(tmp_path, store=store) as server:
        sid = await _session_with_member(server)
        bo = await server.client("bo")
        store.hold()
        reply = asyncio.ensure_future(bo.request({"type": "subscribe", "session": sid, "after": 0}))
        await asyncio.wait_for(store.reading.wait(), 5)
        await _remove_bo_and_post(server, sid)
        store.release.set()
        answer = await reply
        assert answer["type"] == "error", answer
        assert answer["code"] == "forbidden"
        await asyncio.sleep(0.2)
        leaked = [f for f in _drain(bo) if f.get("type") in ("subscribed", "event")]
        assert leaked == []
        await bo.close()


async def test_a_member_removed_during_an_sse_catch_up_gets_an_error_and_no_event(
    tmp_path: Path,
) -> None:
    store = HeldReadStore(tmp_path / "tidings.db")
    async with running_server(tmp_path, store=store) as server:
        sid = await _session_with_member(server)
        async with server.http("bo") as http:
            assert (await http.get(f"/v1/sessions/{sid}")).status_code == 200
            store.hold()

            async def read_stream() -> str:
                url = f"/v1/sessions/{sid}/sse?after=0"
                async with http.stream("GET", url) as response:
                    assert response.status_code == 200
                    return (await response.aread()).decode()

            stream = asyncio.ensure_future(read_stream())
            await asyncio.wait_for(store.reading.wait(), 5)
            await _remove_bo_and_post(server, sid)
            store.release.set()
            body = await asyncio.wait_for(stream, 5)
        assert "event: error" in body
        assert '"code":"forbidden"' in body
        assert "secret" not in body
        assert "id: " not in body  # no event at all after the removal's check


async def test_a_stranger_naming_a_session_is_refused_without_the_session_being_folded(
    tmp_path: Path,
) -> None:
    store = HeldReadStore(tmp_path / "tidings.db")
    async with running_server(tmp_path, store=store) as server:
        sid = await server.create_session("al")
        assert server.node is not None
        server.node.hub.channels.clear()  # cold, as after the idle grace
        folds = store.folds
        eve = await server.client("eve")
        for frame in (
            {"type": "subscribe", "session": sid},
            message("hi", session=sid),
        ):
            answer = await eve.request(frame)
            assert answer["code"] == "forbidden", answer
        headers = {"Authorization": f"Bearer {make_token('eve')}"}
        async with server.http() as http:
            for path in ("", "/events?after=0", "/sse"):
                response = await http.get(f"/v1/sessions/{sid}{path}", headers=headers)
                assert response.status_code == 403, (path, response.text)
        assert store.folds == folds
        assert sid not in server.node.hub.channels
        await eve.close()


def _drain(client: object) -> list[dict[str, object]]:
    inbox = client.inbox  # type: ignore[attr-defined]
    frames = []
    while not inbox.empty():
        frames.append(inbox.get_nowait())
    return frames
