"""Who may do what, the limits of every field, and the drafts each action appends.

Everything here is pure: a `send` request's `data` goes in, a validated `Draft` comes out
(or a `ProtocolError` saying exactly what is wrong). The store gives the draft its `seq`,
`ts` and derived ids (`model.finalize_data`).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Final, TypeVar

import msgspec

from tidings.core.model import Draft, Kind, Role
from tidings.protocol.codes import ErrorCode, ProtocolError


class Action(StrEnum):
    READ = "read"
    SEND = "send"
    SIGNAL = "signal"
    CANCEL = "cancel"
    MANAGE_MEMBERS = "manage_members"


#: The whole access policy. Viewers only read: they may neither send, nor signal (typing
#: indicators would reveal a viewer as a participant), nor cancel a reply.
POLICY: Final[dict[Role, frozenset[Action]]] = {
    Role.OWNER: frozenset(Action),
    Role.MEMBER: frozenset({Action.READ, Action.SEND, Action.SIGNAL, Action.CANCEL}),
    Role.VIEWER: frozenset({Action.READ}),
}


def allowed(role: Role | None, action: Action) -> bool:
    """True when a member with `role` (None: not a member) may perform `action`."""
    if role is None:
        return False
    return action in POLICY.get(role, frozenset())


# ---------------------------------------------------------------- limits

MAX_CONTENT: Final = 32_000
"""Code points of a message's or a card's content."""
MAX_TITLE: Final = 200
MAX_SOURCE: Final = 500
MAX_STATUS: Final = 32
MAX_METADATA_BYTES: Final = 8192
"""Bytes of the session metadata encoded as JSON."""

#: The fields a `session.update` may change.
SESSION_FIELDS: Final = frozenset({"title", "status", "metadata"})

#: The statuses an `agent.status` event may carry.
AGENT_STATUSES: Final = frozenset({"idle", "processing", "error"})


# ---------------------------------------------------------------- send kinds
#
# One struct per kind validates the shape of `data` (types, required fields); the sizes
# are checked afterwards so that an oversized field gets `too_large`, not `bad_request`.
# Unknown fields are ignored, as everywhere in the protocol.


class _MessageData(msgspec.Struct):
    content: str
    is_code: bool = False


class _CardAddData(msgspec.Struct):
    title: str
    content: str
    source: str = ""


class _CardRemoveData(msgspec.Struct):
    card_id: str


class _SessionUpdateData(msgspec.Struct):
    changes: dict[str, Any]
    base_version: int | None = None


def _bad(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_REQUEST, message)


_S = TypeVar("_S", bound=msgspec.Struct)


def _convert(kind: str, data: dict[str, Any], cls: type[_S]) -> _S:
    try:
        return msgspec.convert(data, cls)
    except msgspec.ValidationError as exc:
        # msgspec names the path from `$`; on the wire that object is `data`.
        detail = str(exc).replace("`$", "`data")
        raise _bad(f"invalid data for kind {kind!r}: {detail}") from None


def _check_text(name: str, value: str, limit: int, *, required: bool = True) -> None:
    if required and not value.strip():
        raise _bad(f"`{name}` must not be empty")
    if len(value) > limit:
        raise ProtocolError(
            ErrorCode.TOO_LARGE, f"`{name}` is longer than {limit} characters ({len(value)})"
        )


def estimate_tokens(content: str) -> int:
    """A rough count of the tokens `content` costs a model (about four characters each)."""
    return max(1, len(content) // 4)


def check_changes(changes: dict[str, Any]) -> dict[str, Any]:
    """Validate the `changes` of a `session.update`; returns them unchanged."""
    if not changes:
        raise _bad("`changes` must name at least one of title, status, metadata")
    unknown = sorted(set(changes) - SESSION_FIELDS)
    if unknown:
        raise _bad(
            f"`changes` may only hold title, status, metadata (not {', '.join(unknown)[:100]})"
        )
    if "title" in changes:
        title = changes["title"]
        if not isinstance(title, str):
            raise _bad("`changes.title` must be a string")
        _check_text("changes.title", title, MAX_TITLE)
    if "status" in changes:
        status = changes["status"]
        if not isinstance(status, str):
            raise _bad("`changes.status` must be a string")
        _check_text("changes.status", status, MAX_STATUS)
    if "metadata" in changes:
        metadata = changes["metadata"]
        if not isinstance(metadata, dict):
            raise _bad("`changes.metadata` must be an object")
        try:
            size = len(msgspec.json.encode(metadata))
        except (TypeError, ValueError):
            raise _bad("`changes.metadata` must be JSON") from None
        if size > MAX_METADATA_BYTES:
            raise ProtocolError(
                ErrorCode.TOO_LARGE,
                f"`changes.metadata` is larger than {MAX_METADATA_BYTES} bytes as JSON ({size})",
            )
    return changes


#: Client ids the server keeps for itself (the agent runner's).
RESERVED_CLIENT_ID_PREFIX = "agent:"


def draft_for_send(kind: str, data: dict[str, Any], *, author: str, client_id: str | None) -> Draft:
    """Validate the `data` of a client `send` of `kind` and build the event to append.

    Raises `ProtocolError`: `bad_request` for an unknown kind or a missing or mistyped
    field, `too_large` for a field over its limit.
    """
    if client_id is not None and client_id.startswith(RESERVED_CLIENT_ID_PREFIX):
        # The agent runner makes a reply's ending idempotent with `agent:…` ids; a client
        # taking one first would dedupe the real end away and leave the reply streaming.
        raise _bad(f"client ids starting with {RESERVED_CLIENT_ID_PREFIX!r} are reserved")
    if kind == "message":
        message = _convert(kind, data, _MessageData)
        _check_text("content", message.content, MAX_CONTENT)
        return Draft(
            kind=Kind.MESSAGE_CREATED,
            author=author,
            client_id=client_id,
            data={
                "message": {
                    "role": "user",
                    "author": author,
                    "content": message.content,
                    "is_code": message.is_code,
                    "status": "complete",
                }
            },
        )
    if kind == "card.add":
        card = _convert(kind, data, _CardAddData)
        _check_text("title", card.title, MAX_TITLE)
        _check_text("content", card.content, MAX_CONTENT, required=False)
        _check_text("source", card.source, MAX_SOURCE, required=False)
        return Draft(
            kind=Kind.CARD_ADDED,
            author=author,
            client_id=client_id,
            data={
                "card": {
                    "title": card.title,
                    "content": card.content,
                    "source": card.source,
                    "tokens": estimate_tokens(card.content),
                }
            },
        )
    if kind == "card.remove":
        removal = _convert(kind, data, _CardRemoveData)
        if not removal.card_id:
            raise _bad("`card_id` must not be empty")
        if len(removal.card_id) > 128:
            raise _bad("`card_id` is not a card id")
        return Draft(
            kind=Kind.CARD_REMOVED,
            author=author,
            client_id=client_id,
            data={"card_id": removal.card_id},
        )
    if kind == "session.update":
        update = _convert(kind, data, _SessionUpdateData)
        if update.base_version is not None and update.base_version < 0:
            raise _bad("`base_version` must be a version (an integer >= 0)")
        changes = check_changes(update.changes)
        return Draft(
            kind=Kind.SESSION_UPDATED,
            author=author,
            client_id=client_id,
            data={"changes": changes},
            base_version=update.base_version,
        )
    raise _bad(
        f"unknown send kind {kind[:40]!r} (expected message, card.add, card.remove, session.update)"
    )


# ---------------------------------------------------------------- server-made events


def draft_member_added(user: str, role: Role | str, *, author: str) -> Draft:
    """`user` joins the session as `role` (or changes role), by `author`'s hand."""
    return Draft(
        kind=Kind.MEMBER_ADDED, author=author, data={"user": user, "role": str(Role(role))}
    )


