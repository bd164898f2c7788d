"""A session's state as the fold of its events, and the snapshot clients receive.

The log is the single source of truth: `SessionState` applies events one by one, in `seq`
order, and `snapshot()` renders the state as PROTOCOL.md's `subscribed.snapshot`.
Only the latest `max_messages` messages are kept (older history is read from the store);
every statistic still counts the whole log.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from tidings.core.model import Event, Kind

#: `message.completed` usage keys, as OpenAI-style (`prompt_tokens`) or short (`prompt`).
_USAGE_KEYS = {
    "prompt": ("prompt_tokens", "prompt"),
    "completion": ("completion_tokens", "completion"),
}


def _usage_count(usage: Mapping[str, Any], field: str) -> int:
    for key in _USAGE_KEYS[field]:
        value = usage.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return 0


class SessionState:
    """The fold of one session's events (see PROTOCOL.md, "subscribe")."""

    def __init__(self, session_id: str, *, max_messages: int = 50) -> None:
        if max_messages < 0:
            raise ValueError("max_messages must be >= 0")
        self.session_id = session_id
        self.max_messages = max_messages
        self.seq = 0
        self.title = ""
        self.status = "active"
        self.metadata: dict[str, Any] = {}
        self.version = 0
        self.members: dict[str, str] = {}
        self.cards: dict[str, dict[str, Any]] = {}
        self.agent: dict[str, Any] = {"status": "idle"}
        # id -> message, oldest first; dicts preserve insertion order.
        self._messages: dict[str, dict[str, Any]] = {}
        self._message_count = 0
        self._prompt_tokens = 0
        self._completion_tokens = 0
        self._participants: set[str] = set()

    # ------------------------------------------------------------ folding

    def apply(self, event: Event) -> None:
        """Apply the next event. Raises `ValueError` unless `event.seq == self.seq + 1`."""
        if event.session != self.session_id:
            raise ValueError(f"event of session {event.session!r} applied to {self.session_id!r}")
        if event.seq != self.seq + 1:
            raise ValueError(f"expected seq {self.seq + 1}, got {event.seq}")
        data = event.data
        kind = event.kind
        if kind == Kind.MESSAGE_CREATED:
            self._message_created(data["message"])
        elif kind == Kind.MESSAGE_COMPLETED:
            self._message_completed(data)
        elif kind == Kind.MESSAGE_FAILED:
            message = self._messages.get(data["message_id"])
            if message is not None:
                message["status"] = "failed"
                message["error"] = data.get("error", "")
        elif kind == Kind.CARD_ADDED:
            card = dict(data["card"])
            self.cards[card["id"]] = card
        elif kind == Kind.CARD_REMOVED:
            self.cards.pop(data["card_id"], None)
        elif kind == Kind.SESSION_UPDATED:
            # Last writer wins, field by field; metadata is one field, replaced whole.
            changes = data.get("changes", {})
            if "title" in changes:
                self.title = changes["title"]
            if "status" in changes:
                self.status = changes["status"]
            if "metadata" in changes:
                self.metadata = dict(changes["metadata"])
            version = data.get("version")
            self.version = version if isinstance(version, int) else self.version + 1
        elif kind == Kind.MEMBER_ADDED:
            self.members[data["user"]] = data["role"]
        elif kind == Kind.MEMBER_REMOVED:
            self.members.pop(data["user"], None)
        elif kind == Kind.AGENT_STATUS:
            self.agent = dict(data)
        # Unknown kinds (from a newer server) still take their place in the log.
        self.seq = event.seq

    def _message_created(self, message: Mapping[str, Any]) -> None:
        copy = dict(message)
        self._message_count += 1
        if copy.get("role") == "user":
            self._participants.add(copy.get("author", ""))
        self._messages[copy["id"]] = copy
        while len(self._messages) > self.max_messages:
            del self._messages[next(iter(self._messages))]

    def _message_completed(self, data: Mapping[str, Any]) -> None:
        usage = data.get("usage")
        if isinstance(usage, Mapping):
            self._prompt_tokens += _usage_count(usage, "prompt")
            self._completion_tokens += _usage_count(usage, "completion")
        message = self._messages.get(data["message_id"])
        if message is None:  # older than the retained window
            return
        message["content"] = data.get("content", message.get("content", ""))
        message["status"] = "complete"
        if isinstance(usage, Mapping):
            message["usage"] = dict(usage)

    # ------------------------------------------------------------ reading

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The retained messages, oldest first (live objects: do not mutate)."""
        return list(self._messages.values())

    def message(self, message_id: str) -> dict[str, Any] | None:
        """A retained message by id (a live object: do not mutate), or None."""
        return self._messages.get(message_id)

    def streaming_message_ids(self) -> list[str]:
        """The retained messages still streaming, oldest first."""
        return [mid for mid, m in self._messages.items() if m.get("status") == "streaming"]

    def stats(self) -> dict[str, Any]:
        return {
            "messages": self._message_count,
            "tokens": {"prompt": self._prompt_tokens, "completion": self._completion_tokens},
            "cards": len(self.cards),
            "participants": len(self._participants),
        }

    def snapshot(self, *, presence: list[str], partials: Mapping[str, str]) -> dict[str, Any]:
        """The state as of `self.seq`, JSON-ready (fresh top-level objects).

        `partials` holds the content so far of replies still streaming (by message id); a
        streaming message shows it with its `offset`, the length in code points.
        """
        messages = []
        for message in self._messages.values():
            out = dict(message)
            if out.get("status") == "streaming":
                content = partials.get(out["id"], out.get("content", ""))
                out["content"] = content
                out["offset"] = len(content)
            messages.append(out)
        return {
            "session": self.session_id,
            "seq": self.seq,
            "title": self.title,
            "status": self.status,
            "metadata": dict(self.metadata),
            "version": self.version,
            "members": [{"user": user, "role": role} for user, role in self.members.items()],
            "presence": list(presence),
            "agent": dict(self.agent),
            "cards": [dict(card) for card in self.cards.values()],
            "stats": self.stats(),
            "messages": messages,
        }


class Checkpoint(msgspec.Struct, kw_only=True):
    """All of a `SessionState`, to be stored and loaded: folding resumes from it.

    A cache, never the truth: it holds exactly what folding the log up to `seq` gives, so a
    lost or stale checkpoint costs a longer fold, nothing else."""

    session_id: str
    seq: int
    max_messages: int
    title: str
    status: str
    metadata: dict[str, Any]
    version: int
    members: dict[str, str]
    cards: list[dict[str, Any]]
    agent: dict[str, Any]
    messages: list[dict[str, Any]]
    message_count: int
    prompt_tokens: int
    completion_tokens: int
    participants: list[str]


_checkpoint_decoder = msgspec.json.Decoder(Checkpoint)


def checkpoint(state: SessionState) -> bytes:
    """The state, encoded (JSON) for `EventStore.save_checkpoint`."""
    return msgspec.json.encode(
        Checkpoint(
            session_id=state.session_id,
            seq=state.seq,
            max_messages=state.max_messages,
            title=state.title,
            status=state.status,
            metadata=state.metadata,
            version=state.version,
            members=state.members,
            cards=list(state.cards.values()),
            agent=state.agent,
            messages=list(state._messages.values()),
            message_count=state._message_count,
            prompt_tokens=state._prompt_tokens,
            completion_tokens=state._completion_tokens,
            participants=sorted(state._participants),
        )
    )


def restore(blob: bytes) -> SessionState:
    """The state a `checkpoint` holds; apply the events after its `seq` to bring it up to
    date. Raises `msgspec.DecodeError` (or ValidationError) for a damaged checkpoint."""
    saved = _checkpoint_decoder.decode(blob)
    state = SessionState(saved.session_id, max_messages=saved.max_messages)
    state.seq = saved.seq
    state.title = saved.title
    state.status = saved.status
    state.metadata = saved.metadata
    state.version = saved.version
    state.members = saved.members
    state.cards = {card["id"]: card for card in saved.cards}
    state.agent = saved.agent
    state._messages = {message["id"]: message for message in saved.messages}
    state._message_count = saved.message_count
    state._prompt_tokens = saved.prompt_tokens
    state._completion_tokens = saved.completion_tokens
    state._participants = set(saved.participants)
    return state


def fold(session_id: str, events: Iterable[Event], *, max_messages: int = 50) -> SessionState:
    """The state of a session after `events` (its log from seq 1, in order)."""
    state = SessionState(session_id, max_messages=max_messages)
    for event in events:
        state.apply(event)
    return state
