"""Small real agents for the runner's tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import cast

from tidings.agents.base import AgentContext, AgentError, Usage


class ScriptedAgent:
    """Yields `chunks` (with `delay_s` between them), then `usage`, then raises `error`."""

    name = "scripted"

    def __init__(
        self,
        chunks: Sequence[str],
        *,
        delay_s: float = 0.0,
        usage: Usage | None = None,
        error: Exception | None = None,
    ) -> None:
        self.chunks = list(chunks)
        self.delay_s = delay_s
        self.usage = usage
        self.error = error
        self.contexts: list[AgentContext] = []

    async def reply(self, context: AgentContext) -> AsyncIterator[str | Usage]:
        self.contexts.append(context)
        for chunk in self.chunks:
            await asyncio.sleep(self.delay_s)
            yield chunk
        if self.usage is not None:
            yield self.usage
        if self.error is not None:
            raise self.error


class GatedAgent:
    """Yields one chunk each time `step()` is called; records whether it was closed."""

    name = "gated"

    def __init__(self, chunks: Sequence[str]) -> None:
        self.chunks = list(chunks)
        self._gate = asyncio.Semaphore(0)
        self.started = asyncio.Event()
        self.closed = False

    def step(self, n: int = 1) -> None:
        for _ in range(n):
            self._gate.release()

    async def reply(self, context: AgentContext) -> AsyncIterator[str | Usage]:
        self.started.set()
        try:
            for chunk in self.chunks:
                await self._gate.acquire()
                yield chunk
        finally:
            self.closed = True


class CountingAgent:
    """Replies with the trigger's content in a few chunks, counting replies running at once."""

    name = "counting"

    def __init__(self, delay_s: float = 0.005) -> None:
        self.delay_s = delay_s
        self.running = 0
        self.most = 0

    async def reply(self, context: AgentContext) -> AsyncIterator[str | Usage]:
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            for chunk in ("re: ", str(context.trigger["content"])):
                await asyncio.sleep(self.delay_s)
                yield chunk
        finally:
            self.running -= 1


class StubbornAgent:
    """Never yields and takes no notice of time: only cancellation stops it."""

    name = "stubborn"

    async def reply(self, context: AgentContext) -> AsyncIterator[str | Usage]:
        await asyncio.Event().wait()
        yield "never"


def leaky_error() -> Exception:
    """An exception whose message holds what users must never see."""
    return RuntimeError('Traceback (most recent call last): api_key="sk-live-SECRET"')


def explained_error() -> AgentError:
    return AgentError("the model is overloaded")


class BytesAgent:
    """Breaks the contract: yields bytes instead of text."""

    name = "bytes"

    async def reply(self, context: AgentContext) -> AsyncIterator[str | Usage]:
        chunk: object = b"raw"
        yield cast(str, chunk)
