"""Fixtures of the attack suite: an in-process server, and the errors it logs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.security.attacks import server_errors
from tests.server.harness import Server, running_server

__all__ = ["server", "server_errors"]


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async with running_server(tmp_path) as running:
        yield running
