"""Run agents' replies into sessions: bounded, ordered, cancellable, never blocking a sender.

`submit` only queues: it is called right after a user message is stored and must not delay
that message's ack. Each session with pending replies has one worker task that runs them
one at a time in submission order and goes away when the queue is empty; a semaphore
bounds the replies running at once across the process.

One reply, as seen in the session's log and on the wire:

    agent.status processing
    message.created  (assistant, status "streaming")
    stream frames    (ephemeral; offset = code points before the chunk)
    message.completed {content, usage?}  or  message.failed {error}
    agent.status idle  (or error after a failure or a timeout)

The content so far stays in memory (`partial`) and goes to `host.save_partial` at most once
per `partial_interval_s`, from a saver task so that the stream never waits for the store.
The end event of a message carries the client_id `agent:<message_id>:end`: the store keeps
one event per (author, client_id), so a reply ends once even when a retry or two
recovering nodes race (the server keeps users' client_ids out of the `agent:` namespace).
A reply is keyed by the message it answers: its `message.created` carries the client_id
`agent:<trigger event_id>:reply`, so a message is answered at most once, and the server
can tell whether a retried message's reply ever started (`reply_client_id`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from tidings.agents.base import Agent, AgentError, ReplyHost, ReplyObserver, Usage
from tidings.core import rules
from tidings.core.model import Event

log = logging.getLogger("tidings.agents.runner")

CANCELLED: Final = "cancelled"
INTERRUPTED: Final = "interrupted"
TIMED_OUT: Final = "The assistant timed out."
FAILED: Final = "The assistant failed to reply"
#: The author of the events `recover` appends (the agent of a dead process is unknown).
SYSTEM_AUTHOR: Final = "tidings"

#: Pauses before retrying the append that ends a reply (the store may be restarting).
END_RETRY_DELAYS_S: Final = (0.05, 0.25, 1.0)
#: How long a cancelled agent may take to unwind before the runner stops waiting for it.
UNWIND_S: Final = 2.0
_MAX_REASON = 120


def end_client_id(message_id: str) -> str:
    """The client_id of the event that ends a reply (one per message, see the module doc)."""
    return f"agent:{message_id}:end"


def reply_client_id(trigger_id: str) -> str:
    """The client_id of the assistant message answering the event `trigger_id`."""
    return f"agent:{trigger_id}:reply"


def failure_message(error: BaseException) -> str:
    """What users see when an agent raised: never a stack trace, key or server message."""
    if isinstance(error, TimeoutError):
        return TIMED_OUT
    if isinstance(error, AgentError):
        reason = " ".join(error.reason.split())[:_MAX_REASON].rstrip(".")
        if reason:
            return f"{FAILED} ({reason})."
    return f"{FAILED} ({type(error).__name__})."


_OUTCOMES: Final[dict[str | None, str]] = {
    None: "completed",
    CANCELLED: "cancelled",
    INTERRUPTED: "interrupted",
    TIMED_OUT: "timed_out",
}


def _outcome(stop: str | None) -> str:
    """How a reply ended, as a metric label: its stop reason named, or `failed`."""
    return _OUTCOMES.get(stop, "failed")


@dataclass(eq=False)
class _Reply:
    """One running reply: its content so far and how it is being stopped, if it is."""

    session_id: str
    message_id: str
    author: str
    parts: list[str] = field(default_factory=list)
    length: int = 0
    usage: Usage | None = None
    #: Set when the runner stops the reply on purpose: CANCELLED, INTERRUPTED or TIMED_OUT.
    stop: str | None = None
    finished: bool = False
    task: asyncio.Task[None] | None = None
    #: When the reply started, on the runner's clock (for the time to its first token).
    started: float = 0.0
    dirty: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def content(self) -> str:
        if len(self.parts) > 1:
            self.parts[:] = ["".join(self.parts)]
        return self.parts[0] if self.parts else ""

    def halt(self, reason: str) -> bool:
        """Stop the agent for `reason`; False if the reply is already ending."""
        if self.finished or self.stop is not None:
            return False
        self.stop = reason
        if self.task is not None:
            self.task.cancel()
        return True


class AgentRunner:
    def __init__(
        self,
        host: ReplyHost,
        *,
        concurrency: int = 32,
        timeout_s: float = 120,
        partial_interval_s: float = 0.25,
        observer: ReplyObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if timeout_s <= 0 or partial_interval_s < 0:
            raise ValueError("timeout_s must be positive and partial_interval_s not negative")
        self._host = host
        self._observer = observer
        self._clock = clock
        self._timeout_s = timeout_s
        self._partial_interval_s = partial_interval_s
        self._slots = asyncio.Semaphore(concurrency)
        self._queues: dict[str, deque[tuple[Agent, Event]]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._running: dict[tuple[str, str], _Reply] = {}
        #: `(session_id, trigger event_id)` of every reply queued or running.
        self._triggers: set[tuple[str, str]] = set()
        self._active = 0
        self._closing = False

    # -- what the server calls ------------------------------------------------------------

    def submit(self, session_id: str, agent: Agent, trigger: Event) -> None:
        """Queue a reply to `trigger` (a stored user `message.created`); returns at once."""
        if self._closing:
            log.warning("reply to %s/%s dropped: shutting down", session_id, trigger.event_id)
            return
        self._queues.setdefault(session_id, deque()).append((agent, trigger))
        self._triggers.add((session_id, trigger.event_id))
        if session_id not in self._workers:
            self._workers[session_id] = asyncio.create_task(
                self._drain(session_id), name=f"tidings-replies-{session_id}"
            )

    def handles(self, session_id: str, trigger_id: str) -> bool:
        """Whether a reply to the event `trigger_id` is queued or running here."""
        return (session_id, trigger_id) in self._triggers

    def partial(self, session_id: str, message_id: str) -> str | None:
        """The content so far of a reply running here, or None if it is not running here."""
        reply = self._running.get((session_id, message_id))
        return None if reply is None else reply.content()

    async def cancel(self, session_id: str, message_id: str) -> bool:
        """Stop a running reply (it ends with `message.failed` "cancelled").

        Returns at once, before that event is appended, so that the server can send the
        request's `ok` first. False when no such reply is running here.
        """
        reply = self._running.get((session_id, message_id))
        return reply is not None and reply.halt(CANCELLED)

    async def recover(self, streaming: list[tuple[str, str]] | list[tuple[str, str, str]]) -> None:
        """Mark replies orphaned by a dead process (`(session_id, message_id)`) interrupted.

        Each such message gets `message.failed` "interrupted", and its session an
        `agent.status` idle. Both carry client_ids derived from the message, so that two
        nodes recovering the same reply append each event once.
        """
        for orphan in streaming:
            session_id, message_id = orphan[0], orphan[1]
            if (session_id, message_id) in self._running:
                continue
            # The end carries the reply's own author when known (the agent), so that it
            # dedupes against the end the running agent may append on another node: the
            # store keeps one event per (author, client_id).
            author = orphan[2] if len(orphan) > 2 else SYSTEM_AUTHOR
            failed = rules.draft_message_failed(
                message_id, INTERRUPTED, author=author, client_id=end_client_id(message_id)
            )
            idle = rules.draft_agent_status(
                "idle", author=SYSTEM_AUTHOR, client_id=f"agent:{message_id}:recovered"
            )
            try:
                await self._host.append(session_id, failed)
                await self._host.append(session_id, idle)
            except Exception:
                log.exception("could not mark %s/%s interrupted", session_id, message_id)

    async def close(self, grace_s: float = 5.0) -> None:
        """Drop queued replies, end running ones as "interrupted", and wait for the workers.

        A worker still busy after `grace_s` (a host that hangs) is cancelled.
        """
        self._closing = True
        for session_id, queue in self._queues.items():
            for _, dropped in queue:
                self._triggers.discard((session_id, dropped.event_id))
            queue.clear()
        for reply in list(self._running.values()):
            reply.halt(INTERRUPTED)
        workers = list(self._workers.values())
        if not workers:
            return
        _, late = await asyncio.wait(workers, timeout=grace_s)
        for worker in late:
            worker.cancel()
        await asyncio.gather(*late, return_exceptions=True)

    @property
    def closing(self) -> bool:
        """True once `close` has begun: `submit` drops replies from then on."""
        return self._closing

    def active(self) -> int:
        """Replies running now (holding one of the `concurrency` slots)."""
        return self._active

    def backlog(self, session_id: str) -> int:
        """Replies of one session queued and not yet started."""
        queue = self._queues.get(session_id)
        return len(queue) if queue is not None else 0

    def pending(self) -> int:
        """Replies queued and not yet started, across every session."""
        return sum(len(queue) for queue in self._queues.values())

    # -- one session's worker -------------------------------------------------------------

    async def _drain(self, session_id: str) -> None:
        queue = self._queues[session_id]
        try:
            while queue and not self._closing:
                agent, trigger = queue.popleft()
                try:
                    async with self._slots:
                        if self.closing:  # (closed while this reply waited for a slot)
                            return
                        self._active += 1
                        try:
                            await self._reply(session_id, agent, trigger)
                        finally:
                            self._active -= 1
                except Exception:
                    log.exception("reply in session %s failed unexpectedly", session_id)
                finally:
                    self._triggers.discard((session_id, trigger.event_id))
        finally:
            for _, dropped in queue:  # (closing)
                self._triggers.discard((session_id, dropped.event_id))
            # No await since the loop saw the queue empty: a submit cannot slip in between.
            del self._queues[session_id]
            del self._workers[session_id]

    # -- one reply --------------------------------------------------------------------------

    async def _reply(self, session_id: str, agent: Agent, trigger: Event) -> None:
        author = agent.name
        try:
            processing = await self._status(session_id, author, "processing", task="reply")
            created = await self._host.append(
                session_id,
                rules.draft_assistant_message(
                    author=author, client_id=reply_client_id(trigger.event_id)
                ),
            )
        except Exception:
            log.exception("could not start a reply in session %s", session_id)
            await self._safe_status(session_id, author, "error", error=f"{FAILED}.")
            return
        if created.seq < processing.seq:
            # The store answered with the reply begun before (a retried message raced
            # its first reply, or another node): this message is being answered already.
            await self._safe_status(session_id, author, "idle")
            return
        reply = _Reply(
            session_id, str(created.data["message"]["id"]), author, started=self._clock()
        )
        key = (session_id, reply.message_id)
        # Registered until the end event is stored: a snapshot taken meanwhile still gets
        # the whole content from `partial`, not an older coalesced save.
        self._running[key] = reply
        try:
            if self._closing:
                reply.stop = INTERRUPTED
            else:
                await self._stream(reply, agent, trigger)
            reply.finished = True
            await self._end(reply)
        finally:
            reply.finished = True
            del self._running[key]

    async def _stream(self, reply: _Reply, agent: Agent, trigger: Event) -> None:
        """Run the agent under the timeout, with the partial saver alongside."""
        reply.task = asyncio.create_task(self._pump(reply, agent, trigger))
        saver = asyncio.create_task(self._save_partials(reply))
        try:
            _, late = await asyncio.wait({reply.task}, timeout=self._timeout_s)
            if late:
                reply.halt(TIMED_OUT)
                await asyncio.wait({reply.task}, timeout=UNWIND_S)
        except asyncio.CancelledError:
            # The worker itself is cancelled (a close that ran out of grace): stop both and
            # let them unwind, so that no task outlives the runner.
            reply.task.cancel()
            saver.cancel()
            await asyncio.wait({reply.task, saver}, timeout=UNWIND_S)
            raise
        finally:
            reply.finished = True
            reply.done.set()
            reply.dirty.set()
        # The saver finishes the write it may be doing (a cancelled write could leave the
        # store's connection in a bad state) and stops.
        await saver
        if not reply.task.done():
            log.error("agent %r ignored cancellation; abandoning it", reply.author)
            reply.stop = reply.stop or TIMED_OUT
            return
        error = None if reply.task.cancelled() else reply.task.exception()
        if error is not None and reply.stop is None:
            reply.stop = failure_message(error)
            if not isinstance(error, TimeoutError | AgentError):
                log.error(
                    "agent %r failed in session %s",
                    reply.author,
                    reply.session_id,
                    exc_info=error,
                )
        elif reply.task.cancelled() and reply.stop is None:
            reply.stop = INTERRUPTED  # cancelled by someone else than the runner

    async def _pump(self, reply: _Reply, agent: Agent, trigger: Event) -> None:
        context = await self._host.context(reply.session_id, trigger)
        chunks: AsyncIterator[str | Usage] = agent.reply(context)
        try:
            async for item in chunks:
                if isinstance(item, Usage):
                    reply.usage = item
                    continue
                if not isinstance(item, str):
                    raise TypeError(f"agents yield str or Usage, not {type(item).__name__}")
                if not item:
                    continue
                offset = reply.length
                if offset == 0 and self._observer is not None:
                    self._observer.first_token(reply.author, self._clock() - reply.started)
                reply.parts.append(item)
                reply.length += len(item)
                reply.dirty.set()
                self._host.stream(reply.session_id, reply.message_id, offset, item)
        finally:
            # An async generator stopped between two chunks is closed now, not by the GC.
            aclose: Any = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()

    async def _save_partials(self, reply: _Reply) -> None:
        while True:
            await reply.dirty.wait()
            if reply.finished:
                return
            reply.dirty.clear()
            try:
                await self._host.save_partial(reply.session_id, reply.message_id, reply.content())
            except Exception:
                log.warning("could not save the partial reply %s", reply.message_id, exc_info=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(reply.done.wait(), self._partial_interval_s)

    async def _end(self, reply: _Reply) -> None:
        client_id = end_client_id(reply.message_id)
        if reply.stop is None:
            usage = msgspec.structs.asdict(reply.usage) if reply.usage is not None else None
            end = rules.draft_message_completed(
                reply.message_id, reply.content(), usage, author=reply.author, client_id=client_id
            )
            status, error = "idle", None
        else:
            end = rules.draft_message_failed(
                reply.message_id, reply.stop, author=reply.author, client_id=client_id
            )
            stopped_on_purpose = reply.stop in (CANCELLED, INTERRUPTED)
            status, error = ("idle", None) if stopped_on_purpose else ("error", reply.stop)
        for delay in (*END_RETRY_DELAYS_S, None):
            try:
                await self._host.append(reply.session_id, end)
                break
            except Exception:
                if delay is None or self._closing:
                    # Left streaming; `recover` on the next start marks it interrupted.
                    log.exception("could not end the reply %s", reply.message_id)
                    return
                await asyncio.sleep(delay)
        if self._observer is not None:
            self._observer.ended(reply.author, _outcome(reply.stop))
        await self._safe_status(reply.session_id, reply.author, status, error=error)

    async def _status(
        self,
        session_id: str,
        author: str,
        status: str,
        *,
        task: str | None = None,
        error: str | None = None,
    ) -> Event:
        draft = rules.draft_agent_status(status, task=task, error=error, author=author)
        return await self._host.append(session_id, draft)

    async def _safe_status(
        self, session_id: str, author: str, status: str, *, error: str | None = None
    ) -> None:
        try:
            await self._status(session_id, author, status, error=error)
        except Exception:
            log.warning("could not set the agent status in %s", session_id, exc_info=True)
