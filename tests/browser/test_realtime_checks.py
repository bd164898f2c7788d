"""`window.runRealTimeTests()` passes against a healthy server and names the failing check
against a broken one (a checker that cannot fail is worthless)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import SignIn, artifact
from tests.server.harness import Server, ServerProcess, running_server
from tidings.backends.memory import MemoryStore
from tidings.core.model import Appended, Conflict, Draft
from tidings.server.node import wall_clock_ms

CHECKS = [
    "latency",
    "frequency",
    "races",
    "leaks",
    "recovery",
    "stability",
    "ordering",
    "concurrency",
]


async def run_checks(sign_in: SignIn, server: Server) -> dict[str, Any]:
    _, page = await sign_in(server, "prober")
    report: dict[str, Any] = await page.evaluate("window.runRealTimeTests()")
    return report


async def test_every_check_passes_against_a_healthy_server(
    served: ServerProcess, sign_in: SignIn
) -> None:
    report = await run_checks(sign_in, served.server)
    artifact("realtime-report.json").write_text(json.dumps(report, indent=1))
    assert [check["name"] for check in report["checks"]] == CHECKS
    failed = [(c["name"], c.get("error"), c["figures"]) for c in report["checks"] if not c["ok"]]
    assert failed == []
    assert report["ok"] is True


class SlowStore(MemoryStore):
    """A store whose every commit takes `delay_s` longer: a disk that cannot keep up.

    Commits stay in submission order (timers of equal delay fire first in, first out)."""

    def __init__(self, delay_s: float) -> None:
        super().__init__(wall_clock_ms)
        self.delay_s = delay_s

    async def append(self, session_id: str, draft: Draft) -> Appended | Conflict:
        return await self.submit(session_id, draft)

    def submit(self, session_id: str, draft: Draft) -> asyncio.Future[Appended | Conflict]:
        loop = asyncio.get_running_loop()
        result: asyncio.Future[Appended | Conflict] = loop.create_future()

        def commit() -> None:
            inner = MemoryStore.submit(self, session_id, draft)
            inner.add_done_callback(lambda done: _chain(done, result))

        loop.call_later(self.delay_s, commit)
        return result


def _chain(
    done: asyncio.Future[Appended | Conflict], result: asyncio.Future[Appended | Conflict]
) -> None:
    if result.done():
        return
    error = done.exception()
    if error is not None:
        result.set_exception(error)
    else:
        result.set_result(done.result())


@pytest.fixture
async def slow_server(tmp_path: Path) -> AsyncIterator[Server]:
    async with running_server(
        tmp_path, store=SlowStore(0.6), dev=True, agent="echo", echo_delay_ms=15
    ) as server:
        yield server


async def test_the_latency_check_fails_and_is_named_against_a_slowed_store(
    slow_server: Server, sign_in: SignIn
) -> None:
    report = await run_checks(sign_in, slow_server)
    verdicts = {check["name"]: check for check in report["checks"]}
    assert report["ok"] is False
    assert verdicts["latency"]["ok"] is False
    assert verdicts["latency"]["figures"]["ack_p95_ms"] > 500
