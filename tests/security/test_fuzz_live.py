"""Hypothesis fuzzing of a live connection: random sequences of valid and invalid frames
over a real socket.

After each sequence: the server logged no error, the connection still answers a ping
(or was closed with a code the sequence explains), and the server's record of the
connection agrees with what it told the client (open iff `connected` was replied, the
subscriptions those the replies granted). The server runs in a thread of its own with
its own event loop, so Hypothesis can drive it from a plain test, one example at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.security.attacks import ServerErrors, ThreadedServer
from tests.server.harness import Client, Frame, Server, make_token
from tidings.protocol.state import State
from tidings.server.connection import Connection

T = TypeVar("T")

DEFAULT = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
LARGE = settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def threaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedServer]:
    server = ThreadedServer(tmp_path_factory.mktemp("fuzz-live"), rate_limit=0)
    try:
        yield server
    finally:
        server.close()


SESSION = "{session}"  # replaced by the real session id when sent


def _valid(kind: str) -> st.SearchStrategy[Frame]:
    session = st.sampled_from([SESSION, "s_nope"])
    shapes: dict[str, st.SearchStrategy[Frame]] = {
        "connect": st.builds(
            lambda user, good: {"type": "connect", "token": make_token(user) if good else "x"},
            st.sampled_from(["fuzzer", "viewer", "stranger"]),
            st.booleans(),
        ),
        "refresh": st.just({"type": "refresh", "token": "later"}),
        "subscribe": st.builds(
            lambda s, a: {"type": "subscribe", "session": s, **({"after": a} if a else {})},
            session,
            st.integers(0, 5) | st.none(),
        ),
        "unsubscribe": st.builds(lambda s: {"type": "unsubscribe", "session": s}, session),
        "send": st.builds(
            lambda s, c, content: {
                "type": "send",
                "session": s,
                "client_id": c,
                "kind": "message",
                "data": {"content": content},
            },
            session,
            st.sampled_from(["a", "b", "c"]),
            st.text(min_size=1, max_size=30),
        ),
        "signal": st.builds(
            lambda s: {"type": "signal", "session": s, "name": "typing", "data": {}}, session
        ),
        "cancel": st.builds(
            lambda s: {"type": "cancel", "session": s, "message_id": "m_1"}, session
        ),
        "ping": st.just({"type": "ping"}),
    }
    return shapes[kind].map(lambda f: {**f, "id": 0})


valid_frames = st.sampled_from(
    ["connect", "refresh", "subscribe", "unsubscribe", "send", "signal", "cancel", "ping"]
).flatmap(_valid)
junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
invalid_frames = (
    junk.map(json.dumps)
    | st.text(max_size=40)
    | valid_frames.flatmap(
        lambda f: st.builds(lambda key, value: {**f, key: value}, st.sampled_from(sorted(f)), junk)
    )
)
sequences = st.lists(
    st.one_of(valid_frames, valid_frames, invalid_frames).map(lambda f: ("frame", f))
    | st.lists(valid_frames, min_size=2, max_size=4).map(lambda b: ("batch", b)),
    min_size=1,
    max_size=12,
)


def _wire(item: Frame | str, session: str, ids: Iterator[int]) -> Frame | str:
    if isinstance(item, str):
        return item
    frame = json.loads(json.dumps(item).replace(SESSION, session))
    if isinstance(frame, dict) and frame.get("id") == 0:
        frame["id"] = next(ids)
    if isinstance(frame, dict) and frame.get("token") == "later":
        frame["token"] = make_token("fuzzer")
    return frame  # type: ignore[no-any-return]


async def eventually(predicate: Callable[[], bool], timeout: float = 5) -> None:
    """Wait (polling the server's own state, which has no event to await) until true."""
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the server never settled")


async def play(server: Server, session: str, sequence: list[tuple[str, Any]]) -> None:
    assert server.node is not None
    node = server.node
    client = await Client.open(server.ws_url)
    ids = iter(range(10_000, 1_000_000))
    try:
        await eventually(lambda: len(node.connections) == 1)
        conn = next(iter(node.connections))
        for how, item in sequence:
            if how == "batch":
                await client.send(json.dumps([_wire(f, session, ids) for f in item]))
            else:
                wired = _wire(item, session, ids)
                await client.send(wired if isinstance(wired, str) else json.dumps(wired))
        await _check(client, conn)
    finally:
        with contextlib.suppress(Exception):
            await client.close()
    # Every connection the server held for us is gone once we are.
    await eventually(lambda: not node.connections)


async def _check(client: Client, conn: Connection) -> None:
    """Probe with a ping, let the connection settle, then hold the server's record of it
    against what it told the client."""
    final_id = 999_999_999
    probe: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
    client._waiting[final_id] = probe
    with contextlib.suppress(Exception):
        await client.send({"type": "ping", "id": final_id})
    closed: asyncio.Future[Any] = client.closed
    await asyncio.wait([probe, closed], timeout=10, return_when=asyncio.FIRST_COMPLETED)
    await eventually(lambda: conn._worker is None)
    await asyncio.sleep(0.05)  # a close decided by the worker reaches the client
    received: list[Frame] = []
    while not client.inbox.empty():
        received.append(client.inbox.get_nowait())
    connected = [f for f in received if f["type"] == "connected"]
    if client.closed.done():
        # Closed: only a refused connect (unauthorized, then 4001) explains it.
        code, _ = client.closed.result()
        assert code == 4001, (code, received[-3:])
        assert any(f.get("code") == "unauthorized" for f in received)
        assert conn.machine.state in (State.CLOSING, State.CLOSED)
        return
    assert probe.done(), "no answer to a ping and no close"
    answer = probe.result()
    assert answer["type"] == "pong" or answer.get("code") == "unauthorized", answer
    if answer["type"] == "pong":
        assert connected, "a pong before any connected"
    # Open exactly when a connect was answered `connected`, for the user it named.
    if connected:
        assert conn.machine.state is State.OPEN
        assert conn.user == connected[0]["user"]
    else:
        assert conn.machine.state is State.AWAITING_CONNECT
        assert conn.user is None
        assert not conn.subscriptions
    # Only sessions a `subscribed` reply named are held: nothing refused slipped in.
    granted = {f["session"] for f in received if f["type"] == "subscribed"}
    assert conn.subscriptions <= granted, (conn.subscriptions, granted)


@DEFAULT
@given(sequence=sequences)
def test_random_frame_sequences_leave_the_connection_consistent(
    threaded: ThreadedServer, sequence: list[tuple[str, Any]], server_errors: ServerErrors
) -> None:
    threaded.run(play(threaded.server, threaded.session, sequence))
    assert not server_errors.lines()


@pytest.mark.slow
@LARGE
@given(sequence=sequences)
def test_many_random_frame_sequences_leave_the_connection_consistent(
    threaded: ThreadedServer, sequence: list[tuple[str, Any]], server_errors: ServerErrors
) -> None:
    threaded.run(play(threaded.server, threaded.session, sequence))
    assert not server_errors.lines()
