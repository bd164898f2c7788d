"""Hypothesis fuzzing of the frame parser and the connection state machine (pure code).

`parse_frame` must never raise: any bytes become requests or `ProtocolError`s, one per
object of a batch. The state machine must answer every input in every state, and keep
its rules (nothing but `connect` accepted before a successful one, CLOSED final).
The default run tries a few hundred examples; the `slow` marker runs many more.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidings.protocol.codes import ErrorCode, ProtocolError
from tidings.protocol.messages import REQUEST_TYPES, Request, parse_frame
from tidings.protocol.state import (
    INPUTS,
    REQUESTS,
    ConnectionStateMachine,
    Input,
    Outcome,
    State,
)

DEFAULT = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LARGE = settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=2**53 - 2, max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
field_names = st.sampled_from(
    ["id", "type", "token", "session", "after", "client_id", "kind", "data", "name", "message_id"]
)
#: Objects that look like requests: a known (or near) type and fields of any value.
request_like = st.builds(
    lambda kind, fields: {"type": kind, **fields},
    st.sampled_from(sorted(REQUEST_TYPES)) | st.text(max_size=10),
    st.dictionaries(field_names, json_values, max_size=6),
)
frames = (
    st.binary(max_size=300)
    | st.text(max_size=300).map(str.encode)
    | json_values.map(lambda v: json.dumps(v).encode())
    | request_like.map(lambda v: json.dumps(v).encode())
    | st.lists(request_like, min_size=1, max_size=5).map(lambda v: json.dumps(v).encode())
    | st.integers(min_value=1, max_value=3000).map(lambda n: b"[" * n)
)


def check_parse(frame: bytes) -> None:
    out = parse_frame(frame)
    assert out, "every frame yields at least one answer"
    try:
        decoded: Any = msgspec.json.decode(frame)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
        decoded = None
    if isinstance(decoded, list) and decoded:
        assert len(out) == len(decoded), "one answer per object of a batch"
    for item in out:
        assert isinstance(item, Request | ProtocolError), item
        if isinstance(item, ProtocolError):
            assert item.code is ErrorCode.BAD_REQUEST
            assert item.re is None or isinstance(item.re, int)
            assert len(item.message) < 2000, "error messages stay short"
        else:
            # A parsed request survives a round trip unchanged.
            again = parse_frame(msgspec.json.encode(item))
            assert again == [item]


@DEFAULT
@given(frames)
def test_any_frame_parses_to_requests_or_protocol_errors(frame: bytes) -> None:
    check_parse(frame)


@pytest.mark.slow
@LARGE
@given(frames)
def test_many_frames_parse_to_requests_or_protocol_errors(frame: bytes) -> None:
    check_parse(frame)


inputs = st.lists(st.sampled_from(sorted(INPUTS)), max_size=40)


def check_machine(sequence: list[str]) -> None:
    machine = ConnectionStateMachine()
    ever_open = False
    for item in sequence:
        before = machine.state
        verdict = machine.on(item)
        after = machine.state
        assert after in State
        if before is State.CLOSED:
            assert (verdict.outcome, after) == (Outcome.IGNORE, State.CLOSED)
        if before is State.CLOSING:
            assert after in (State.CLOSING, State.CLOSED)
        if item in REQUESTS and item != "connect":
            # Only an open connection handles requests.
            assert verdict.accepted == (before is State.OPEN), (before, item)
        if verdict.outcome is Outcome.REJECT:
            assert verdict.error is not None
            assert after is before
        if verdict.outcome is Outcome.CLOSE:
            assert verdict.close_code is not None
            assert after is State.CLOSING
        if after is State.OPEN:
            assert before in (State.OPEN, State.AWAITING_CONNECT)
            if before is State.AWAITING_CONNECT:
                assert item == Input.CONNECT_OK
            ever_open = True
        if item == Input.CLOSED:
            assert after is State.CLOSED
    if machine.state is State.OPEN:
        assert ever_open


@DEFAULT
@given(inputs)
def test_the_state_machine_answers_every_input_sequence_by_its_rules(sequence: list[str]) -> None:
    check_machine(sequence)


@pytest.mark.slow
@LARGE
@given(inputs)
def test_the_state_machine_answers_many_input_sequences_by_its_rules(sequence: list[str]) -> None:
    check_machine(sequence)


def test_an_unknown_input_is_a_value_error_not_a_state_change() -> None:
    machine = ConnectionStateMachine()
    with pytest.raises(ValueError, match="unknown input"):
        machine.on("sudo")
    assert machine.state is State.AWAITING_CONNECT
