from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidings.protocol.codes import ErrorCode, ProtocolError
from tidings.protocol.messages import (
    MAX_DATA_DEPTH,
    Ack,
    Connect,
    Error,
    Ping,
    Send,
    Signal,
    SignalOut,
    Subscribe,
    Subscribed,
    batch,
    encode,
    error_from,
    parse_frame,
)

RELAXED = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def one(frame: str | bytes) -> Any:
    parsed = parse_frame(frame)
    assert len(parsed) == 1
    return parsed[0]


def error_of(frame: str | bytes | dict[str, Any]) -> ProtocolError:
    text = frame if isinstance(frame, str | bytes) else json.dumps(frame)
    parsed = one(text)
    assert isinstance(parsed, ProtocolError)
    assert parsed.code == ErrorCode.BAD_REQUEST
    return parsed


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"k": value}
    return value


# ---------------------------------------------------------------- good requests


def test_a_request_becomes_its_struct() -> None:
    parsed = one('{"type": "subscribe", "id": 2, "session": "s_01", "after": 40}')
    assert parsed == Subscribe(id=2, session="s_01", after=40)


def test_bytes_frames_are_parsed_too() -> None:
    assert one(b'{"type": "ping", "id": 7}') == Ping(id=7)


def test_optional_fields_take_their_defaults_and_unknown_fields_are_ignored() -> None:
    assert one('{"type": "connect", "id": 1, "future": true}') == Connect(id=1)
    send = one('{"type": "send", "id": 3, "session": "s", "client_id": "c", "kind": "message"}')
    assert send == Send(id=3, session="s", client_id="c", kind="message", data={})


def test_a_signal_needs_no_id() -> None:
    parsed = one('{"type": "signal", "session": "s", "name": "typing", "data": {"typing": true}}')
    assert parsed == Signal(session="s", name="typing", data={"typing": True})


# ---------------------------------------------------------------- bad frames


@pytest.mark.parametrize("frame", ["", "{", "not json", '{"type": "ping", "id": 1', "\xff"])
def test_malformed_json_is_a_bad_request_without_re(frame: str) -> None:
    err = error_of(frame)
    assert err.re is None
    assert "malformed JSON" in err.message


def test_invalid_utf8_bytes_are_a_bad_request() -> None:
    assert error_of(b'{"type": "ping", "id": 1, "x": "\xff"}').re is None


@pytest.mark.parametrize("frame", ["1", '"ping"', "null", "[1]"])
def test_a_frame_that_is_no_object_is_a_bad_request(frame: str) -> None:
    assert "object" in error_of(frame).message


def test_an_empty_batch_is_a_bad_request() -> None:
    assert error_of("[]").message == "empty batch"


def test_an_unknown_type_is_a_bad_request_that_keeps_the_id_as_re() -> None:
    err = error_of({"type": "launch", "id": 9})
    assert err.re == 9
    assert "launch" in err.message


def test_an_unknown_type_name_is_truncated_in_the_message() -> None:
    err = error_of({"type": "x" * 1000, "id": 1})
    assert len(err.message) < 100


def test_a_missing_type_is_a_bad_request_that_keeps_the_id() -> None:
    err = error_of({"id": 4})
    assert (err.re, err.message) == (4, "missing field `type`")


@pytest.mark.parametrize("raw_id", [True, "5", 1.5, None])
def test_an_id_that_is_not_an_integer_is_not_echoed_as_re(raw_id: Any) -> None:
    assert error_of({"type": "launch", "id": raw_id}).re is None


@pytest.mark.parametrize(
    ("frame", "field"),
    [
        ({"type": "subscribe", "id": 2, "session": 5}, "session"),
        ({"type": "subscribe", "id": 2, "session": ""}, "session"),
        ({"type": "subscribe", "id": 2, "session": "s", "after": -1}, "after"),
        ({"type": "subscribe", "id": 2, "session": "s", "after": "3"}, "after"),
        (
            {"type": "send", "id": 2, "session": "s", "client_id": "c", "kind": "m", "data": []},
            "data",
        ),
        ({"type": "send", "id": 2, "session": "s", "kind": "message"}, "client_id"),
        ({"type": "refresh", "id": 2}, "token"),
        ({"type": "ping", "id": 2**53 + 1}, "id"),
        ({"type": "ping", "id": -1}, "id"),
        ({"type": "cancel", "id": 2, "session": "s", "message_id": "m" * 129}, "message_id"),
    ],
)
def test_a_wrong_field_is_a_bad_request_naming_it(frame: dict[str, Any], field: str) -> None:
    err = error_of(frame)
    assert field in err.message
    if isinstance(frame["id"], int) and 0 <= frame["id"] <= 2**53:
        assert err.re == frame["id"]


