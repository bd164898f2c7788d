"""The client's sans-I/O core: the connection table walked pair by pair, request
matching, re-sends per link, heartbeats and the small rules, all without a network."""

from __future__ import annotations

import ast
import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest

import tidings.client
from tidings.client.errors import AuthError, TidingsError
from tidings.client.protocol import (
    TRANSITIONS,
    Action,
    Beat,
    ConnectionMachine,
    ConnectionState,
    Input,
    LinkCore,
    Probe,
    Route,
    Startup,
    close_error,
    connect_reply,
    connect_request,
    encode,
    refresh_delay,
    resume_after,
    route,
    send_retry_s,
    startup,
)
from tidings.protocol.messages import parse_frame

S = ConnectionState
LIVE = (S.CONNECTING, S.CONNECTED, S.RECONNECTING, S.FALLBACK)


def machine_in(state: ConnectionState, *, fallback_after: int | None = 3) -> ConnectionMachine:
    machine = ConnectionMachine(fallback_after=fallback_after)
    machine.state = state
    return machine


def test_the_table_has_a_transition_for_every_state_and_input() -> None:
    assert set(TRANSITIONS) == set(itertools.product(ConnectionState, Input))


def test_walking_the_table_each_input_leads_where_the_table_says() -> None:
    for (state, input), transition in TRANSITIONS.items():
        machine = machine_in(state)
        assert machine.on(input) is transition
        expected = state if transition.ignored else transition.to
        assert machine.state is expected, (state, input)
        if transition.ignored:
            assert transition.actions == ()
            assert transition.to is state


def test_closed_is_final_and_every_live_state_can_close_or_be_refused() -> None:
    for input in Input:
        assert TRANSITIONS[(S.CLOSED, input)].ignored
    for state in LIVE:
        assert TRANSITIONS[(state, Input.CLOSE)].to is S.CLOSED
        refused = TRANSITIONS[(state, Input.REFUSED)]
        assert refused.to is S.CLOSED
        assert Action.FAIL_EVERYTHING in refused.actions


def test_every_state_but_idle_and_closed_is_reached_from_idle() -> None:
    reached = {S.IDLE}
    frontier = [S.IDLE]
    while frontier:
        state = frontier.pop()
        for (source, _), transition in TRANSITIONS.items():
            if source is state and transition.to not in reached:
                reached.add(transition.to)
                frontier.append(transition.to)
    assert reached == set(ConnectionState)


def test_the_fallback_starts_on_the_failure_that_reaches_fallback_after() -> None:
    machine = ConnectionMachine(fallback_after=3)
    machine.on(Input.START)
    first = machine.attempt_failed()
    assert (first.to, first.actions) == (S.RECONNECTING, ())
    assert machine.attempt_failed().actions == ()
    third = machine.attempt_failed()
    assert (third.to, third.actions) == (S.FALLBACK, (Action.START_FALLBACK,))
    # More failures keep the fallback, without starting it twice.
    assert machine.attempt_failed().ignored
    assert machine.state is S.FALLBACK


def test_without_fallback_after_failures_only_ever_reconnect() -> None:
    machine = ConnectionMachine(fallback_after=None)
    machine.on(Input.START)
    for _ in range(50):
        assert Action.START_FALLBACK not in machine.attempt_failed().actions
    assert machine.state is S.RECONNECTING
    assert machine.retry_attempt() == 49


def test_a_link_opening_in_fallback_stops_it_and_the_resume_connects() -> None:
    machine = machine_in(S.FALLBACK)
    machine.failures = 7
    opened = machine.link_open()
    assert (opened.to, opened.actions) == (S.FALLBACK, (Action.STOP_FALLBACK,))
    assert machine.failures == 0
    assert machine.on(Input.RESUMED).to is S.CONNECTED


