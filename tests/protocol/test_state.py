from __future__ import annotations

import pytest

from tidings.protocol.codes import CloseCode, ErrorCode
from tidings.protocol.state import (
    AUTHENTICATED_REQUESTS,
    INPUTS,
    REQUESTS,
    TRANSITIONS,
    ConnectionStateMachine,
    Input,
    Outcome,
    State,
    Verdict,
)

LIVE = (State.AWAITING_CONNECT, State.OPEN)
# Each input that closes a live connection, with its close code and error frame.
CLOSERS = [
    (Input.CLOSE, CloseCode.GOING_AWAY, None),
    (Input.SLOW_CONSUMER, CloseCode.SLOW_CONSUMER, None),
    (Input.RATE_ABUSE, CloseCode.RATE_LIMITED, ErrorCode.RATE_LIMITED),
    (Input.FRAME_TOO_LARGE, CloseCode.MESSAGE_TOO_BIG, None),
    (Input.INTERNAL_ERROR, CloseCode.INTERNAL_ERROR, ErrorCode.INTERNAL),
]


def machine_in(state: State) -> ConnectionStateMachine:
    """A machine driven into `state` through legal inputs only."""
    machine = ConnectionStateMachine()
    path: list[str] = {
        State.AWAITING_CONNECT: [],
        State.OPEN: ["connect", "connect_ok"],
        State.CLOSING: ["close"],
        State.CLOSED: ["closed"],
    }[state]
    for step in path:
        machine.on(step)
    assert machine.state is state
    return machine


def test_the_table_has_a_row_for_every_state_and_input() -> None:
    assert set(TRANSITIONS) == {(s, i) for s in State for i in INPUTS}


def test_the_inputs_are_every_request_type_and_every_event() -> None:
    assert {
        "connect",
        "refresh",
        "subscribe",
        "unsubscribe",
        "send",
        "signal",
        "cancel",
    } <= REQUESTS
    assert "ping" in AUTHENTICATED_REQUESTS
    assert "connect" not in AUTHENTICATED_REQUESTS
    assert not REQUESTS & set(Input)


def test_every_verdict_is_consistent_with_its_outcome() -> None:
    for verdict, _ in TRANSITIONS.values():
        assert (verdict.close_code is not None) == (verdict.outcome is Outcome.CLOSE)
        if verdict.outcome is Outcome.REJECT:
            assert verdict.error is not None
        if verdict.outcome in (Outcome.ACCEPT, Outcome.IGNORE):
            assert verdict.error is None


def test_a_new_connection_awaits_connect() -> None:
    assert ConnectionStateMachine().state is State.AWAITING_CONNECT


# ---------------------------------------------------------------- AWAITING_CONNECT


def test_connect_is_accepted_for_verification_without_opening_yet() -> None:
    machine = ConnectionStateMachine()
    assert machine.on("connect").outcome is Outcome.ACCEPT
    assert machine.state is State.AWAITING_CONNECT
    assert not machine.open


@pytest.mark.parametrize("request_type", sorted(AUTHENTICATED_REQUESTS | {Input.INVALID}))
def test_any_other_request_before_connect_is_unauthorized_and_closes_4001(
    request_type: str,
) -> None:
    machine = ConnectionStateMachine()
    verdict = machine.on(request_type)
    assert (verdict.outcome, verdict.error, verdict.close_code) == (
        Outcome.CLOSE,
        ErrorCode.UNAUTHORIZED,
        CloseCode.UNAUTHORIZED,
    )
    assert machine.state is State.CLOSING
    assert machine.ended


def test_an_unparsable_request_once_open_is_answered_and_the_connection_stays() -> None:
    machine = machine_in(State.OPEN)
    assert machine.on(Input.INVALID).accepted
    assert machine.state is State.OPEN
    assert not machine.ended


def test_a_verified_token_opens_the_connection() -> None:
    machine = ConnectionStateMachine()
    machine.on("connect")
    assert machine.on(Input.CONNECT_OK).accepted
    assert machine.state is State.OPEN
    assert machine.open


