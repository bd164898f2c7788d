"""The local copy of one session, kept by applying events in `seq` order. No I/O.

Everything the network delivers is fed in (`load_snapshot`, `receive_event`,
`receive_stream`, `receive_message`, acks and errors of sends); the replica updates its
`state` and records what the I/O layer must do next: fetch missing events (`gap`), refetch
a streaming message (`take_refetches`), resolve send handles (`take_resolved`) and tell
listeners what changed (`take_touched`).

Optimistic sends: a message sent here enters `state.messages` at once, `pending`, keyed by
its client id. It becomes the confirmed message (server id, seq) when its event is
applied — recognised by its `client_id` — or, when the event itself was skipped (a
snapshot after a reconnect), when the ack is known and the replica has reached its seq.
The entry keeps its key throughout, so a UI can use `key` as a stable list key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tidings.core.model import Kind
from tidings.core.ordering import OrderingBuffer
from tidings.protocol.client_frames import message_seq

#: Stream chunks kept per message while waiting for the text before them.
MAX_EARLY_CHUNKS = 1000


@dataclass
class ChatMessage:
    """One message of the replica.

    `status` is the server's (`complete`, `streaming`, `failed`) or `pending` for a local
    send not yet confirmed. `key` never changes: the client id of a message sent from here,
    else its server id.
    """

    key: str
    id: str | None
    seq: int | None
    role: str
    author: str
    content: str
    is_code: bool = False
    status: str = "complete"
    client_id: str | None = None
    created_at: int | None = None
    error: str | None = None
    usage: dict[str, int] | None = None

    @property
    def pending(self) -> bool:
        return self.status == "pending"

    def copy(self) -> ChatMessage:
        return dataclasses.replace(self)


@dataclass
class SessionView:
    """The replica's state, read-only for users of the SDK."""

    session_id: str
    seq: int = 0
    title: str = ""
    status: str = "active"
    version: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)
    members: dict[str, str] = field(default_factory=dict)
    presence: list[str] = field(default_factory=list)
    cards: dict[str, dict[str, Any]] = field(default_factory=dict)
    agent: dict[str, Any] = field(default_factory=lambda: {"status": "idle"})
    stats: dict[str, Any] = field(
        default_factory=lambda: {
            "messages": 0,
            "tokens": {"prompt": 0, "completion": 0},
            "cards": 0,
            "participants": 0,
        }
    )
    # Confirmed messages by server id, in seq order; pending ones by client id, in send order.
    _confirmed: dict[str, ChatMessage] = field(default_factory=dict, repr=False)
    _pending: dict[str, ChatMessage] = field(default_factory=dict, repr=False)

    @property
    def messages(self) -> list[ChatMessage]:
        """Every message, confirmed ones in log order, then local sends still pending."""
        return [*self._confirmed.values(), *self._pending.values()]

    @property
    def confirmed_messages(self) -> list[ChatMessage]:
        return list(self._confirmed.values())

    @property
    def pending_messages(self) -> list[ChatMessage]:
        return list(self._pending.values())

    def message(self, key_or_id: str) -> ChatMessage | None:
        """A message by its server id, its key or its client id."""
        found = self._confirmed.get(key_or_id) or self._pending.get(key_or_id)
        if found is not None:
            return found
        for message in self._confirmed.values():
            if message.key == key_or_id or message.client_id == key_or_id:
                return message
        return None


@dataclass(frozen=True)
class Resolved:
    """A send's fate: confirmed with its seq and event id, or failed with an error."""

    client_id: str
    ok: bool
    seq: int | None = None
    event_id: str | None = None
    error: str | None = None
    code: str | None = None


@dataclass
class _Send:
    kind: str
    ack_seq: int | None = None
    event_id: str | None = None


_USAGE_KEYS = {"prompt": ("prompt_tokens", "prompt"), "completion": ("completion_tokens",)}


def _usage_count(usage: Mapping[str, Any], name: str) -> int:
    for key in (*_USAGE_KEYS[name], name):
        value = usage.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return 0


