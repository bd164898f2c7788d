from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.core import rules
from tidings.core.model import Kind, Role
from tidings.core.rules import Action, allowed, draft_for_send
from tidings.protocol.codes import ErrorCode, ProtocolError


def refused(kind: str, data: dict[str, Any]) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        draft_for_send(kind, data, author="alice", client_id="c1")
    return info.value


# ---------------------------------------------------------------- policy


def test_an_owner_may_do_everything() -> None:
    assert all(allowed(Role.OWNER, action) for action in Action)


def test_a_member_may_do_everything_but_manage_members() -> None:
    assert {a for a in Action if allowed(Role.MEMBER, a)} == {
        Action.READ,
        Action.SEND,
        Action.SIGNAL,
        Action.CANCEL,
    }


def test_a_viewer_may_only_read() -> None:
    assert {a for a in Action if allowed(Role.VIEWER, a)} == {Action.READ}


def test_a_non_member_may_do_nothing() -> None:
    assert not any(allowed(None, action) for action in Action)


def test_the_policy_table_names_every_role() -> None:
    assert set(rules.POLICY) == set(Role)


# ---------------------------------------------------------------- message


def test_a_message_becomes_a_complete_user_message_by_its_author() -> None:
    draft = draft_for_send(
        "message", {"content": "Hello!", "is_code": True}, author="alice", client_id="tmp_1"
    )
    assert draft.kind == Kind.MESSAGE_CREATED
    assert draft.author == "alice"
    assert draft.client_id == "tmp_1"
    assert draft.base_version is None
    assert draft.data == {
        "message": {
            "role": "user",
            "author": "alice",
            "content": "Hello!",
            "is_code": True,
            "status": "complete",
        }
    }


def test_a_message_is_not_code_by_default_and_unknown_fields_are_ignored() -> None:
    draft = draft_for_send("message", {"content": "hi", "extra": 1}, author="a", client_id=None)
    assert draft.data["message"]["is_code"] is False
    assert "extra" not in draft.data["message"]
    assert draft.client_id is None


def test_a_message_without_content_is_a_bad_request_naming_the_field() -> None:
    err = refused("message", {})
    assert err.code == ErrorCode.BAD_REQUEST
    assert "content" in err.message


def test_a_message_with_non_text_content_is_a_bad_request_naming_the_path() -> None:
    err = refused("message", {"content": 5})
    assert err.code == ErrorCode.BAD_REQUEST
    assert "`data.content`" in err.message


def test_is_code_must_be_a_boolean_not_an_integer() -> None:
    err = refused("message", {"content": "x", "is_code": 1})
    assert err.code == ErrorCode.BAD_REQUEST
    assert "is_code" in err.message


def test_a_blank_message_is_a_bad_request() -> None:
    assert refused("message", {"content": "  \n"}).code == ErrorCode.BAD_REQUEST


def test_a_message_at_the_limit_is_accepted_and_one_more_character_is_too_large() -> None:
    draft_for_send("message", {"content": "é" * rules.MAX_CONTENT}, author="a", client_id=None)
    err = refused("message", {"content": "é" * (rules.MAX_CONTENT + 1)})
    assert err.code == ErrorCode.TOO_LARGE
    assert "content" in err.message


# ---------------------------------------------------------------- cards


def test_a_card_gets_its_fields_and_a_token_estimate() -> None:
    draft = draft_for_send(
        "card.add",
        {"title": "Spec", "content": "x" * 40, "source": "https://example.org"},
        author="bob",
        client_id="k",
    )
    assert draft.kind == Kind.CARD_ADDED
    assert draft.data == {
        "card": {
            "title": "Spec",
            "content": "x" * 40,
            "source": "https://example.org",
            "tokens": 10,
        }
    }


def test_a_short_card_costs_at_least_one_token_and_its_source_defaults_to_empty() -> None:
    draft = draft_for_send("card.add", {"title": "T", "content": ""}, author="b", client_id=None)
    assert draft.data["card"]["tokens"] == 1
    assert draft.data["card"]["source"] == ""


@pytest.mark.parametrize(
    ("data", "code"),
    [
        ({"content": "c"}, ErrorCode.BAD_REQUEST),
        ({"title": "", "content": "c"}, ErrorCode.BAD_REQUEST),
        ({"title": 3, "content": "c"}, ErrorCode.BAD_REQUEST),
        ({"title": "t"}, ErrorCode.BAD_REQUEST),
        ({"title": "t" * (rules.MAX_TITLE + 1), "content": "c"}, ErrorCode.TOO_LARGE),
        ({"title": "t", "content": "c" * (rules.MAX_CONTENT + 1)}, ErrorCode.TOO_LARGE),
        (
            {"title": "t", "content": "c", "source": "s" * (rules.MAX_SOURCE + 1)},
            ErrorCode.TOO_LARGE,
        ),
    ],
)
def test_a_bad_card_is_refused_with_the_right_code(data: dict[str, Any], code: ErrorCode) -> None:
    assert refused("card.add", data).code == code


def test_removing_a_card_names_it() -> None:
    draft = draft_for_send("card.remove", {"card_id": "c_7"}, author="a", client_id="x")
    assert draft.kind == Kind.CARD_REMOVED
    assert draft.data == {"card_id": "c_7"}


@pytest.mark.parametrize("data", [{}, {"card_id": ""}, {"card_id": 7}, {"card_id": "c" * 129}])
def test_removing_a_card_needs_a_card_id(data: dict[str, Any]) -> None:
    assert refused("card.remove", data).code == ErrorCode.BAD_REQUEST


# ---------------------------------------------------------------- session.update