@pytest.mark.parametrize("failure", [Input.CONNECT_FAILED, Input.CONNECT_TIMEOUT])
def test_a_bad_or_missing_connect_closes_4001_after_an_unauthorized_error(failure: Input) -> None:
    machine = ConnectionStateMachine()
    verdict = machine.on(failure)
    assert verdict.outcome is Outcome.CLOSE
    assert verdict.error is ErrorCode.UNAUTHORIZED
    assert verdict.close_code is CloseCode.UNAUTHORIZED
    assert machine.state is State.CLOSING


def test_nothing_expires_before_connect() -> None:
    machine = ConnectionStateMachine()
    assert machine.on(Input.TOKEN_EXPIRED).outcome is Outcome.IGNORE
    assert machine.state is State.AWAITING_CONNECT


# ---------------------------------------------------------------- OPEN


def test_a_second_connect_is_a_bad_request_and_the_connection_stays_open() -> None:
    machine = machine_in(State.OPEN)
    verdict = machine.on("connect")
    assert (verdict.outcome, verdict.error, verdict.message) == (
        Outcome.REJECT,
        ErrorCode.BAD_REQUEST,
        "already connected",
    )
    assert machine.state is State.OPEN


@pytest.mark.parametrize("request_type", sorted(AUTHENTICATED_REQUESTS))
def test_every_request_is_handled_once_open(request_type: str) -> None:
    machine = machine_in(State.OPEN)
    assert machine.on(request_type) == Verdict(Outcome.ACCEPT)
    assert machine.state is State.OPEN


@pytest.mark.parametrize("stale", [Input.CONNECT_OK, Input.CONNECT_FAILED, Input.CONNECT_TIMEOUT])
def test_stale_connect_outcomes_are_ignored_once_open(stale: Input) -> None:
    machine = machine_in(State.OPEN)
    assert machine.on(stale).outcome is Outcome.IGNORE
    assert machine.state is State.OPEN


def test_an_expired_token_closes_4001_after_an_unauthorized_error() -> None:
    machine = machine_in(State.OPEN)
    verdict = machine.on(Input.TOKEN_EXPIRED)
    assert (verdict.outcome, verdict.error, verdict.close_code) == (
        Outcome.CLOSE,
        ErrorCode.UNAUTHORIZED,
        CloseCode.UNAUTHORIZED,
    )
    assert verdict.message == "token expired"
    assert machine.state is State.CLOSING


# ---------------------------------------------------------------- closing, from any live state


@pytest.mark.parametrize("state", LIVE)
@pytest.mark.parametrize(("closer", "code", "error"), CLOSERS)
def test_each_close_reason_closes_with_its_code(
    state: State, closer: Input, code: CloseCode, error: ErrorCode | None
) -> None:
    machine = machine_in(state)
    verdict = machine.on(closer)
    assert (verdict.outcome, verdict.close_code, verdict.error) == (Outcome.CLOSE, code, error)
    assert machine.state is State.CLOSING


@pytest.mark.parametrize("state", [State.AWAITING_CONNECT, State.OPEN, State.CLOSING])
def test_a_gone_socket_ends_in_closed(state: State) -> None:
    machine = machine_in(state)
    assert machine.on(Input.CLOSED).accepted
    assert machine.state is State.CLOSED


@pytest.mark.parametrize("state", [State.CLOSING, State.CLOSED])
@pytest.mark.parametrize("input_name", sorted(INPUTS - {Input.CLOSED}))
def test_everything_is_ignored_while_closing_and_after(state: State, input_name: str) -> None:
    machine = machine_in(state)
    assert machine.on(input_name) == Verdict(Outcome.IGNORE)
    assert machine.state is state


def test_closed_is_final() -> None:
    machine = machine_in(State.CLOSED)
    assert machine.on(Input.CLOSED).outcome is Outcome.IGNORE
    assert machine.state is State.CLOSED


def test_an_unknown_input_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="poke"):
        ConnectionStateMachine().on("poke")