def test_a_request_without_its_id_is_a_bad_request() -> None:
    assert "id" in error_of({"type": "ping"}).message


def test_data_nested_up_to_the_limit_is_accepted() -> None:
    frame = {"type": "signal", "session": "s", "name": "n", "data": nested(MAX_DATA_DEPTH - 1)}
    assert isinstance(one(json.dumps(frame)), Signal)


def test_data_nested_deeper_than_the_limit_is_a_bad_request_keeping_the_id() -> None:
    frame = {
        "type": "send",
        "id": 8,
        "session": "s",
        "client_id": "c",
        "kind": "session.update",
        "data": {"changes": {"metadata": nested(MAX_DATA_DEPTH)}},
    }
    err = error_of(frame)
    assert err.re == 8
    assert "deeper" in err.message


def test_a_frame_nested_absurdly_deep_is_refused_without_crashing() -> None:
    frame = '{"type": "ping", "id": 1, "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    assert error_of(frame).re is None


# ---------------------------------------------------------------- batches


def test_a_batch_yields_one_result_per_entry_in_order() -> None:
    frame = json.dumps(
        [
            {"type": "ping", "id": 1},
            {"type": "launch", "id": 2},
            {"type": "subscribe", "id": 3, "session": "s"},
            {"type": "subscribe", "id": 4},
            "junk",
        ]
    )
    parsed = parse_frame(frame)
    assert len(parsed) == 5
    assert parsed[0] == Ping(id=1)
    assert isinstance(parsed[1], ProtocolError)
    assert parsed[1].re == 2
    assert parsed[2] == Subscribe(id=3, session="s")
    assert isinstance(parsed[3], ProtocolError)
    assert parsed[3].re == 4
    assert isinstance(parsed[4], ProtocolError)
    assert parsed[4].re is None


@RELAXED
@given(
    st.text(max_size=200)
    | st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
        ),
        max_leaves=20,
    ).map(json.dumps)
)
def test_parse_frame_never_raises(frame: str) -> None:
    parsed = parse_frame(frame)
    assert parsed
    for item in parsed:
        if isinstance(item, ProtocolError):
            assert item.code == ErrorCode.BAD_REQUEST


@RELAXED
@given(
    request_id=st.integers(0, 2**53),
    session=st.text(min_size=1, max_size=128),
    after=st.none() | st.integers(0, 2**63 - 1),
)
def test_a_valid_subscribe_round_trips(request_id: int, session: str, after: int | None) -> None:
    frame: dict[str, Any] = {"type": "subscribe", "id": request_id, "session": session}
    if after is not None:
        frame["after"] = after
    assert one(json.dumps(frame)) == Subscribe(id=request_id, session=session, after=after)


# ---------------------------------------------------------------- server frames


def test_subscribed_always_carries_its_snapshot_even_when_null() -> None:
    frame = json.loads(encode(Subscribed(re=2, session="s", seq=45)))
    assert frame == {"type": "subscribed", "re": 2, "session": "s", "seq": 45, "snapshot": None}
    with_snapshot = Subscribed(
        re=2, session="s", seq=1, snapshot=msgspec.Raw(b'{"seq":1}'), recovered=False
    )
    assert json.loads(encode(with_snapshot))["snapshot"] == {"seq": 1}


def test_a_relayed_signal_names_its_sender_as_from() -> None:
    frame = json.loads(encode(SignalOut(session="s", name="typing", data={}, sender="alice")))
    assert frame["from"] == "alice"
    assert "sender" not in frame


def test_an_error_frame_carries_the_extras_of_its_protocol_error() -> None:
    err = ProtocolError(
        ErrorCode.RATE_LIMITED, "slow down", re=3, extra={"retry_after_ms": 500, "junk": 1}
    )
    assert error_from(err) == Error(
        code="rate_limited", message="slow down", re=3, retry_after_ms=500
    )
    assert json.loads(encode(error_from(err))) == {
        "type": "error",
        "code": "rate_limited",
        "message": "slow down",
        "re": 3,
        "retry_after_ms": 500,
    }


def test_a_batch_of_one_is_the_frame_itself_and_more_is_an_array() -> None:
    ack = encode(Ack(re=None, session="s", client_id="c", seq=1, event_id="m_1", duplicate=False))
    assert batch([ack]) == ack
    assert json.loads(batch([ack, ack])) == [json.loads(ack)] * 2
