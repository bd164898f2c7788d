"""The interfaces every storage and broker backend implements, with their contracts.

One shared contract suite (`tests/backends/contract.py`) runs against every
implementation; a backend is correct when it passes it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from tidings.core.model import Appended, Conflict, Draft, Event, Message, Role, SessionInfo


class NotFound(Exception):
    """The session (or message) does not exist."""


class StoreUnavailable(Exception):
    """The store cannot be reached or failed, and the write was **not** stored; the
    request may be retried later.

    `cause` names the failure for operators (the `cause` label of
    `tidings_store_write_failures_total`): `disk_full`, `read_only`, `io_error`,
    `stopped`, `connection` or `error`."""

    def __init__(self, message: str = "", *, cause: str = "error") -> None:
        super().__init__(message)
        self.cause = cause


class CommitUncertain(Exception):
    """The store sent a commit and cannot tell whether it happened (the connection was
    lost awaiting the COMMIT reply, or the fsync after it failed). Not `StoreUnavailable`:
    the write may be stored. Whoever appended finds out with `EventStore.find` once the
    store answers again.

    `resolvable` is False when the store has stopped (SQLite after an I/O failure at
    commit fails stop): it will not answer before a restart, so waiting is pointless."""

    def __init__(self, message: str, *, resolvable: bool = True, cause: str = "error") -> None:
        super().__init__(message)
        self.resolvable = resolvable
        self.cause = cause


CommitHook = Callable[[int, float], None]


@runtime_checkable
class ReportsCommits(Protocol):
    """A store that commits in groups and says so: after each durable commit it calls
    `on_commit(events, seconds)` (when set), on whichever thread ran the commit, so the
    hook must be cheap and safe to call from there (the node's counts are)."""

    on_commit: CommitHook | None


class EventStore(Protocol):
    """The durable, ordered log of every session, and the rows derived from it.

    Contract:

    * **Order.** `append` gives the session's next `seq` (1, 2, 3, … with no gap), inside
      one transaction with the event's row and every derived row (members, messages,
      session title/status/version). Appends to one session are totally ordered; there is
      no order across sessions.
    * **Durability.** When `append` returns, the event is committed (for SQLite, WAL with
      `synchronous=FULL`: it survives power loss). Concurrent appends may share one
      transaction and one fsync (group commit); each still gets its own result.
    * **Idempotency.** At most one event per `(session, author, client_id)`: appending a
      draft whose author already stored that `client_id` in the session's log appends
      nothing and returns the original event with `duplicate=True`, even if the draft
      differs. Another author's draft with the same `client_id` is a new event. The
      decision (dedupe, then compare-and-set, then the next event) is
      `rows.decide_append`, shared by every store.
    * **Compare-and-set.** A draft with `base_version` is appended only if the session's
      version equals it; otherwise nothing is appended and `Conflict(version)` is returned.
      The duplicate check comes first: a retried CAS that had succeeded returns its
      original event, not a conflict.
    * **Derived rows.** `member.added`/`member.removed` change the members; a
      `session.updated` changes title and status (fields in `data.changes`) and moves the
      version on by one; `message.*` events maintain the message rows that `messages()`
      and `message()` read.
    * **Reads** see every committed append and never a partial one.
    * Unknown session: `NotFound`. Backend failure: `StoreUnavailable`, which always means
      *not stored*. A commit whose outcome the store cannot know: `CommitUncertain`.
    """

    async def open(self) -> None:
        """Connect, and create or migrate the schema when the database is empty."""

    async def close(self) -> None:
        """Finish in-flight appends and release every resource."""

    async def ping(self) -> None:
        """Raise `StoreUnavailable` unless the store answers (for `/readyz`)."""

    async def probe_write(self) -> None:
        """Make one small durable write (for `/readyz` while writes fail, and the start
        check); raise `StoreUnavailable` (with its `cause`) unless the store can write."""

    async def create_session(
        self, session_id: str, *, title: str, agent: str, owner: str
    ) -> SessionInfo:
        """Create a session with `owner` as its owner (and a `member.added` event, seq 1)."""

    async def get_session(self, session_id: str) -> SessionInfo:
        """The session's row, or `NotFound`."""

    async def list_sessions(self, user: str) -> list[SessionInfo]:
        """The sessions `user` is a member of, newest first."""

    async def members(self, session_id: str) -> dict[str, Role]:
        """Members of the session and their roles."""

    async def role(self, session_id: str, user: str) -> Role | None:
        """`user`'s role in the session, or None when not a member (NotFound if no session)."""

    async def append(self, session_id: str, draft: Draft) -> Appended | Conflict:
        """Append one event (see the contract above)."""

    def submit(self, session_id: str, draft: Draft) -> asyncio.Future[Appended | Conflict]:
        """`append` without a coroutine: the append is queued before this returns, and the
        future settles with its result (or exception) once committed.

        Appends submitted one after another to one session get increasing `seq`s in
        submission order, so a connection's pipelined sends keep their order. This is the
        hot path of the server: no task per append."""

    async def find(self, session_id: str, author: str, client_id: str) -> Event | None:
        """The event stored under `(session, author, client_id)`, or None (NotFound if
        no session). How an uncertain commit is resolved once the store answers again."""

    async def read(self, session_id: str, after: int, limit: int | None = None) -> list[Event]:
        """Events with `seq > after`, in `seq` order, at most `limit`."""

    async def head(self, session_id: str) -> int:
        """The session's last `seq` (0 for none)."""

    async def messages(
        self, session_id: str, *, before: int | None = None, limit: int = 50
    ) -> list[Message]:
        """Messages created at a `seq < before` (all when None), newest first."""

    async def message(self, session_id: str, message_id: str) -> Message:
        """One message, or `NotFound`. A streaming message carries its partial content."""

    async def save_partial(self, session_id: str, message_id: str, content: str) -> None:
        """Record the content streamed so far of a `streaming` message (not an event)."""

    async def save_checkpoint(self, session_id: str, seq: int, state: bytes) -> None:
        """Keep `state` (the session folded up to `seq`, from `core.fold.checkpoint`) unless
        a checkpoint at a later `seq` is kept already. Not an event; a cache."""

    async def load_checkpoint(self, session_id: str) -> tuple[int, bytes] | None:
        """The latest checkpoint `(seq, state)` of the session, or None."""

    async def streaming_messages(self) -> list[tuple[str, str]]:
        """`(session_id, message_id)` of every message still `streaming` (for recovery)."""


#: A broker delivers `(session_id, seq, frame, origin)`: `seq` is None for ephemeral
#: frames; `origin` is the connection id that must not receive the frame (a signal's sender).
BrokerHandler = Callable[[str, int | None, bytes, str | None], None]


class Broker(Protocol):
    """Carries news of committed events and ephemeral frames between nodes.

    Contract:

    * The broker is **not** a source of order or truth: the store is. A delivered event
      frame carries its `seq`; a node that sees a gap reads the store. A broker may lose
      or repeat messages (a node must tolerate both); the in-process broker does neither.
    * `publish` delivers `frame` to every handler subscribed to `session_id` on every
      node, the publishing node included, in the order publish was called on one node.
    * Handlers are called on the event loop and must not block.
    * `frame` is already-encoded JSON (UTF-8 bytes): it is encoded once, by the publisher.
    """

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise unless the broker answers (for `/readyz`)."""

    async def subscribe(self, session_id: str, handler: BrokerHandler) -> None:
        """Deliver the session's frames to `handler` from now on."""

    async def unsubscribe(self, session_id: str, handler: BrokerHandler) -> None: ...

    def publish(
        self, session_id: str, seq: int | None, frame: bytes, origin: str | None = None
    ) -> None:
        """Publish without waiting: frames leave in call order (per node); never blocks.

        Local handlers may be called before this returns (the in-process broker does);
        a networked broker queues the frame and sends it in the background.
        """


Clock = Callable[[], int]
"""Unix time in milliseconds. Injected everywhere time matters, so tests can steer it."""
