"""What an agent is, and what the runner needs from the server to run one.

An `Agent` turns a session's context into a stream of text chunks. It knows nothing about
the log, the wire or other participants: the `AgentRunner` appends the events, sends the
stream frames and handles timeouts, cancellation and failures around it. The server's
`Node` implements `ReplyHost`, the runner's only way to reach the session.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from typing import Any, Protocol, runtime_checkable

import msgspec

from tidings.core.model import Draft, Event


class Usage(msgspec.Struct):
    """Tokens a model reports for one reply (added to the session's `stats.tokens`)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0


class AgentContext(msgspec.Struct):
    """What an agent sees of the session when it starts a reply."""

    session_id: str
    #: Recent messages, oldest first, shaped like `message.created`'s `data["message"]`
    #: (id, role, author, content, is_code, status, created_at).
    messages: list[dict[str, Any]]
    #: The session's context cards (title, content, source), to use as system context.
    cards: list[dict[str, Any]]
    #: The user message that triggered the reply, shaped like the entries of `messages`.
    trigger: dict[str, Any]


class AgentError(Exception):
    """A failure an agent can explain to users.

    `reason` is short and safe to show anyone (no keys, URLs with credentials, or
    internals): the runner puts it in the `message.failed` event. Any other exception
    is shown only by its class name.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@runtime_checkable
class Agent(Protocol):
    """Something that replies to a session's messages.

    `reply` yields text chunks as they are produced, and may yield one `Usage` (usually
    last). It may raise: `TimeoutError` is reported as a timeout, `AgentError` with its
    `reason`, anything else as a generic failure. It must let cancellation through (the
    runner cancels a reply on `cancel`, on timeout and on shutdown). An agent may also have
    an `async def aclose()` releasing its resources; see `close_agent`.
    """

    name: str

    def reply(self, context: AgentContext) -> AsyncIterator[str | Usage]: ...


class ReplyHost(Protocol):
    """The server side of a reply, implemented by the server's `Node`."""

    async def append(self, session_id: str, draft: Draft) -> Event:
        """Append durably to the session's log and fan out; raise on failure.

        A draft with a `client_id` already in the log appends nothing and returns the
        original event (the store's idempotency), which the runner relies on so that a
        reply ends with at most one `message.completed`/`message.failed` even when it is
        retried or recovered by two nodes.
        """
        ...

    def stream(self, session_id: str, message_id: str, offset: int, text: str) -> None:
        """Send an ephemeral `stream` frame to every subscriber of the session."""

    async def save_partial(self, session_id: str, message_id: str, content: str) -> None:
        """Keep the content so far where other nodes and restarts can read it."""

    async def context(self, session_id: str, trigger: Event) -> AgentContext:
        """The context of a reply to `trigger` (the stored user `message.created`)."""
        ...


class ReplyObserver(Protocol):
    """What the runner reports about replies, for metrics (implemented by the server)."""

    def first_token(self, agent: str, seconds: float) -> None:
        """A reply by `agent` streamed its first text `seconds` after it started."""

    def ended(self, agent: str, outcome: str) -> None:
        """A reply by `agent` ended: completed, failed, timed_out, cancelled or interrupted."""


async def close_agent(agent: Agent) -> None:
    """Release an agent's resources if it has an `aclose` (the built-in agents do)."""
    aclose: Any = getattr(agent, "aclose", None)
    if aclose is None:
        return
    result = aclose()
    if inspect.isawaitable(result):
        await result