def draft_member_removed(user: str, role: Role | str, *, author: str) -> Draft:
    """`user` (who had `role`) leaves the session, by `author`'s hand."""
    return Draft(
        kind=Kind.MEMBER_REMOVED, author=author, data={"user": user, "role": str(Role(role))}
    )


def draft_agent_status(
    status: str,
    *,
    task: str | None = None,
    progress: float | None = None,
    error: str | None = None,
    author: str = "assistant",
    client_id: str | None = None,
) -> Draft:
    """The agent's state: `idle`, `processing` (with an optional task and progress) or `error`."""
    if status not in AGENT_STATUSES:
        raise ValueError(f"agent status must be one of {sorted(AGENT_STATUSES)}, not {status!r}")
    data: dict[str, Any] = {"status": status}
    if task is not None:
        data["task"] = task
    if progress is not None:
        data["progress"] = progress
    if error is not None:
        data["error"] = error
    return Draft(kind=Kind.AGENT_STATUS, author=author, data=data, client_id=client_id)


def draft_assistant_message(*, author: str = "assistant", client_id: str | None = None) -> Draft:
    """The start of an assistant reply: an empty message, streaming until it completes."""
    return Draft(
        client_id=client_id,
        kind=Kind.MESSAGE_CREATED,
        author=author,
        data={
            "message": {
                "role": "assistant",
                "author": author,
                "content": "",
                "is_code": False,
                "status": "streaming",
            }
        },
    )


def draft_message_completed(
    message_id: str,
    content: str,
    usage: dict[str, int] | None,
    *,
    author: str = "assistant",
    client_id: str | None = None,
) -> Draft:
    """The end of a streamed reply: its full content and the tokens the model reported."""
    data: dict[str, Any] = {"message_id": message_id, "content": content}
    if usage is not None:
        data["usage"] = dict(usage)
    return Draft(kind=Kind.MESSAGE_COMPLETED, author=author, data=data, client_id=client_id)


def draft_message_failed(
    message_id: str, error: str, *, author: str = "assistant", client_id: str | None = None
) -> Draft:
    """A reply that will not complete; `error` is shown to users as it is."""
    return Draft(
        kind=Kind.MESSAGE_FAILED,
        author=author,
        data={"message_id": message_id, "error": error},
        client_id=client_id,
    )
