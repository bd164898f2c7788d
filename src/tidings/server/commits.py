"""One rule for uncertain commit outcomes (PROTOCOL.md, send): an error means *not stored*.

When the store sent a commit and cannot tell whether it happened (`CommitUncertain`: the
PostgreSQL connection lost awaiting the COMMIT reply; SQLite's fsync failing), the
server does not guess. It looks the send up by `(session, author, client_id)` once the
store answers again:

* found: the send is settled exactly as if the commit had been reported (acked,
  published to subscribers, its reply started);
* not there: it was not stored, and `unavailable` tells the truth;
* no answer within `Config.uncertain_commit_ms` (or a store that stopped and cannot
  answer before a restart): `OutcomeUnknown`. On the WebSocket the connection is closed
  without an answer (1011) so that the client retries with the same client id; over
  HTTP it is a 503 saying that the outcome is unknown.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final, Protocol

from tidings.agents.runner import reply_client_id
from tidings.backends.base import CommitUncertain, EventStore, NotFound, StoreUnavailable
from tidings.core.model import Appended, Draft, Event
from tidings.protocol.codes import ErrorCode, ProtocolError

if TYPE_CHECKING:
    from tidings.agents.base import Agent
    from tidings.agents.runner import AgentRunner
    from tidings.server.metrics import Metrics

log = logging.getLogger("tidings.node")

#: Pauses between lookups while the store does not answer (the last one repeats).
LOOKUP_DELAYS_S: Final = (0.05, 0.1, 0.2, 0.5, 1.0)
#: The reason of the 1011 close that answers a send whose outcome stayed unknown.
UNKNOWN_CLOSE_REASON: Final = "outcome of a send unknown; retry with the same client_id"


class OutcomeUnknown(ProtocolError):
    """A send whose commit outcome could not be found out. Never sent as an `error`
    frame (that would say "not stored"): the WebSocket closes the connection instead."""

    def __init__(self) -> None:
        super().__init__(
            ErrorCode.UNAVAILABLE,
            "the outcome of this send is unknown (storage failed during its commit); "
            "retry with the same client_id",
        )


async def resolve(
    store: EventStore,
    session_id: str,
    draft: Draft,
    uncertain: CommitUncertain,
    *,
    timeout_s: float,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    monotonic: Callable[[], float] = time.monotonic,
) -> Appended:
    """The stored event of a draft whose commit was uncertain, as a fresh append.

    Raises `StoreUnavailable` when the store says it is not there, `OutcomeUnknown`
    when that cannot be found out within `timeout_s`."""
    if not uncertain.resolvable or draft.client_id is None:
        raise OutcomeUnknown()
    deadline = monotonic() + timeout_s
    attempt = 0
    while True:
        remaining = deadline - monotonic()
        if remaining <= 0:
            log.error(
                "the outcome of a send in %s (client_id %r) stayed unknown for %.1f s",
                session_id,
                draft.client_id,
                timeout_s,
            )
            raise OutcomeUnknown()
        try:
            found = await asyncio.wait_for(
                store.find(session_id, draft.author, draft.client_id), remaining
            )
        except (StoreUnavailable, TimeoutError):
            await sleep(min(LOOKUP_DELAYS_S[min(attempt, len(LOOKUP_DELAYS_S) - 1)], remaining))
            attempt += 1
            continue
        if found is None:
            raise StoreUnavailable("the uncertain commit did not happen", cause=uncertain.cause)
        log.info(
            "an uncertain commit in %s (client_id %r) had happened: seq %d",
            session_id,
            draft.client_id,
            found.seq,
        )
        return Appended(event=found, duplicate=False)


class _Replies(Protocol):
    store: EventStore
    runner: AgentRunner


async def start_reply_if_missing(
    node: _Replies, session_id: str, agent: Agent, trigger: Event
) -> None:
    """For a duplicate of a stored user message: start its reply if it never started
    (its first commit was uncertain, or the node died before the reply began)."""
    runner = node.runner
    if runner.handles(session_id, trigger.event_id):
        return
    try:
        started = await node.store.find(session_id, agent.name, reply_client_id(trigger.event_id))
    except (NotFound, StoreUnavailable):
        return  # a later retry looks again
    if started is None and not runner.handles(session_id, trigger.event_id):
        runner.submit(session_id, agent, trigger)


async def orphaned_replies(store: EventStore) -> list[tuple[str, str, str]]:
    """`(session_id, message_id, author)` of every reply left streaming by a dead process.
    With its author, the "interrupted" end a recovering node appends dedupes against the
    end the agent may still append elsewhere (one event per (author, client_id))."""
    orphans = await store.streaming_messages()
    return [(s, m, (await store.message(s, m)).author) for s, m in orphans]


class WriteHealth:
    """Whether the store's writes fail now, for operators: each failure counted by
    cause (`tidings_store_write_failures_total`), logged once per run of failures, and
    shown by `/readyz` until a write succeeds again."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        #: The last failure (`cause: message`) while writes fail, else None.
        self.error: str | None = None

    def failed(self, exc: Exception) -> None:
        if not isinstance(exc, StoreUnavailable | CommitUncertain):
            return  # NotFound and the like: the store works
        self._metrics.write_failures.labels(exc.cause).inc()
        if self.error is None:
            log.error("store writes are failing (%s): %s", exc.cause, exc)
        self.error = f"{exc.cause}: {exc}"

    def succeeded(self) -> None:
        if self.error is not None:
            log.warning("store writes succeed again (after %s)", self.error)
            self.error = None
