from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tidings.agents.runner import AgentRunner

from .host import MemoryHost


@pytest.fixture
def host() -> MemoryHost:
    return MemoryHost()


@pytest.fixture
async def runner(host: MemoryHost) -> AsyncIterator[AgentRunner]:
    runner = AgentRunner(host, concurrency=8, timeout_s=5, partial_interval_s=0.05)
    yield runner
    await runner.close()