def test_a_lost_link_counts_a_reconnect_and_retries_at_the_first_backoff_step() -> None:
    machine = machine_in(S.CONNECTED)
    assert machine.on(Input.LINK_LOST).to is S.RECONNECTING
    assert machine.reconnects == 1
    assert machine.retry_attempt() == 0


def new_link() -> LinkCore[str]:
    return LinkCore(itertools.count(1), heartbeat_s=4.0, last_rx=100.0)


def test_a_reply_is_matched_to_the_request_that_waits_for_it_by_id() -> None:
    link = new_link()
    first = link.subscribe("s_1", None, "waiter-1")
    second = link.subscribe("s_2", 5, "waiter-2")
    assert json.loads(encode(first)) == {"type": "subscribe", "id": 1, "session": "s_1"}
    assert json.loads(encode(second))["after"] == 5
    routed = route({"type": "subscribed", "re": 2, "session": "s_2", "seq": 5}, link)
    assert (routed.route, routed.session, routed.waiter) == (Route.SUBSCRIBED, "s_2", "waiter-2")
    assert route({"type": "subscribed", "re": 2, "session": "s_2"}, link).waiter is None
    assert link.lost() == ["waiter-1"]
    assert not link.live


def test_a_send_goes_out_once_per_link_and_its_ack_clears_it() -> None:
    link = new_link()
    frame = link.send("s_1", "tmp_a", "message", {"content": "hi"})
    assert frame is not None
    assert link.send("s_1", "tmp_a", "message", {"content": "hi"}) is None
    assert link.unsent([("s_1", "tmp_a"), ("s_1", "tmp_b")]) == [("s_1", "tmp_b")]
    routed = route({"type": "ack", "re": frame.id, "session": "s_1", "client_id": "tmp_a"}, link)
    assert routed.route is Route.ACK
    assert link.sends == {}
    # A new link has sent nothing: everything unacknowledged goes out again on it.
    assert new_link().unsent([("s_1", "tmp_a")]) == [("s_1", "tmp_a")]


def test_a_refused_send_is_named_by_its_request_id_and_retryable_codes_wait() -> None:
    link = new_link()
    limited = link.send("s_1", "tmp_a", "message", {})
    refused = link.send("s_1", "tmp_b", "message", {})
    assert limited is not None
    assert refused is not None
    retry = route(
        {"type": "error", "re": limited.id, "code": "rate_limited", "retry_after_ms": 250}, link
    )
    assert (retry.route, retry.session, retry.client_id, retry.retry_in_s) == (
        Route.SEND_RETRY,
        "s_1",
        "tmp_a",
        0.25,
    )
    assert "tmp_a" not in link.sent  # may go out again on this link
    failed = route({"type": "error", "re": refused.id, "code": "forbidden"}, link)
    assert (failed.route, failed.client_id) == (Route.SEND_REFUSED, "tmp_b")
    assert failed.error is not None
    assert failed.error.code == "forbidden"


def test_an_error_without_re_ends_that_sessions_subscription() -> None:
    routed = route({"type": "error", "code": "forbidden", "session": "s_1"}, new_link())
    assert routed.route is Route.ENDED
    assert routed.error is not None
    assert routed.error.code == "forbidden"
    assert route({"type": "whatever", "session": "s_1"}, None).route is Route.NONE


def test_the_heartbeat_pings_after_half_a_period_and_drops_after_one_and_a_half() -> None:
    link = new_link()  # period 4 s, last frame at t=100
    assert link.heartbeat_tick_s == 1.0
    assert link.heartbeat(101.0) is Beat.WAIT
    assert link.heartbeat(102.5) is Beat.PING
    assert link.heartbeat(103.0) is Beat.WAIT  # one ping out at a time
    link.received(103.5)
    assert link.heartbeat(106.0) is Beat.PING
    assert link.heartbeat(109.6) is Beat.DROP


