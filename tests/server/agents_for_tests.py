"""Agents that third-party code could plug in by import path, for the server's tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping

from tidings.agents.base import AgentContext, Usage


class RaisingAgent:
    """Streams one chunk, then fails with an exception whose text must never reach users."""

    name = "raiser"

    async def reply(self, context: AgentContext) -> AsyncIterator[str | Usage]:
        yield "Let me think"
        await asyncio.sleep(0.01)
        raise RuntimeError("SECRET sk-live-123 at /srv/app.py line 7")


def make_raising(settings: Mapping[str, str]) -> RaisingAgent:
    return RaisingAgent()
