"""The `echo` agent: replies `echo: ` + the user's message, a word at a time.

Deterministic and free, for demos, tests and benchmarks (PROTOCOL.md's run-time table).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

from tidings.agents.base import AgentContext, Usage

# A word and the whitespace after it; leading whitespace of the text rides with "echo: ".
_WORD = re.compile(r"\S*\s*")


def echo_chunks(text: str) -> list[str]:
    """Split `text` into words with their trailing whitespace; they join back to `text`."""
    return [chunk for chunk in _WORD.findall(text) if chunk]


class EchoAgent:
    name = "echo"

    def __init__(self, delay_ms: int = 20) -> None:
        if delay_ms < 0:
            raise ValueError("delay_ms must be zero or more")
        self.delay_ms = delay_ms

    async def reply(self, context: AgentContext) -> AsyncIterator[str | Usage]:
        content = context.trigger.get("content", "")
        for index, chunk in enumerate(echo_chunks("echo: " + str(content))):
            if index:
                # Even with no delay, let the rest of the server run between chunks.
                await asyncio.sleep(self.delay_ms / 1000)
            yield chunk

    async def aclose(self) -> None:
        """Nothing to release; here so that every built-in agent can be closed alike."""
