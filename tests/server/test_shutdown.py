"""Shutdown and closes that must not drop answers: SIGTERM with long-polls, SSE streams
and sends in flight open (over a real `tidings serve` process), and the 4008 close of a
rate abuser."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.server.harness import (
    Frame,
    RawClient,
    Server,
    ServerProcess,
    fetch_events,
    make_token,
    message,
    running_server,
)


@pytest.fixture
async def children(tmp_path: Path) -> AsyncIterator[list[ServerProcess]]:
    """Child servers started by a test (all on `tmp_path`), killed if still running."""
    started: list[ServerProcess] = []
    yield started
    for child in started:
        await child.stop()


async def _start(children: list[ServerProcess], tmp_path: Path, **env: str) -> Server:
    child = ServerProcess(tmp_path, **env)
    children.append(child)
    return await child.start()


async def _head(server: Server, user: str, session: str) -> int:
    async with server.http(user) as http:
        response = await http.get(f"/v1/sessions/{session}/events", params={"after": 0})
    response.raise_for_status()
    seq: int = response.json()["seq"]
    return seq


async def _connected_raw(server: Server, user: str) -> RawClient:
    raw = await RawClient.open(server.ws_url)
    reply = await raw.request({"type": "connect", "token": make_token(user)})
    assert reply["type"] == "connected", reply
    return raw


def _assert_no_traceback(child: ServerProcess) -> None:
    log = child.log()
    assert "Traceback" not in log, log
    for line in log.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            entry = {"level": "error" if "ERROR" in line else "info"}
        assert entry.get("level") not in ("error", "critical"), line


async def test_sigterm_answers_an_open_long_poll_at_once_with_503_and_retry_after(
    tmp_path: Path, children: list[ServerProcess]
) -> None:
    server = await _start(children, tmp_path)
    session = await server.create_session("al")
    head = await _head(server, "al", session)
    async with server.http("al") as http:
        poll = asyncio.ensure_future(
            http.get(f"/v1/sessions/{session}/events", params={"after": head, "wait": 30})
        )
        await asyncio.sleep(0.3)  # the poll is parked on the server
        assert not poll.done()
        signalled = time.monotonic()
        children[0].signal(signal.SIGTERM)
        response = await asyncio.wait_for(poll, 5)
        answered_s = time.monotonic() - signalled
    assert await children[0].wait() == 0
    exited_s = time.monotonic() - signalled

    assert response.status_code == 503
    assert response.headers["content-type"] == "application/json"
    assert int(response.headers["retry-after"]) >= 1
    assert response.json()["error"]["code"] == "unavailable"
    # Not the 10 s grace period: nothing is left to wait for once the poll is answered.
    assert answered_s < 2, answered_s
    assert exited_s < 3, exited_s
    _assert_no_traceback(children[0])


async def test_sigterm_ends_an_open_sse_stream_with_a_going_away_event_then_eof(
    tmp_path: Path, children: list[ServerProcess]
) -> None:
    server = await _start(children, tmp_path)
    session = await server.create_session("al")
    received = b""
    async with (
        server.http("al") as http,
        http.stream("GET", f"/v1/sessions/{session}/sse") as stream,
    ):
        chunks = stream.aiter_bytes()
        while b"event: snapshot" not in received:
            received += await asyncio.wait_for(anext(chunks), 5)
        signalled = time.monotonic()
        children[0].signal(signal.SIGTERM)
        # A clean end of the chunked body: httpx raises if the stream is cut instead.
        async with asyncio.timeout(5):
            async for chunk in chunks:
                received += chunk
    assert await children[0].wait() == 0
    exited_s = time.monotonic() - signalled

    last = received.rstrip(b"\n").rsplit(b"\n\n", 1)[-1]
    assert last.startswith(b"event: going_away\ndata: "), received
    assert b'"code":"unavailable"' in last
    assert exited_s < 3, exited_s
    _assert_no_traceback(children[0])


async def test_sigterm_acks_every_stored_send_before_closing_with_1001(
    tmp_path: Path, children: list[ServerProcess]
) -> None:
    server = await _start(children, tmp_path, TIDINGS_RATE_LIMIT="0")
    session = await server.create_session("al")
    raw = await _connected_raw(server, "al")
    sent = 0
    underway = asyncio.Event()

    async def keep_sending() -> None:
        # Bursts until the socket goes: some sends are always between submit and commit
        # when the shutdown begins, and some arrive after it.
        nonlocal sent
        try:
            while sent < 20_000:
                await raw.burst(
                    [
                        {**message(f"m{sent + i}", f"c{sent + i}", session=session), "id": i}
                        for i in range(200)
                    ]
                )
                sent += 200
                if sent >= 1000:
                    underway.set()
                await asyncio.sleep(0.005)
        except (ConnectionError, OSError):
            pass

    sender = asyncio.ensure_future(keep_sending())
    await asyncio.wait_for(underway.wait(), 10)
    children[0].signal(signal.SIGTERM)
    frames, code = await raw.until_closed()
    sender.cancel()
    await asyncio.gather(sender, return_exceptions=True)
    await raw.close()
    assert await children[0].wait() == 0

    assert code == 1001
    acked = {f["client_id"] for f in frames if f["type"] == "ack"}
    restarted = await _start(children, tmp_path)
    stored = {
        e["client_id"]
        for e in await fetch_events(restarted, "al", session)
        if e["kind"] == "message.created"
    }
    assert stored, "nothing was stored before the shutdown"
    assert stored - acked == set(), f"{len(acked)} acked of {len(stored)} stored"
    assert acked <= stored
    _assert_no_traceback(children[0])


async def test_a_4008_close_comes_after_the_acks_of_every_send_accepted_before_it(
    tmp_path: Path,
) -> None:
    async with running_server(
        tmp_path, rate_limit=0.001, rate_burst=20, rate_strikes=5, rate_window_ms=60_000
    ) as server:
        session = await server.create_session("al")
        raw = await _connected_raw(server, "al")
        # One read on the server: 20 accepted, then 5 refused, the 5th refusal closes.
        await raw.burst(
            [{**message(f"m{i}", f"c{i}", session=session), "id": 100 + i} for i in range(30)]
        )
        frames, code = await raw.until_closed()
        await raw.close()
        stored = await fetch_events(server, "al", session)

    assert code == 4008
    acks: list[Frame] = [f for f in frames if f["type"] == "ack"]
    assert sorted(a["client_id"] for a in acks) == sorted(f"c{i}" for i in range(20))
    created = [e for e in stored if e["kind"] == "message.created"]
    assert {e["client_id"] for e in created} == {a["client_id"] for a in acks}
    # The acks precede the error that announces the close.
    assert frames[-1]["type"] == "error"
    assert frames[-1]["code"] == "rate_limited"


async def test_sigterm_with_only_an_idle_keep_alive_connection_exits_at_once(
    tmp_path: Path, children: list[ServerProcess]
) -> None:
    server = await _start(children, tmp_path)
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        assert (await http.get("/healthz")).status_code == 200  # left open, idle
        signalled = time.monotonic()
        children[0].signal(signal.SIGTERM)
        assert await children[0].wait() == 0
    exited_s = time.monotonic() - signalled
    assert exited_s < 2, exited_s
    _assert_no_traceback(children[0])
