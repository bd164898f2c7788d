"""Storage faults under load, through the checker: PostgreSQL backends killed and the
database refusing connections (a database of the test's own), a full disk (ENOSPC) and a
read-only one (EROFS) under SQLite on a small tmpfs."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.reliability.conftest import Backend
from tests.reliability.recording import Watcher, Writer, finish
from tests.server.harness import Server, ServerProcess, running_server
from tidings.testing.history import History

postgres_only = pytest.mark.parametrize(
    "backend", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)


@postgres_only
@pytest.mark.xfail(
    strict=False,
    reason="open, intermittent (about 2 runs in 3): with backends killed around COMMIT, a send "
    "answered unavailable is later acked as a duplicate — the commit had happened "
    "(issue 10 point 1 is not done until this passes every time)",
)
async def test_postgres_backends_killed_under_load_lose_no_acked_write(
    tmp_path: Path, backend: Backend, history: History
) -> None:
    async with running_server(
        tmp_path, database_url=backend.database_url, rate_limit=0, uncertain_commit_ms=3000
    ) as server:
        session = await server.create_session("al")
        await server.add_member("al", session, "bo", "member")
        url = lambda: server.ws_url  # noqa: E731
        watchers = [Watcher(history, url, "al", session, f"watcher-{n}") for n in range(2)]
        for watcher in watchers:
            watcher.start()
        writers = [Writer(history, url, user, session, timeout=5) for user in ("al", "bo")]
        load = asyncio.gather(*(w.run(40, pause_s=0.005) for w in writers))
        for _ in range(10):
            await asyncio.sleep(0.1)
            await backend.kill_backends()
        await asyncio.wait_for(load, 60)
        counts = await finish(history, server, "al", [session], watchers, writers)
        assert counts.acked == 80


@postgres_only
async def test_postgres_refusing_connections_fails_sends_truthfully_then_recovers(
    tmp_path: Path, backend: Backend, history: History
) -> None:
    async with running_server(
        tmp_path, database_url=backend.database_url, rate_limit=0, uncertain_commit_ms=3000
    ) as server:
        session = await server.create_session("al")
        url = lambda: server.ws_url  # noqa: E731
        watcher = Watcher(history, url, "al", session, "watcher")
        watcher.start()
        writer = Writer(history, url, "al", session, timeout=5)
        await writer.run(5)
        await backend.allow_connections(False)
        await backend.kill_backends()
        load = asyncio.ensure_future(writer.run(10, pause_s=0.02))
        await asyncio.sleep(1.0)
        refused = sum(
            a.outcome.value == "fail" for op in history.operations.values() for a in op.attempts
        )
        await backend.allow_connections(True)
        await asyncio.wait_for(load, 60)
        counts = await finish(history, server, "al", [session], [watcher], [writer])
        assert counts.acked == 15
        assert refused >= 1, "the outage answered some send with an error"


# -------------------------------------------------------------------- disk faults


@contextlib.contextmanager
def small_disk(path: Path, size: str = "2m") -> Iterator[Path]:
    """A tmpfs of `size` at `path` (root only; the test skips where mounting fails)."""
    path.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        reason = f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(disk: Path) -> Path:
    """Fill `disk` until ENOSPC; the filler file (remove it to free the space)."""
    filler = disk / "filler"
    chunk = b"\0" * 65536
    with open(filler, "wb", buffering=0) as out:
        # A 2 MiB disk: the loop ends by ENOSPC long before this bound.
        for _ in range(10_000):
            try:
                out.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                return filler
    raise AssertionError("the disk never filled up")


def remount(disk: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(disk)], check=True)


async def readyz(server: Server) -> int:
    async with httpx.AsyncClient(timeout=5) as client:
        return (await client.get(f"{server.http_url}/readyz")).status_code


async def test_a_full_disk_refuses_sends_truthfully_and_recovers(
    tmp_path: Path, history: History
) -> None:
    with small_disk(tmp_path / "disk") as disk:
        process = ServerProcess(
            tmp_path,
            TIDINGS_DATABASE_URL=f"sqlite:///{disk / 'tidings.db'}",
            TIDINGS_RATE_LIMIT="0",
            TIDINGS_UNCERTAIN_COMMIT_MS="2000",
        )
        server = await process.start()
        try:
            session = await server.create_session("al")
            url = lambda: server.ws_url  # noqa: E731
            watcher = Watcher(history, url, "al", session, "watcher")
            watcher.start()
            writer = Writer(history, url, "al", session, timeout=3, give_up_s=1.5)
            await writer.run(5)
            filler = fill(disk)
            for i in range(5):  # each refused (or unanswered): none may appear later
                await writer.send(f"during-{i}")
            during = await readyz(server)
            filler.unlink()
            # A store that failed stop stays down until restarted, as it says.
            if await readyz(server) != 200:
                process.signal(signal.SIGTERM)
                await process.wait()
                await process.start()
            writer.give_up_s = 20
            await writer.run(5)
            counts = await finish(history, server, "al", [session], [watcher], [writer])
            assert counts.acked >= 10
            assert during == 503, "readyz reports the failing writes"
        finally:
            await process.stop()


async def test_a_read_only_disk_is_refused_at_start_and_the_log_survives_it(
    tmp_path: Path, history: History
) -> None:
    # A filesystem with a database open for writing cannot be remounted read-only, so the
    # fault comes between runs: the server must refuse to start on it (EROFS), not report
    # ready while every send fails.
    with small_disk(tmp_path / "disk") as disk:
        process = ServerProcess(
            tmp_path,
            TIDINGS_DATABASE_URL=f"sqlite:///{disk / 'tidings.db'}",
            TIDINGS_RATE_LIMIT="0",
        )
        server = await process.start()
        try:
            session = await server.create_session("al")
            url = lambda: server.ws_url  # noqa: E731
            watcher = Watcher(history, url, "al", session, "watcher")
            watcher.start()
            writer = Writer(history, url, "al", session, timeout=3)
            await writer.run(5)
            process.signal(signal.SIGTERM)
            assert await process.wait() == 0
            remount(disk, "ro")
            with pytest.raises(RuntimeError, match="server exited"):
                await process.start()
            assert process.proc is not None
            assert process.proc.returncode == 2
            remount(disk, "rw")
            await process.start()
            await writer.run(5)
            counts = await finish(history, server, "al", [session], [watcher], [writer])
            assert counts.acked == 10
        finally:
            await process.stop()
