"""The SDK through a faulty network: cuts mid-frame, refused connections, HTTP fallback."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from tests.client.helpers import client_for, until
from tests.server.harness import Server, fetch_events, running_server
from tidings.client import ChangeBatch, Client, ConnectionState, Session
from tidings.testing.proxy import FaultyProxy, faulty_proxy

USERS = ("al", "bo", "cy")
SIXTY_WORDS = " ".join(f"word{i}" for i in range(60))


async def members(server: Server, sid: str) -> None:
    for user in USERS[1:]:
        await server.add_member("al", sid, user, "member")


def user_messages(session: Session) -> list[tuple[str | None, str]]:
    return [(m.id, m.content) for m in session.state.messages if m.role == "user"]


@contextlib.asynccontextmanager
async def three_clients(server: Server, url: str, **options: Any) -> AsyncIterator[list[Client]]:
    async with (
        client_for(server, "al", url=url, **options) as al,
        client_for(server, "bo", url=url, **options) as bo,
        client_for(server, "cy", url=url, **options) as cy,
    ):
        yield [al, bo, cy]


async def test_600_messages_through_cuts_every_half_second_end_identical_everywhere(
    server: Server, proxy: FaultyProxy
) -> None:
    sid = await server.create_session("al")
    await members(server, sid)
    per_client = 200
    async with three_clients(server, proxy.url, reconnect_base_s=0.05) as clients:
        sessions = [await c.join(sid) for c in clients]
        async with proxy.chaos(0.5):

            async def send_all(session: Session, user: str) -> None:
                for i in range(per_client):
                    session.send_message(f"{user}-{i}")
                    if i % 10 == 0:
                        await asyncio.sleep(0.15)  # spread over several rounds of cuts

            await asyncio.gather(*(send_all(s, u) for s, u in zip(sessions, USERS, strict=True)))
            await until(
                lambda: (
                    all(len(user_messages(s)) == 3 * per_client for s in sessions)
                    and all(not s.outgoing for s in sessions)
                ),
                timeout=40,
                what="every replica to hold 600 confirmed messages",
            )
        assert all(c.reconnects >= 3 for c in clients), "cut several times while sending"
        replicas = [user_messages(s) for s in sessions]
        assert replicas[0] == replicas[1] == replicas[2]
        contents = [content for _, content in replicas[0]]
        assert len(contents) == len(set(contents)) == 600  # each exactly once
        assert all(message_id is not None for message_id, _ in replicas[0])
        for user in USERS:  # each sender's messages keep their order
            mine = [c for c in contents if c.startswith(f"{user}-")]
            assert mine == [f"{user}-{i}" for i in range(per_client)]
        assert not any(m.pending for s in sessions for m in s.state.messages)
        # The replicas are the log.
        log = [e for e in await fetch_events(server, "al", sid) if e["kind"] == "message.created"]
        assert [(e["data"]["message"]["id"], e["data"]["message"]["content"]) for e in log] == (
            replicas[0]
        )
        assert sessions[0].state.seq == sessions[1].state.seq == sessions[2].state.seq


async def test_an_assistant_reply_interrupted_by_cuts_ends_complete_and_identical(
    echo_server: Server,
) -> None:
    server = echo_server
    sid = await server.create_session("al", agent="echo")
    await members(server, sid)
    async with (
        faulty_proxy(server.port) as proxy,
        three_clients(server, proxy.url, reconnect_base_s=0.02) as clients,
    ):
        sessions = [await c.join(sid) for c in clients]
        seen: list[list[str]] = [[], [], []]

        def recorder(versions: list[str]) -> Callable[[ChangeBatch], None]:
            def record(batch: ChangeBatch) -> None:
                versions.extend(m.content for m in batch.messages if m.role == "assistant")

            return record

        for n, session in enumerate(sessions):
            session.on_change(recorder(seen[n]))
        async with proxy.chaos(0.25):
            await sessions[0].send_message(SIXTY_WORDS)
            expected = "echo: " + SIXTY_WORDS

            def replies_done() -> bool:
                return all(
                    [m.status for m in s.state.messages if m.role == "assistant"] == ["complete"]
                    for s in sessions
                )

            await until(replies_done, timeout=20, what="the reply to complete everywhere")
        assert all(c.reconnects >= 2 for c in clients)
        for session in sessions:
            [reply] = [m for m in session.state.messages if m.role == "assistant"]
            assert reply.content == expected
        # While it grew, every version seen was a prefix of the final text: nothing doubled.
        for versions in seen:
            assert versions
            assert all(expected.startswith(v) for v in versions)


async def test_a_blocked_websocket_falls_back_to_http_and_returns_without_gap_or_duplicate(
    tmp_path: Path,
) -> None:
    async with (
        running_server(tmp_path, rate_limit=0) as server,
        faulty_proxy(server.port) as proxy,
    ):
        sid = await server.create_session("al")
        await members(server, sid)
        options: dict[str, Any] = {
            "reconnect_base_s": 0.02,
            "reconnect_cap_s": 0.2,
            "fallback_after": 3,
            "poll_wait_s": 1.0,
        }
        async with (
            client_for(server, "al", url=proxy.url, **options) as al,
            client_for(server, "bo", url=server.ws_url) as bo,
        ):
            mine = await al.join(sid)
            theirs = await bo.join(sid)
            states: list[str] = []
            al.on_state(states.append)
            await mine.send_message("before")

            proxy.refuse(True)
            proxy.cut()
            await al.wait_for(ConnectionState.FALLBACK, timeout=5)
            # Sending (POST) and receiving (long-poll) over HTTP.
            sent = [mine.send_message(f"fallback-{i}") for i in range(10)]
            received = [theirs.send_message(f"from-bo-{i}") for i in range(10)]
            await asyncio.gather(*(h.wait(timeout=10) for h in sent + received))
            await until(lambda: len(user_messages(mine)) == 21, what="fallback receives")
            assert al.state is ConnectionState.FALLBACK

            proxy.refuse(False)
            await al.wait_for(ConnectionState.CONNECTED, timeout=5)
            assert states[-2:] == ["fallback", "connected"] or states[-1] == "connected"
            after = [mine.send_message(f"after-{i}") for i in range(5)]
            await theirs.send_message("bo-after")
            await asyncio.gather(*(h.wait(timeout=10) for h in after))
            await until(
                lambda: len(user_messages(mine)) == len(user_messages(theirs)) == 27,
                what="both replicas to catch up",
            )
            assert user_messages(mine) == user_messages(theirs)
            log = [
                (e["data"]["message"]["id"], e["data"]["message"]["content"])
                for e in await fetch_events(server, "al", sid)
                if e["kind"] == "message.created"
            ]
            assert user_messages(mine) == log  # no gap, no duplicate, log order
            assert mine.state.seq == theirs.state.seq


async def test_the_fallback_can_receive_over_server_sent_events(tmp_path: Path) -> None:
    async with (
        running_server(tmp_path, rate_limit=0) as server,
        faulty_proxy(server.port) as proxy,
    ):
        sid = await server.create_session("al")
        await members(server, sid)
        async with (
            client_for(
                server,
                "al",
                url=proxy.url,
                reconnect_base_s=0.02,
                reconnect_cap_s=0.2,
                fallback_after=2,
                fallback_receive="sse",
            ) as al,
            client_for(server, "bo") as bo,
        ):
            mine = await al.join(sid)
            theirs = await bo.join(sid)
            proxy.refuse(True)
            proxy.cut()
            await al.wait_for(ConnectionState.FALLBACK, timeout=5)
            for i in range(5):
                theirs.send_message(f"bo-{i}")
            await mine.send_message("al-over-http")
            await until(lambda: len(user_messages(mine)) == 6, what="SSE receives")
            proxy.refuse(False)
            await al.wait_for(ConnectionState.CONNECTED, timeout=5)
            await theirs.send_message("bo-last")
            await until(lambda: user_messages(mine) == user_messages(theirs))
            assert len(user_messages(mine)) == 7
