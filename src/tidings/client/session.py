"""A joined session: its replica, its change feed and the sends made in it.

Every input from the network goes through `Session._after_input`, which turns what the
replica recorded into handle resolutions, change batches and fetches.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import uuid
from collections.abc import Callable, Coroutine, Generator
from typing import Any, Protocol, TypeVar

from tidings.client.changes import Callback, ChangeFeed, ChangeStream
from tidings.client.errors import SendFailed, TidingsError
from tidings.client.http_api import HttpApi
from tidings.client.replica import ChatMessage, Replica, Resolved, SessionView
from tidings.protocol.client_frames import Frame

log = logging.getLogger("tidings.client")

T = TypeVar("T")

#: Gap fetches failing this many times in a row give up (the next input retries).
MAX_FETCH_FAILURES = 20
#: The longest pause between two failed gap fetches, and the step it grows by.
FETCH_PAUSE_CAP_S = 2.0
FETCH_PAUSE_STEP_S = 0.1
#: A gap whose events are committed but not yet readable: look again after this.
UNREADABLE_YET_S = 0.05
#: Events fetched per request to fill a gap (the server's `limit` bound).
GAP_FETCH_LIMIT = 1000
#: How long a member change waits for its event to reach the replica (it is durable
#: already; this only makes `state.members` show it when the call returns).
MEMBER_EVENT_WAIT_S = 10.0
#: Older messages fetched per `load_older` call by default (the server allows 200).
OLDER_PAGE = 50


class SessionHost(Protocol):
    """What a session needs of the client that joined it (and nothing more)."""

    @property
    def user(self) -> str | None: ...

    @property
    def closing(self) -> bool: ...

    @property
    def api(self) -> HttpApi: ...

    def spawn(self, coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        """Run a task the client stops on close."""
        ...

    def check_queue(self) -> None:
        """Raise when no send may be queued now (closed, or the offline queue is full)."""

    def queue_send(self, session: Session, client_id: str) -> None:
        """A send entered `session.outgoing`: transmit it when the link allows."""

    def send_signal(self, session_id: str, name: str, data: dict[str, Any]) -> None: ...

    async def cancel_reply(self, session_id: str, message_id: str) -> None: ...

    async def leave(self, session: Session) -> None: ...


class SendHandle:
    """What `send_message` (and the other sends) return at once, without an await.

    `status` is `pending`, then `confirmed` (with `seq` and `event_id`) or `failed` (with
    `error`). `await handle` waits for the outcome, returns the handle confirmed and raises
    `SendFailed` on failure; so `await session.send_message(...)` is a confirmed send.
    """

    def __init__(self, session: Session, client_id: str, kind: str) -> None:
        self.session = session
        self.client_id = client_id
        self.kind = kind
        self.status = "pending"
        self.seq: int | None = None
        self.event_id: str | None = None
        self.error: TidingsError | None = None
        self._done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def __repr__(self) -> str:
        return f"<SendHandle {self.kind} {self.client_id} {self.status}>"

    @property
    def message(self) -> ChatMessage | None:
        """The message this send made (for `send_message`), as the replica holds it now."""
        return self.session.replica.message_by_key(self.client_id)

    def done(self) -> bool:
        return self._done.done()

    async def wait(self, timeout: float | None = None) -> SendHandle:
        await asyncio.wait_for(asyncio.shield(self._done), timeout)
        if self.error is not None:
            raise SendFailed(self.error.code, self.error.message, version=self.error.version)
        return self

    def __await__(self) -> Generator[Any, None, SendHandle]:
        return self.wait().__await__()

    def _resolve(self, resolved: Resolved | None, error: TidingsError | None = None) -> None:
        if self._done.done():
            return
        if resolved is not None and resolved.ok:
            self.status = "confirmed"
            self.seq = resolved.seq
            self.event_id = resolved.event_id
        else:
            self.status = "failed"
            self.error = error or TidingsError(
                (resolved.code if resolved else None) or "failed",
                (resolved.error if resolved else None) or "the send failed",
            )
        self._done.set_result(None)


class Session:
    """A session joined with `client.join(session_id)`; `state` is its live replica."""

    def __init__(self, host: SessionHost, session_id: str, *, debounce_s: float) -> None:
        self.host = host
        self.id = session_id
        self.replica = Replica(session_id, user=host.user)
        self.feed = ChangeFeed(
            session_id, self._render, debounce_s=debounce_s, seq=lambda: self.replica.seq
        )
        self.outgoing: dict[str, tuple[str, dict[str, Any]]] = {}
        self.handles: dict[str, SendHandle] = {}
        self.error: TidingsError | None = None
        self.ready: asyncio.Future[TidingsError | None] = asyncio.get_running_loop().create_future()
        self._signals: dict[str, dict[str, Any]] = {}
        self._worker: asyncio.Task[None] | None = None
        self._seq_waiters: list[tuple[int, asyncio.Future[None]]] = []

    def __repr__(self) -> str:
        return f"<Session {self.id} seq={self.replica.seq}>"

    # ------------------------------------------------------------ public API

    @property
    def state(self) -> SessionView:
        return self.replica.state

    def changes(self) -> ChangeStream:
        """`async for batch in session.changes():` debounced change batches from now on."""
        return self.feed.stream()

    def on_change(self, callback: Callback) -> Callable[[], None]:
        """Call `callback(batch)` for each change batch; returns the unregister function."""
        return self.feed.on_change(callback)

    # The sends are plain methods returning an awaitable handle: `await send_message(...)`
    # is one await for a confirmed send, and `send_message(...)` alone gives the handle at
    # once (the message is in `state.messages`, pending), for sending without waiting.

    def send_message(self, content: str, is_code: bool = False) -> SendHandle:
        """Send a message: it is in `state.messages` at once, `pending`; the handle resolves
        when the server has it (`confirmed`) or refuses it (`failed`, raising `SendFailed`
        from `await`)."""
        return self._send("message", {"content": content, "is_code": is_code})

    def add_card(self, title: str, content: str, source: str = "") -> SendHandle:
        return self._send("card.add", {"title": title, "content": content, "source": source})

    def remove_card(self, card_id: str) -> SendHandle:
        return self._send("card.remove", {"card_id": card_id})

    def update(self, changes: dict[str, Any], base_version: int | None = None) -> SendHandle:
        """Change title, status or metadata; with `base_version`, only if the session's
        version is still that (else the handle fails with code `conflict`)."""
        data: dict[str, Any] = {"changes": dict(changes)}
        if base_version is not None:
            data["base_version"] = base_version
        return self._send("session.update", data)

    async def signal(self, name: str, data: dict[str, Any] | None = None) -> None:
        """An ephemeral signal (typing, cursor…) to the other subscribers; best effort."""
        self.host.send_signal(self.id, name, data or {})

    async def cancel(self, message_id: str) -> None:
        """Stop an assistant reply in progress (it ends with `message.failed`)."""
        await self.host.cancel_reply(self.id, message_id)

    async def add_member(self, user: str, role: str = "member") -> None:
        """Add `user` (or change their role: `viewer`, `member`, `owner`); owners only.
        Returns once `state.members` shows it."""
        await self._reach(await self.host.api.add_member(self.id, user, role))

    async def remove_member(self, user: str) -> None:
        """Remove `user` from the session; owners only (or yourself, to leave for good)."""
        await self._reach(await self.host.api.remove_member(self.id, user))

    async def load_older(self, limit: int = OLDER_PAGE) -> list[ChatMessage]:
        """Fetch up to `limit` messages older than the oldest one held and put them at the
        front of `state.messages`; returns them, oldest first (empty: history is complete).
        The join snapshot holds the latest 50 messages; call again to page further back."""
        before = self.replica.oldest_seq()
        if before is None or before <= 1:
            return []
        older = self.replica.add_older(
            await self.host.api.messages(self.id, before=before, limit=limit)
        )
        self._after_input()
        return older

    async def _reach(self, seq: int) -> None:
        """Wait (a while at most) until the replica has applied the event at `seq`."""
        if self.replica.seq >= seq or self.error is not None:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._seq_waiters.append((seq, waiter))
        try:
            await asyncio.wait_for(asyncio.shield(waiter), MEMBER_EVENT_WAIT_S)
        except TimeoutError:
            log.info("session %s: event %d not seen yet; returning anyway", self.id, seq)
        finally:
            self._seq_waiters = [(s, w) for s, w in self._seq_waiters if w is not waiter]

    def _wake_seq_waiters(self) -> None:
        for seq, waiter in self._seq_waiters:
            if (self.replica.seq >= seq or self.error is not None) and not waiter.done():
                waiter.set_result(None)

    async def leave(self) -> None:
        """Unsubscribe and stop updating this replica."""
        await self.host.leave(self)

    # ------------------------------------------------------------ sends

    def _send(self, kind: str, data: dict[str, Any]) -> SendHandle:
        if self.error is not None:
            raise self.error
        self.host.check_queue()
        client_id = f"tmp_{uuid.uuid4().hex}"
        handle = SendHandle(self, client_id, kind)
        self.handles[client_id] = handle
        self.outgoing[client_id] = (kind, data)
        self.replica.add_send(client_id, kind, data, author=self.host.user)
        self._after_input()
        self.host.queue_send(self, client_id)
        return handle

    def unacked(self) -> list[str]:
        return self.replica.unacked()

    # ------------------------------------------------------------ inputs (from the client)

    def on_subscribed(self, frame: Frame) -> None:
        snapshot = frame.get("snapshot")
        if isinstance(snapshot, dict):
            self.replica.load_snapshot(int(frame["seq"]), snapshot)
        else:
            # Resumed: the replica only needs the partial text of replies it missed.
            self.replica.refetch_streaming()
        self._after_input()
        self.mark_ready(None)

    def load_snapshot(self, seq: int, snapshot: dict[str, Any]) -> None:
        self.replica.load_snapshot(seq, snapshot)
        self._after_input()
        self.mark_ready(None)

    def mark_ready(self, error: TidingsError | None) -> None:
        if not self.ready.done():
            self.ready.set_result(error)

    def on_event(self, frame: Frame) -> None:
        self.replica.receive_event(frame)
        self._after_input()

    def on_events(self, frames: list[Frame]) -> None:
        self.replica.receive_events(frames)
        self._after_input()

    def on_stream(self, frame: Frame) -> None:
        self.replica.receive_stream(
            str(frame.get("message_id", "")), int(frame.get("offset", 0)), str(frame.get("text"))
        )
        self._after_input()

    def on_presence(self, frame: Frame) -> None:
        self.replica.set_presence(list(frame.get("online") or []))
        self._after_input()

    def on_signal(self, frame: Frame) -> None:
        key = f"{frame.get('from')}:{frame.get('name')}"
        self._signals[key] = {
            "from": frame.get("from"),
            "name": frame.get("name"),
            "data": frame.get("data") or {},
        }
        self.feed.touch([("signal", key)])

    def on_ack(self, client_id: str, seq: int, event_id: str) -> None:
        self.replica.receive_ack(client_id, seq, event_id)
        self._after_input()

    def on_send_error(self, client_id: str, error: TidingsError) -> None:
        self.replica.send_failed(client_id, error.message, error.code)
        for resolved in self.replica.take_resolved():
            self._finish(resolved, error if resolved.client_id == client_id else None)
        self._after_input()

    def fail(self, error: TidingsError) -> None:
        """The session can go on no more (membership removed, client closed)."""
        if self.error is None:
            self.error = error
        self.mark_ready(error)
        self._wake_seq_waiters()
        for client_id in list(self.outgoing):
            self.outgoing.pop(client_id, None)
            handle = self.handles.pop(client_id, None)
            if handle is not None:
                handle._resolve(None, error)

    def _finish(self, resolved: Resolved, error: TidingsError | None = None) -> None:
        self.outgoing.pop(resolved.client_id, None)
        handle = self.handles.pop(resolved.client_id, None)
        if handle is not None:
            handle._resolve(resolved, error)

    def _after_input(self) -> None:
        replica = self.replica
        for resolved in replica.take_resolved():
            self._finish(resolved)
        self._wake_seq_waiters()
        self.feed.touch(replica.take_touched())
        if replica.gap is not None or replica.refetch_due or replica.needs_snapshot:
            self._start_worker()

    # ------------------------------------------------------------ fetching what is missing

    def _start_worker(self) -> None:
        if self._worker is None and not self.host.closing:
            self._worker = self.host.spawn(self._fetch_missing(), f"fetch {self.id}")

    async def _fetch_missing(self) -> None:
        api = self.host.api
        replica = self.replica
        failures = 0
        try:
            while not self.host.closing:
                try:
                    if replica.needs_snapshot:
                        seq, snapshot = await api.session(self.id)
                        self.load_snapshot(seq, snapshot)
                    elif (gap := replica.gap) is not None:
                        first, last = gap
                        events, _ = await api.events(
                            self.id, after=first - 1, limit=min(GAP_FETCH_LIMIT, last - first + 1)
                        )
                        if not events:
                            await asyncio.sleep(UNREADABLE_YET_S)
                        self.on_events(events)
                    elif replica.refetch_due:
                        for message_id in replica.take_refetches():
                            replica.receive_message(await api.message(self.id, message_id))
                        self._after_input()
                    else:
                        return
                    failures = 0
                except TidingsError as exc:
                    if exc.code in ("forbidden", "not_found", "unauthorized"):
                        log.warning("fetching for session %s: %s", self.id, exc)
                        return
                    failures += 1
                except Exception as exc:  # the network: try again a little later
                    log.debug("fetching for session %s failed: %r", self.id, exc)
                    failures += 1
                if failures:
                    if failures > MAX_FETCH_FAILURES:
                        return
                    await asyncio.sleep(min(FETCH_PAUSE_CAP_S, FETCH_PAUSE_STEP_S * failures))
        finally:
            self._worker = None

    # ------------------------------------------------------------ change rendering

    def _render(self, what: str, key: str | None) -> Any:
        state = self.replica.state
        if what == "message":
            message = self.replica.message_by_key(key or "")
            return message.copy() if message is not None else None
        if what == "card":
            card = state.cards.get(key or "")
            return dict(card) if card is not None else None
        if what == "member":
            return state.members.get(key or "")
        if what == "signal":
            return self._signals.pop(key or "", None)
        if what == "members":
            return dict(state.members)
        if what == "cards":
            return {k: dict(v) for k, v in state.cards.items()}
        return copy.deepcopy(getattr(state, what, None))

    async def close(self) -> None:
        worker = self._worker
        if worker is not None:
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)
        await self.feed.close()