def test_a_session_update_carries_its_changes_and_base_version() -> None:
    changes = {"title": "New", "status": "archived", "metadata": {"k": [1, 2]}}
    draft = draft_for_send(
        "session.update", {"changes": changes, "base_version": 3}, author="a", client_id="u"
    )
    assert draft.kind == Kind.SESSION_UPDATED
    assert draft.data == {"changes": changes}
    assert draft.base_version == 3


def test_a_session_update_without_base_version_is_last_writer_wins() -> None:
    draft = draft_for_send(
        "session.update", {"changes": {"title": "T"}}, author="a", client_id=None
    )
    assert draft.base_version is None


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"changes": {}},
        {"changes": []},
        {"changes": {"owner": "mallory"}},
        {"changes": {"title": 1}},
        {"changes": {"title": ""}},
        {"changes": {"status": None}},
        {"changes": {"metadata": "x"}},
        {"changes": {"title": "t"}, "base_version": -1},
        {"changes": {"title": "t"}, "base_version": "1"},
        {"changes": {"title": "t"}, "base_version": True},
    ],
)
def test_a_malformed_session_update_is_a_bad_request(data: dict[str, Any]) -> None:
    assert refused("session.update", data).code == ErrorCode.BAD_REQUEST


def test_an_unknown_change_is_named_in_the_error() -> None:
    assert "owner" in refused("session.update", {"changes": {"owner": "m"}}).message


@pytest.mark.parametrize(
    "changes",
    [
        {"title": "t" * (rules.MAX_TITLE + 1)},
        {"status": "s" * (rules.MAX_STATUS + 1)},
        {"metadata": {"k": "v" * rules.MAX_METADATA_BYTES}},
    ],
)
def test_oversized_changes_are_too_large(changes: dict[str, Any]) -> None:
    assert refused("session.update", {"changes": changes}).code == ErrorCode.TOO_LARGE


def test_metadata_just_under_the_byte_limit_is_accepted() -> None:
    # {"k":"…"} is 8 bytes of JSON around the value.
    metadata = {"k": "v" * (rules.MAX_METADATA_BYTES - 8)}
    draft_for_send(
        "session.update", {"changes": {"metadata": metadata}}, author="a", client_id=None
    )


def test_an_unknown_send_kind_is_a_bad_request() -> None:
    err = refused("poke", {})
    assert err.code == ErrorCode.BAD_REQUEST
    assert "poke" in err.message


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)


@given(
    kind=st.sampled_from(["message", "card.add", "card.remove", "session.update", "other"]),
    data=st.dictionaries(
        st.sampled_from(
            ["content", "is_code", "title", "source", "card_id", "changes", "base_version", "x"]
        ),
        _json,
        max_size=4,
    ),
)
def test_any_data_either_drafts_or_raises_a_protocol_error(kind: str, data: dict[str, Any]) -> None:
    code: ErrorCode | None = None
    try:
        draft_for_send(kind, data, author="a", client_id=None)
    except ProtocolError as err:
        code = err.code
    assert code in {None, ErrorCode.BAD_REQUEST, ErrorCode.TOO_LARGE}


# ---------------------------------------------------------------- server-made drafts


def test_member_drafts_carry_user_and_role() -> None:
    added = rules.draft_member_added("bob", Role.VIEWER, author="alice")
    assert (added.kind, added.author, added.data) == (
        Kind.MEMBER_ADDED,
        "alice",
        {"user": "bob", "role": "viewer"},
    )
    removed = rules.draft_member_removed("bob", "viewer", author="alice")
    assert (removed.kind, removed.data) == (Kind.MEMBER_REMOVED, {"user": "bob", "role": "viewer"})


def test_a_member_draft_refuses_an_unknown_role() -> None:
    with pytest.raises(ValueError, match="admin"):
        rules.draft_member_added("bob", "admin", author="alice")


def test_an_agent_status_carries_only_the_given_fields() -> None:
    assert rules.draft_agent_status("idle").data == {"status": "idle"}
    busy = rules.draft_agent_status("processing", task="reply", progress=0.5, author="echo")
    assert busy.data == {"status": "processing", "task": "reply", "progress": 0.5}
    assert busy.author == "echo"
    assert rules.draft_agent_status("error", error="boom").data == {
        "status": "error",
        "error": "boom",
    }


def test_an_unknown_agent_status_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="sleeping"):
        rules.draft_agent_status("sleeping")


def test_an_assistant_reply_starts_empty_and_streaming() -> None:
    draft = rules.draft_assistant_message(author="echo")
    assert draft.kind == Kind.MESSAGE_CREATED
    assert draft.author == "echo"
    assert draft.data["message"] == {
        "role": "assistant",
        "author": "echo",
        "content": "",
        "is_code": False,
        "status": "streaming",
    }


def test_a_completed_reply_carries_content_and_usage_when_known() -> None:
    done = rules.draft_message_completed("m_4", "hi", {"prompt_tokens": 3, "completion_tokens": 1})
    assert done.kind == Kind.MESSAGE_COMPLETED
    assert done.data == {
        "message_id": "m_4",
        "content": "hi",
        "usage": {"prompt_tokens": 3, "completion_tokens": 1},
    }
    assert "usage" not in rules.draft_message_completed("m_4", "hi", None).data


def test_a_failed_reply_carries_its_error() -> None:
    failed = rules.draft_message_failed("m_4", "cancelled", author="echo")
    assert (failed.kind, failed.author, failed.data) == (
        Kind.MESSAGE_FAILED,
        "echo",
        {"message_id": "m_4", "error": "cancelled"},
    )


def test_client_ids_in_the_agent_runners_namespace_are_refused() -> None:
    with pytest.raises(ProtocolError) as info:
        draft_for_send("message", {"content": "hi"}, author="al", client_id="agent:m_4:end")
    assert info.value.code == ErrorCode.BAD_REQUEST
    assert "reserved" in info.value.message