def test_the_small_rules() -> None:
    class Replica:
        loaded = False
        seq = 12

    assert resume_after(Replica()) is None
    Replica.loaded = True
    assert resume_after(Replica()) == 12
    assert refresh_delay(exp=1000, now=700) == 240  # 60 s before exp
    assert refresh_delay(exp=1000, now=970) == 20  # two thirds of the rest
    assert refresh_delay(exp=1000, now=1005) == 0.05
    assert send_retry_s(TidingsError("unavailable", "")) == 0.5
    assert send_retry_s(TidingsError("conflict", "")) is None
    assert close_error(1001, "") is None
    refused = close_error(4003, "")
    assert isinstance(refused, AuthError)
    assert refused.code == "forbidden"


def test_the_connect_reply_gives_user_and_heartbeat_or_raises() -> None:
    reply = {"type": "connected", "user": "al", "heartbeat_ms": 2000}
    assert connect_reply([reply], heartbeat_s=None) == ("al", 2.0)
    assert connect_reply([reply], heartbeat_s=9.0) == ("al", 9.0)
    with pytest.raises(AuthError):
        connect_reply([{"type": "error", "code": "unauthorized"}], heartbeat_s=None)
    with pytest.raises(TidingsError, match="bad_reply"):
        connect_reply([], heartbeat_s=None)


def test_importing_the_sdk_pulls_in_no_server_dependency() -> None:
    code = (
        "import sys, tidings.client\n"
        "heavy = {'uvicorn', 'fastapi', 'starlette', 'asyncpg', 'openai', 'tidings.server'}\n"
        "print(sorted(m for m in sys.modules if m in heavy or m.startswith('tidings.server')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


def test_every_request_the_core_builds_is_one_the_servers_parser_accepts() -> None:
    link = new_link()
    requests = [
        connect_request(next(link.ids), "a.b.c", "tidings-py/test"),
        link.subscribe("s_1", None, "w"),
        link.subscribe("s_1", 3, "w"),
        link.unsubscribe("s_1"),
        link.send("s_1", "tmp_a", "message", {"content": "hi", "is_code": False}),
        link.signal("s_1", "typing", {"typing": True}),
        link.cancel("s_1", "m_4", "w"),
        link.refresh("d.e.f", "w"),
        link.ping(),
    ]
    for request in requests:
        assert request is not None
        [parsed] = parse_frame(encode(request))
        assert parsed == request, encode(request)


def sdk_imports() -> dict[str, set[str]]:
    """Module → the `tidings.client` modules it imports (TYPE_CHECKING imports included)."""
    package = Path(tidings.client.__file__).parent
    graph: dict[str, set[str]] = {}
    for path in package.glob("*.py"):
        name = f"tidings.client.{path.stem}" if path.stem != "__init__" else "tidings.client"
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        graph[name] = {m for m in found if m.startswith("tidings.client.")}
    return graph


def test_the_sdk_modules_import_each_other_without_a_cycle() -> None:
    graph = sdk_imports()
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, f"import cycle: {' → '.join((*path, module))}"
        if module in done:
            return
        for imported in graph.get(module, set()):
            visit(imported, (*path, module))
        done.add(module)

    for module in graph:
        visit(module, ())
    assert len(graph) >= 12


def test_connect_returns_when_connected_or_in_a_fallback_that_answers_and_fails_fast() -> None:
    assert startup(S.CONNECTED, Probe.NOT_YET, timed_out=False) is Startup.READY
    assert startup(S.FALLBACK, Probe.ANSWERED, timed_out=True) is Startup.READY
    assert startup(S.FALLBACK, Probe.NOT_YET, timed_out=False) is Startup.WAIT
    assert startup(S.FALLBACK, Probe.FAILED, timed_out=False) is Startup.FAILED
    assert startup(S.RECONNECTING, Probe.NOT_YET, timed_out=False) is Startup.WAIT
    assert startup(S.RECONNECTING, Probe.NOT_YET, timed_out=True) is Startup.FAILED
    assert startup(S.CLOSED, Probe.NOT_YET, timed_out=False) is Startup.FAILED
