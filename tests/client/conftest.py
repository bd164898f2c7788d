from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.server.harness import Server, running_server
from tidings.client.client import TASK_PREFIX
from tidings.testing.proxy import FaultyProxy, faulty_proxy


@pytest.fixture(autouse=True)
async def no_client_task_left_behind() -> AsyncIterator[None]:
    """Every test ends with no SDK task still running (clean shutdown)."""
    yield
    await asyncio.sleep(0)
    left = [
        t.get_name()
        for t in asyncio.all_tasks()
        if t.get_name().startswith(TASK_PREFIX) and not t.done()
    ]
    assert left == [], f"client tasks left behind: {left}"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    # No rate limit: the tests send hundreds of messages as fast as they can.
    async with running_server(tmp_path, rate_limit=0) as running:
        yield running


@pytest.fixture
async def echo_server(tmp_path: Path) -> AsyncIterator[Server]:
    async with running_server(tmp_path, rate_limit=0, agent="echo", echo_delay_ms=20) as running:
        yield running


@pytest.fixture
async def proxy(server: Server) -> AsyncIterator[FaultyProxy]:
    async with faulty_proxy(server.port) as running:
        yield running