class Replica:
    """One session's replica (see the module docstring)."""

    def __init__(self, session_id: str, *, user: str | None = None) -> None:
        self.session_id = session_id
        self.user = user
        self.state = SessionView(session_id)
        self.loaded = False
        self._order: OrderingBuffer[dict[str, Any]] = OrderingBuffer(1)
        self._sends: dict[str, _Send] = {}
        self._keys: dict[str, str] = {}  # server id → key, for messages sent from here
        self._ids: dict[str, str] = {}  # key → server id, the other way
        self._early: dict[str, list[tuple[int, str]]] = {}  # stream chunks ahead of the text
        self._refetch: set[str] = set()
        self._resolved: list[Resolved] = []
        self._touched: dict[tuple[str, str | None], None] = {}
        self._participants: set[str] = set()
        self.needs_snapshot = False

    # ------------------------------------------------------------ outputs for the I/O layer

    @property
    def seq(self) -> int:
        return self.state.seq

    @property
    def gap(self) -> tuple[int, int] | None:
        """(first, last) seq to fetch: events after them are waiting."""
        return self._order.gap

    @property
    def refetch_due(self) -> bool:
        """Some message must be refetched (see `take_refetches`)."""
        return bool(self._refetch)

    def refetch_streaming(self) -> None:
        """Refetch every reply still streaming (a resume skipped their stream frames)."""
        self._refetch.update(self.streaming_ids())

    def set_presence(self, online: list[str]) -> None:
        """A `presence` frame: who is online in the session now."""
        self.state.presence = online
        self._touch("presence")

    def take_refetches(self) -> set[str]:
        """Messages whose stream text has a hole: fetch them (GET …/messages/{id})."""
        out, self._refetch = self._refetch, set()
        return out

    def take_resolved(self) -> list[Resolved]:
        out, self._resolved = self._resolved, []
        return out

    def take_touched(self) -> list[tuple[str, str | None]]:
        """What changed since the last call, in first-touched order: (field, key) pairs,
        e.g. ("message", key), ("card", card_id), ("title", None). Each pair once."""
        out = list(self._touched)
        self._touched.clear()
        return out

    def unacked(self) -> list[str]:
        """Client ids of sends with no ack yet (to re-send after a reconnect), in order."""
        return [cid for cid, send in self._sends.items() if send.ack_seq is None]

    def message_by_key(self, key: str) -> ChatMessage | None:
        """A message by its stable `key` (what change batches name)."""
        state = self.state
        found = state._pending.get(key) or state._confirmed.get(key)
        if found is None and key in self._ids:
            found = state._confirmed.get(self._ids[key])
        return found

    def _link(self, message_id: str, key: str) -> None:
        self._keys[message_id] = key
        self._ids[key] = message_id

    def _touch(self, what: str, key: str | None = None) -> None:
        self._touched[(what, key)] = None

    # ------------------------------------------------------------ snapshot

    def load_snapshot(self, seq: int, snapshot: Mapping[str, Any]) -> None:
        """Take the session's state as of `seq` (a `subscribed` or `GET /sessions/{id}`
        snapshot). Messages older than the snapshot's window are kept; pending sends stay."""
        state = self.state
        state.title = str(snapshot.get("title", state.title))
        state.status = str(snapshot.get("status", state.status))
        state.version = int(snapshot.get("version", state.version))
        state.metadata = dict(snapshot.get("metadata") or {})
        state.members = {
            str(m["user"]): str(m["role"]) for m in snapshot.get("members", []) if "user" in m
        }
        state.presence = list(snapshot.get("presence", []))
        state.cards = {str(c["id"]): dict(c) for c in snapshot.get("cards", []) if "id" in c}
        state.agent = dict(snapshot.get("agent") or {"status": "idle"})
        stats = snapshot.get("stats")
        if isinstance(stats, Mapping):
            state.stats = {
                "messages": int(stats.get("messages", 0)),
                "tokens": dict(stats.get("tokens") or {"prompt": 0, "completion": 0}),
                "cards": int(stats.get("cards", len(state.cards))),
                "participants": int(stats.get("participants", 0)),
            }
        incoming = [m for m in snapshot.get("messages", []) if isinstance(m, Mapping)]
        oldest = min((message_seq(str(m.get("id", ""))) for m in incoming), default=seq + 1)
        merged = {mid: m for mid, m in state._confirmed.items() if (m.seq or 0) < oldest}
        for raw in incoming:
            message = self._from_wire(raw)
            old = state._confirmed.get(message.id or "")
            # Never shrink a reply we already hold more of.
            if (
                old is not None
                and old.status == message.status == "streaming"
                and len(old.content) > len(message.content)
            ):
                message.content = old.content
            merged[message.key if message.id is None else message.id] = message
            self._touch("message", message.key)
        for mid in state._confirmed:
            if mid not in merged:
                self._touch("message", state._confirmed[mid].key)
        state._confirmed = merged
        self._participants = {m.author for m in merged.values() if m.role == "user" and m.author}
        state.seq = seq
        self._order.reset(seq + 1)
        self.loaded = True
        self.needs_snapshot = False
        for what in ("title", "status", "version", "metadata", "presence", "agent", "stats"):
            self._touch(what)
        self._touch("members")
        self._touch("cards")
        self._settle_acked()

    def _from_wire(self, raw: Mapping[str, Any]) -> ChatMessage:
        mid = str(raw.get("id", ""))
        key = self._keys.get(mid, mid)
        client_id = key if key != mid else None
        usage = raw.get("usage")
        return ChatMessage(
            key=key,
            id=mid,
            seq=int(raw.get("seq") or message_seq(mid)),
            role=str(raw.get("role", "user")),
            author=str(raw.get("author", "")),
            content=str(raw.get("content", "")),
            is_code=bool(raw.get("is_code", False)),
            status=str(raw.get("status", "complete")),
            client_id=client_id,
            created_at=raw.get("created_at"),
            error=raw.get("error"),
            usage=dict(usage) if isinstance(usage, Mapping) else None,
        )

    # ------------------------------------------------------------ events

    def receive_event(self, event: Mapping[str, Any]) -> None:
        """One `event` frame (or an event from `GET …/events`), in any order, maybe twice."""
        if event.get("session") != self.session_id:
            return
        seq = event.get("seq")
        if not isinstance(seq, int):
            return
        try:
            ready = self._order.push(seq, dict(event))
        except OverflowError:
            self.needs_snapshot = True
            return
        for item in ready:
            self._apply(item)
        if ready:
            self._settle_acked()

    def receive_events(self, events: Iterable[Mapping[str, Any]]) -> None:
        for event in events:
            self.receive_event(event)

    def _apply(self, event: Mapping[str, Any]) -> None:
        state = self.state
        kind = event.get("kind")
        data = event.get("data") or {}
        client_id = event.get("client_id")
        seq = int(event["seq"])
        if kind == Kind.MESSAGE_CREATED:
            self._message_created(data.get("message") or {}, client_id, seq)
        elif kind == Kind.MESSAGE_COMPLETED:
            usage = data.get("usage")
            if isinstance(usage, Mapping):
                tokens = state.stats["tokens"]
                tokens["prompt"] = tokens.get("prompt", 0) + _usage_count(usage, "prompt")
                tokens["completion"] = tokens.get("completion", 0) + _usage_count(
                    usage, "completion"
                )
                self._touch("stats")
            message = state._confirmed.get(str(data.get("message_id", "")))
            if message is not None:
                message.content = str(data.get("content", message.content))
                message.status = "complete"
                if isinstance(usage, Mapping):
                    message.usage = dict(usage)
                self._early.pop(message.id or "", None)
                self._touch("message", message.key)
        elif kind == Kind.MESSAGE_FAILED:
            message = state._confirmed.get(str(data.get("message_id", "")))
            if message is not None:
                message.status = "failed"
                message.error = str(data.get("error", ""))
                self._early.pop(message.id or "", None)
                self._touch("message", message.key)
        elif kind == Kind.CARD_ADDED:
            card = dict(data.get("card") or {})
            if "id" in card:
                state.cards[str(card["id"])] = card
                self._touch("card", str(card["id"]))
        elif kind == Kind.CARD_REMOVED:
            card_id = str(data.get("card_id", ""))
            if state.cards.pop(card_id, None) is not None:
                self._touch("card", card_id)
        elif kind == Kind.SESSION_UPDATED:
            changes = data.get("changes") or {}
            for name in ("title", "status", "metadata"):
                if name in changes:
                    value = changes[name]
                    setattr(state, name, dict(value) if name == "metadata" else value)
                    self._touch(name)
            version = data.get("version")
            state.version = version if isinstance(version, int) else state.version + 1
            self._touch("version")
        elif kind == Kind.MEMBER_ADDED:
            state.members[str(data.get("user"))] = str(data.get("role"))
            self._touch("member", str(data.get("user")))
        elif kind == Kind.MEMBER_REMOVED:
            state.members.pop(str(data.get("user")), None)
            self._touch("member", str(data.get("user")))
        elif kind == Kind.AGENT_STATUS:
            state.agent = dict(data)
            self._touch("agent")
        if kind in (Kind.CARD_ADDED, Kind.CARD_REMOVED):
            state.stats["cards"] = len(state.cards)
            self._touch("stats")
        state.seq = seq
        if isinstance(client_id, str) and client_id in self._sends:
            send = self._sends.pop(client_id)
            self._resolved.append(
                Resolved(client_id, True, seq=seq, event_id=send.event_id or _event_id(kind, seq))
            )

    def _message_created(self, raw: Mapping[str, Any], client_id: Any, seq: int) -> None:
        state = self.state
        message = self._from_wire({**raw, "seq": seq})
        assert message.id is not None
        pending = state._pending.pop(client_id, None) if isinstance(client_id, str) else None
        if pending is not None:
            message.key = pending.key
            self._link(message.id, pending.key)
        if isinstance(client_id, str):
            message.client_id = client_id
        state._confirmed[message.id] = message
        state.stats["messages"] = int(state.stats.get("messages", 0)) + 1
        if message.role == "user" and message.author not in self._participants:
            self._participants.add(message.author)
            state.stats["participants"] = int(state.stats.get("participants", 0)) + 1
        self._touch("stats")
        self._touch("message", message.key)
        if message.status == "streaming" and message.id in self._early:
            self._drain_early(message)

    def _settle_acked(self) -> None:
        """Confirm sends whose ack is known and whose seq the replica has reached (their
        event was skipped, e.g. covered by a snapshot)."""
        state = self.state
        for client_id, send in list(self._sends.items()):
            if send.ack_seq is None or send.ack_seq > state.seq:
                continue
            del self._sends[client_id]
            pending = state._pending.pop(client_id, None)
            if pending is not None:
                confirmed = state._confirmed.get(send.event_id or "")
                if confirmed is not None:
                    confirmed.key = pending.key
                    confirmed.client_id = client_id
                    self._link(confirmed.id or "", pending.key)
                self._touch("message", pending.key)
            self._resolved.append(
                Resolved(client_id, True, seq=send.ack_seq, event_id=send.event_id)
            )

    # ------------------------------------------------------------ streams and refetches

    def receive_stream(self, message_id: str, offset: int, text: str) -> None:
        """A `stream` frame: text at `offset` of a reply. Text already held is dropped; a
        chunk past the end waits, and asks for a refetch of the message."""
        message = self.state._confirmed.get(message_id)
        if message is None or message.status != "streaming":
            if message is None and not self._is_settled(message_id):
                self._remember_early(message_id, offset, text)
            return
        self._grow(message, offset, text)

    def _is_settled(self, message_id: str) -> bool:
        """True when the message is behind the replica's position (so it was created and
        is just outside the window, or complete): frames for it are stale."""
        seq = message_seq(message_id)
        return 0 < seq <= self.state.seq

    def _remember_early(self, message_id: str, offset: int, text: str) -> None:
        chunks = self._early.setdefault(message_id, [])
        if len(chunks) < MAX_EARLY_CHUNKS:
            chunks.append((offset, text))

    def _grow(self, message: ChatMessage, offset: int, text: str) -> None:
        held = len(message.content)
        end = offset + len(text)
        if end <= held:
            return  # already have it
        if offset > held:
            self._remember_early(message.id or "", offset, text)
            self._refetch.add(message.id or "")
            return
        message.content += text[held - offset :]
        self._touch("message", message.key)
        self._drain_early(message)

    def _drain_early(self, message: ChatMessage) -> None:
        chunks = self._early.pop(message.id or "", [])
        grew = True
        while chunks and grew:
            grew = False
            held = len(message.content)
            rest = []
            for offset, text in sorted(chunks):
                if offset + len(text) <= held:
                    continue
                if offset <= held:
                    message.content += text[held - offset :]
                    held = len(message.content)
                    grew = True
                else:
                    rest.append((offset, text))
            chunks = rest
        if grew or not chunks:
            self._touch("message", message.key)
        if chunks:
            self._early[message.id or ""] = chunks
            self._refetch.add(message.id or "")

    def receive_message(self, raw: Mapping[str, Any]) -> None:
        """A message refetched over HTTP: a streaming reply's content so far."""
        message = self.state._confirmed.get(str(raw.get("id", "")))
        if message is None or message.status != "streaming":
            return  # its end event already came (or it is unknown yet: events will tell)
        content = str(raw.get("content", ""))
        if len(content) > len(message.content) and content.startswith(message.content):
            message.content = content
            self._touch("message", message.key)
        self._drain_early(message)

    def oldest_seq(self) -> int | None:
        """The seq of the oldest message held (None: none is)."""
        return min((m.seq or 0 for m in self.state._confirmed.values()), default=None)

    def add_older(self, raws: Iterable[Mapping[str, Any]]) -> list[ChatMessage]:
        """Messages older than every one held (`GET …/messages?before=`), put in front in
        log order; returns those added, oldest first. Counts are the snapshot's already."""
        state = self.state
        oldest = self.oldest_seq()
        older = sorted((self._from_wire(raw) for raw in raws), key=lambda m: m.seq or 0)
        older = [
            m
            for m in older
            if m.id and m.id not in state._confirmed and (oldest is None or (m.seq or 0) < oldest)
        ]
        state._confirmed = {**{m.id or "": m for m in older}, **state._confirmed}
        for message in older:
            if message.role == "user" and message.author:
                self._participants.add(message.author)
            self._touch("message", message.key)
        return [m.copy() for m in older]

    def streaming_ids(self) -> list[str]:
        return [m.id for m in self.state._confirmed.values() if m.status == "streaming" and m.id]

    # ------------------------------------------------------------ local sends

    def add_send(
        self,
        client_id: str,
        kind: str,
        data: Mapping[str, Any],
        *,
        author: str | None = None,
    ) -> ChatMessage | None:
        """Track a send; a `message` also enters the state at once, `pending`."""
        self._sends[client_id] = _Send(kind)
        if kind != "message":
            return None
        message = ChatMessage(
            key=client_id,
            id=None,
            seq=None,
            role="user",
            author=author or self.user or "",
            content=str(data.get("content", "")),
            is_code=bool(data.get("is_code", False)),
            status="pending",
            client_id=client_id,
        )
        self.state._pending[client_id] = message
        self._touch("message", client_id)
        return message

    def receive_ack(self, client_id: str, seq: int, event_id: str) -> None:
        send = self._sends.get(client_id)
        if send is None:
            return  # already confirmed by its event
        send.ack_seq = seq
        send.event_id = event_id
        self._settle_acked()

    def send_failed(self, client_id: str, error: str, code: str | None = None) -> None:
        """The server refused the send: the optimistic entry stays, marked `failed`."""
        if self._sends.pop(client_id, None) is None:
            return
        pending = self.state._pending.get(client_id)
        if pending is not None:
            pending.status = "failed"
            pending.error = error
            self._touch("message", client_id)
        self._resolved.append(Resolved(client_id, False, error=error, code=code))


def _event_id(kind: Any, seq: int) -> str:
    prefix = {Kind.MESSAGE_CREATED: "m", Kind.CARD_ADDED: "c"}.get(kind, "e")
    return f"{prefix}_{seq}"
