"""The server's limits, over real sockets: frame size, nesting, rates, slow consumers,
origins, subscriptions and heartbeats. Each test fails if its limit is not enforced."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from websockets.exceptions import InvalidStatus

from tests.server.harness import (
    Client,
    Frame,
    RawClient,
    Server,
    create_sessions,
    fetch_events,
    make_token,
    message,
    metric,
    running_server,
    send_frame,
)


async def _replies(client: Client, ids: set[int], *, timeout: float = 10) -> dict[int, Frame]:
    """The replies to the requests `ids` (by `re`), waiting until all are in or the socket
    closes; other frames are dropped."""
    found: dict[int, Frame] = {}
    async with asyncio.timeout(timeout):
        while ids - found.keys():
            if client.closed.done() and client.inbox.empty():
                break
            try:
                # Short waits: the socket may close while nothing more is coming.
                frame = await asyncio.wait_for(client.inbox.get(), 0.05)
            except TimeoutError:
                continue
            if frame.get("re") in ids:
                found[frame["re"]] = frame
    return found


async def _blast_sends(client: Client, session: str, count: int) -> set[int]:
    """`count` sends written back to back without waiting for any reply; their ids."""
    ids = set()
    for i in range(count):
        request_id = 1000 + i
        ids.add(request_id)
        await client.send({**message(f"spam {i}", f"blast-{i}", session=session), "id": request_id})
    return ids


def _assert_acked_are_logged(replies: dict[int, Frame], log: list[Frame]) -> None:
    by_client_id = {event["client_id"]: event for event in log if event.get("client_id")}
    acks = [reply for reply in replies.values() if reply["type"] == "ack"]
    for ack in acks:
        event = by_client_id.get(ack["client_id"])
        assert event is not None, f"acked send {ack['client_id']} is not in the log"
        assert event["seq"] == ack["seq"]
    refused = {
        f"blast-{reply['re'] - 1000}" for reply in replies.values() if reply["type"] == "error"
    }
    assert not refused & by_client_id.keys(), "a refused send was appended"


# ---------------------------------------------------------------- frame size and nesting


async def test_a_200_kb_frame_closes_with_1009_and_others_keep_being_served(
    server: Server,
) -> None:
    bystander = await server.client("bob")
    offender = await server.client("al")
    await offender.send("x" * 200_000)
    code, _ = await offender.wait_closed()
    assert code == 1009
    assert (await bystander.request({"type": "ping"}))["type"] == "pong"
    newcomer = await server.client("carol")
    assert (await newcomer.request({"type": "ping"}))["type"] == "pong"
    for client in (offender, bystander, newcomer):
        await client.close()


async def test_a_frame_just_under_the_limit_is_read(server: Server) -> None:
    client = await server.client("al")
    padding = "x" * (server.config.max_frame - 200)
    reply = await client.request({"type": "ping", "padding": padding})
    assert reply["type"] == "pong"
    await client.close()


async def test_deeply_nested_json_is_a_bad_request_and_the_connection_stays(
    server: Server,
) -> None:
    client = await server.client("al")
    await client.send("[" * 60_000)  # under the 64 KiB frame limit
    error = await client.next(lambda f: f.get("type") == "error")
    assert error["code"] == "bad_request"
    assert (await client.request({"type": "ping"}))["type"] == "pong"
    await client.close()


async def test_100k_open_brackets_are_a_bad_request_under_a_larger_frame_limit(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path, max_frame=1 << 20) as server:
        client = await server.client("al")
        await client.send("[" * 100_000)
        error = await client.next(lambda f: f.get("type") == "error")
        assert error["code"] == "bad_request"
        assert (await client.request({"type": "ping"}))["type"] == "pong"
        await client.close()


def _nested(depth: int) -> dict[str, object]:
    value: dict[str, object] = {"content": "deep"}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


async def test_data_nested_deeper_than_16_is_a_bad_request_and_the_connection_stays(
    server: Server,
) -> None:
    session = await server.create_session("al")
    client = await server.client("al")
    reply = await client.request(send_frame(session, "message", _nested(17), "deep"))
    assert (reply["type"], reply["code"]) == ("error", "bad_request")
    assert (await client.request({"type": "ping"}))["type"] == "pong"
    logged = await fetch_events(server, "al", session)
    assert [e for e in logged if e.get("client_id") == "deep"] == []
    await client.close()


async def test_data_nested_16_deep_passes_the_depth_check(server: Server) -> None:
    session = await server.create_session("al")
    client = await server.client("al")
    reply = await client.request(send_frame(session, "message", _nested(16), "deep"))
    # Past the depth check, the send's own rules judge it (nested junk is no message).
    assert "nests deeper" not in reply.get("message", ""), reply
    await client.close()


# ---------------------------------------------------------------- rate limits


async def test_blasted_sends_get_rate_limited_and_every_acked_one_is_logged(
    server: Server,
) -> None:
    assert (server.config.rate_limit, server.config.rate_burst) == (20.0, 40)
    session = await server.create_session("al")
    client = await server.client("al")
    # 80 back-to-back sends: about the burst (40) gets through, and the ~40 refusals stay
    # under the 50 strikes that would close the connection.
    ids = await _blast_sends(client, session, 80)
    replies = await _replies(client, ids)
    assert replies.keys() == ids
    acks = [r for r in replies.values() if r["type"] == "ack"]
    refusals = [r for r in replies.values() if r["type"] == "error"]
    assert len(acks) >= 40
    assert refusals, "nothing was rate limited"
    for refusal in refusals:
        assert refusal["code"] == "rate_limited"
        assert isinstance(refusal["retry_after_ms"], int)
        assert refusal["retry_after_ms"] > 0
    assert not client.closed.done()
    _assert_acked_are_logged(replies, await fetch_events(server, "al", session))
    # Waiting as told is enough for the next send to pass.
    await asyncio.sleep(max(r["retry_after_ms"] for r in refusals) / 1000)
    reply = await client.request(message("calm now", "later", session=session))
    assert reply["type"] == "ack"
    assert await metric(server, "tidings_rate_limited_total") == len(refusals)
    await client.close()


async def test_persistent_rate_abuse_closes_with_4008_and_loses_no_acked_send(
    server: Server,
) -> None:
    config = server.config
    assert (config.rate_strikes, config.rate_window_ms) == (50, 10_000)
    session = await server.create_session("al")
    client = await server.client("al")
    ids = await _blast_sends(client, session, 200)
    code, _ = await client.wait_closed()
    assert code == 4008
    replies = await _replies(client, ids)
    errors = [r for r in replies.values() if r["type"] == "error"]
    assert len(errors) > config.rate_strikes
    assert all(e["code"] == "rate_limited" for e in errors)
    _assert_acked_are_logged(replies, await fetch_events(server, "al", session))
    # Other connections of the same user are not punished.
    other = await server.client("al")
    assert (await other.request({"type": "ping"}))["type"] == "pong"
    await other.close()
    await client.close()


async def test_a_smaller_configured_rate_refuses_sooner(tmp_path: Path) -> None:
    async with running_server(tmp_path, rate_limit=2.0, rate_burst=3) as server:
        session = await server.create_session("al")
        client = await server.client("al")
        ids = await _blast_sends(client, session, 6)
        replies = await _replies(client, ids)
        kinds = [replies[i]["type"] for i in sorted(ids)]
        assert kinds[:3] == ["ack"] * 3
        assert kinds[3:] == ["error"] * 3
        assert replies[max(ids)]["retry_after_ms"] > 0
        await client.close()


# ---------------------------------------------------------------- slow consumers


def _with_client_id(client_id: str) -> Callable[[Frame], bool]:
    return lambda frame: frame.get("client_id") == client_id


async def test_a_stalled_reader_is_closed_4009_while_a_healthy_subscriber_gets_everything(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path, queue_bytes=65536, rate_limit=0) as server:
        session = await server.create_session("al")
        publisher = await server.client("al")
        healthy = await server.client("al")
        await healthy.subscribe(session)
        stalled = await RawClient.open(server.ws_url, rcvbuf=4096)
        reply = await stalled.request({"type": "connect", "token": make_token("al")})
        assert reply["type"] == "connected"
        reply = await stalled.request({"type": "subscribe", "session": session})
        assert reply["type"] == "subscribed"
        # From here on `stalled` reads nothing: the socket's buffers fill up, then the
        # server's outbound queue passes 64 KiB.
        assert server.node is not None
        registry = server.node.metrics.registry

        def closes() -> float:
            return registry.get_sample_value("tidings_slow_consumer_closes_total") or 0.0

        latencies: list[float] = []
        seqs: list[int] = []
        content = "y" * 30_000
        sent = after_close = 0
        # Publish until the stalled reader is dropped, then a few more.
        while sent < 400 and after_close < 5:
            client_id = f"m{sent}"
            started = time.perf_counter()
            ack = await publisher.request(message(content, client_id, session=session))
            assert ack["type"] == "ack", ack
            event = await healthy.next(_with_client_id(client_id))
            if closes() == 0:
                latencies.append(time.perf_counter() - started)
            else:
                after_close += 1
            seqs.append(event["seq"])
            sent += 1
        assert closes() == 1, "the stalled reader was never closed"
        assert await metric(server, "tidings_slow_consumer_closes_total") == 1
        # The healthy subscriber got every event, in order, with no gap.
        assert seqs == list(range(seqs[0], seqs[0] + sent))
        print(
            f"healthy p50 publish->receive with a stalled peer: "
            f"{statistics.median(latencies) * 1000:.2f} ms over {len(latencies)} events"
        )
        # The stalled reader, reading again, finds the close frame after what was sent.
        assert await stalled.wait_closed() == 4009
        await stalled.close()
        await publisher.close()
        await healthy.close()


# ---------------------------------------------------------------- origins


async def test_a_foreign_origin_is_refused_with_403(server: Server) -> None:
    with pytest.raises(InvalidStatus) as refused:
        await server.client(origin="http://evil.example")
    assert refused.value.response.status_code == 403
    assert await metric(server, "tidings_origin_refused_total") == 1


async def test_an_origin_that_only_starts_like_the_host_is_refused(server: Server) -> None:
    with pytest.raises(InvalidStatus) as refused:
        await server.client(origin=f"http://127.0.0.1:{server.port}.evil.example")
    assert refused.value.response.status_code == 403


async def test_an_origin_equal_to_the_host_is_allowed(server: Server) -> None:
    client = await server.client("al", origin=f"http://127.0.0.1:{server.port}")
    assert (await client.request({"type": "ping"}))["type"] == "pong"
    await client.close()


async def test_no_origin_is_allowed(server: Server) -> None:
    client = await server.client("al")  # the websockets client sends no Origin
    assert (await client.request({"type": "ping"}))["type"] == "pong"
    await client.close()


async def test_an_allow_listed_origin_is_allowed_and_others_still_refused(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path, allowed_origins=("http://app.example",)) as server:
        client = await server.client("al", origin="http://app.example")
        assert (await client.request({"type": "ping"}))["type"] == "pong"
        await client.close()
        with pytest.raises(InvalidStatus) as refused:
            await server.client(origin="http://other.example")
        assert refused.value.response.status_code == 403


# ---------------------------------------------------------------- subscriptions


async def test_the_101st_subscription_on_one_connection_is_refused(tmp_path: Path) -> None:
    # Subscribe and session-creation rates are not what this test is about.
    async with running_server(tmp_path, rate_limit=0, session_create_rate=0) as server:
        await _the_101st_subscription_is_refused(server)


async def _the_101st_subscription_is_refused(server: Server) -> None:
    limit = server.config.max_subscriptions
    assert limit == 100
    sessions = await create_sessions(server, "al", limit + 1)
    client = await server.client("al")
    for session in sessions[:limit]:
        await client.subscribe(session)
    reply = await client.request({"type": "subscribe", "session": sessions[limit]})
    assert reply["type"] == "error"
    assert reply["code"] == "bad_request"
    # Resubscribing to one already held is not a new subscription; freeing one makes room.
    await client.subscribe(sessions[0])
    assert (await client.request({"type": "unsubscribe", "session": sessions[0]}))["type"] == "ok"
    await client.subscribe(sessions[limit])
    # Another connection has its own allowance.
    other = await server.client("al")
    await other.subscribe(sessions[0])
    await other.close()
    await client.close()


# ---------------------------------------------------------------- heartbeats


async def test_a_client_that_answers_no_ping_is_closed_within_three_periods(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path, heartbeat_ms=200) as server:
        silent = await RawClient.open(server.ws_url)
        reply = await silent.request({"type": "connect", "token": make_token("al")})
        assert reply["type"] == "connected"
        assert reply["heartbeat_ms"] == 200
        went_quiet = time.monotonic()
        await silent.wait_closed(timeout=5)  # reads pings, answers nothing
        elapsed = time.monotonic() - went_quiet
        assert silent.pings >= 1, "the server sent no ping"
        # Closed after two silent periods, at the next beat (a wide margin for slow hosts).
        assert 0.35 <= elapsed < 1.5, elapsed
        await silent.close()


async def test_a_client_that_answers_pings_stays_connected_across_periods(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path, heartbeat_ms=200) as server:
        # websockets answers pings on its own; ping_interval=None: it sends none of its own.
        client = await server.client("al", ping_interval=None)
        await asyncio.sleep(1.0)  # five periods with no request
        assert not client.closed.done()
        assert (await client.request({"type": "ping"}))["type"] == "pong"
        await client.close()


def test_the_nested_helper_nests_as_told() -> None:
    depth, value = 0, json.loads(json.dumps(_nested(17)))
    while isinstance(value, dict):
        depth += 1
        value = value.get("a", value.get("content"))
    assert depth == 17
