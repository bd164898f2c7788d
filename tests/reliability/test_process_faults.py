"""The server killed (SIGKILL) or stopped (SIGTERM) under load, on SQLite and PostgreSQL:
no acked write lost, none stored twice, every observer gap-free and in agreement."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from tests.reliability.conftest import Backend
from tests.reliability.recording import Watcher, Writer, finish
from tests.server.harness import ServerProcess
from tidings.testing.history import History

USERS = ("al", "bo", "cy")


async def under_load(
    tmp_path: Path, backend: Backend, history: History, fault: signal.Signals
) -> None:
    process = ServerProcess(
        tmp_path, TIDINGS_DATABASE_URL=backend.database_url, TIDINGS_RATE_LIMIT="0"
    )
    server = await process.start()
    try:
        session = await server.create_session("al")
        for user in USERS[1:]:
            await server.add_member("al", session, user, "member")
        url = lambda: server.ws_url  # noqa: E731 - the same port after every restart
        writers = [Writer(history, url, user, session, timeout=2) for user in USERS]
        watchers = [Watcher(history, url, "al", session, f"watcher-{n}") for n in range(2)]
        for watcher in watchers:
            watcher.start()
        load = asyncio.gather(*(w.run(40, pause_s=0.005) for w in writers))
        for _ in range(2):
            await asyncio.sleep(0.25)
            process.signal(fault)
            await process.wait()
            await process.start()
        await asyncio.wait_for(load, 60)
        counts = await finish(history, server, "al", [session], watchers, writers)
        assert counts.acked == 3 * 40
        assert all(w.resumes >= 2 for w in watchers)
        if fault is signal.SIGKILL:  # (a SIGTERM acks what is in flight: nothing to retry)
            assert counts.retried >= 1, "a kill hit a send in flight"
    finally:
        await process.stop()


async def test_sigkill_under_load_loses_no_acked_write_and_stores_none_twice(
    tmp_path: Path, backend: Backend, history: History
) -> None:
    await under_load(tmp_path, backend, history, signal.SIGKILL)


async def test_sigterm_under_load_loses_no_acked_write_and_stores_none_twice(
    tmp_path: Path, backend: Backend, history: History
) -> None:
    await under_load(tmp_path, backend, history, signal.SIGTERM)
