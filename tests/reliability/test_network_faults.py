"""Network faults through the fault proxy, on SQLite and PostgreSQL: sends cut mid-frame,
acks lost (the client retries with the same client id), seeded random faults; and the
checker catching what a broken network does to a client that trusts it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests.reliability.conftest import Backend
from tests.reliability.recording import Watcher, Writer, finish
from tests.server.harness import make_token, running_server
from tidings.testing.history import History, Kind
from tidings.testing.proxy import Direction, WsFrame, faulty_proxy, is_ack, is_send


async def test_sends_cut_mid_frame_are_stored_at_most_once_and_retries_land(
    tmp_path: Path, backend: Backend, history: History
) -> None:
    async with (
        running_server(tmp_path, database_url=backend.database_url, rate_limit=0) as server,
        faulty_proxy(server.port) as proxy,
    ):
        session = await server.create_session("al")
        watcher = Watcher(history, lambda: server.ws_url, "al", session, "direct")
        watcher.start()
        writer = Writer(history, lambda: proxy.url, "al", session, timeout=1)
        for i in range(20):
            if i % 3 == 0:
                proxy.cut_next(is_send)  # the client's send frame: half of it, then reset
            elif i % 3 == 1:
                proxy.cut_next(is_ack)  # stored, but the ack is cut in half
            await writer.send(f"m{i}")
        counts = await finish(history, server, "al", [session], [watcher], [writer])
        assert counts.acked == 20
        assert counts.unknown == 0
        assert counts.retried >= 13
        assert proxy.cuts >= 13


async def test_lost_acks_are_retried_with_the_same_client_id_and_stored_once(
    tmp_path: Path, backend: Backend, history: History
) -> None:
    async with (
        running_server(tmp_path, database_url=backend.database_url, rate_limit=0) as server,
        faulty_proxy(server.port) as proxy,
    ):
        session = await server.create_session("al")
        await server.add_member("al", session, "bo", "member")
        watchers = [Watcher(history, lambda: server.ws_url, "al", session, "direct")]
        watchers.append(Watcher(history, lambda: proxy.url, "bo", session, "proxied"))
        for watcher in watchers:
            watcher.start()
        writers = [
            Writer(history, lambda: proxy.url, user, session, timeout=0.3) for user in ("al", "bo")
        ]
        with proxy.random_faults(seed=10, drop=0.3, where=is_ack):
            await asyncio.gather(*(w.run(30) for w in writers))
        counts = await finish(history, server, "al", [session], watchers, writers)
        assert counts.acked == 60
        assert counts.duplicates >= 5  # each retry of a dropped ack: the original ack
        assert proxy.dropped >= 5


async def test_seeded_random_faults_are_the_same_for_the_same_seed(tmp_path: Path) -> None:
    async def run(seed: int) -> list[bool]:
        async with (
            running_server(tmp_path, rate_limit=0) as server,
            faulty_proxy(server.port) as proxy,
        ):
            session = await server.create_session("al")
            history = History()
            writer = Writer(history, lambda: proxy.url, "al", session, timeout=0.3)
            with proxy.random_faults(seed=seed, drop=0.5, where=is_ack):
                for i in range(12):
                    await writer.send(f"{seed}-{i}")
            await writer.close()
            return [len(op.attempts) > 1 for op in history.operations.values()]

    first, again, other = await run(7), await run(7), await run(8)
    assert first == again
    assert first != other


async def test_the_checker_catches_a_network_that_duplicates_and_drops_events(
    tmp_path: Path,
) -> None:
    # A checker that cannot fail is worthless: here the proxy breaks the stream on purpose.
    def is_event(frame: WsFrame) -> bool:
        return frame.direction is Direction.DOWN and frame.has_type("event")

    async with (
        running_server(tmp_path, rate_limit=0) as server,
        faulty_proxy(server.port) as proxy,
    ):
        session = await server.create_session("al")
        history = History()
        watcher = Watcher(history, lambda: proxy.url, "al", session, "proxied")
        watcher.start()
        writer = Writer(history, lambda: server.ws_url, "al", session)
        await writer.send("first")
        await watcher.caught_up(1)
        proxy.duplicate_next(is_event)
        await writer.send("twice")
        proxy.drop_next(is_event)
        await writer.send("never seen")
        await writer.send("after the hole")
        with pytest.raises(AssertionError) as failed:
            await finish(history, server, "al", [session], [watcher], [writer])
        kinds = {a.kind for a in history.check()}
        assert kinds == {Kind.DUPLICATE, Kind.GAP}, failed.value


async def test_plain_http_passes_through_the_proxy_unchanged(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server, faulty_proxy(server.port) as proxy:
        session = await server.create_session("al")
        async with httpx.AsyncClient(
            base_url=proxy.http_url, headers={"Authorization": f"Bearer {make_token('al')}"}
        ) as client:
            for _ in range(3):  # one keep-alive connection, several requests
                response = await client.get(f"/v1/sessions/{session}/events")
                assert response.status_code == 200
                assert [e["kind"] for e in response.json()["events"]] == ["member.added"]


async def test_a_resume_past_a_megabyte_of_missed_events_gets_every_event_once(
    tmp_path: Path, backend: Backend, history: History
) -> None:
    async with running_server(tmp_path, database_url=backend.database_url, rate_limit=0) as server:
        session = await server.create_session("al")
        watcher = Watcher(history, lambda: server.ws_url, "al", session, "resumer")
        writer = Writer(history, lambda: server.ws_url, "al", session)
        await writer.send("before")
        watcher.start()
        await watcher.caught_up(2)
        await watcher.stop()
        # 1.5 MiB missed: more than the outbound queue's bound (1 MiB by default).
        for i in range(75):
            await writer.send(f"{i:04d}" + "x" * 20_000)
        watcher.start()
        counts = await finish(history, server, "al", [session], [watcher], [writer], timeout=8)
        assert counts.acked == 76
        assert watcher.resumes == 0, "the catch-up never closed the connection (4009)"
