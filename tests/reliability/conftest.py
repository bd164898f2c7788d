"""Fixtures of the fault suite: a store on SQLite or PostgreSQL (a database of its own),
and the checker's counts summed per store over the run (printed at the end)."""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tidings.testing.history import Counts, History

POSTGRES_URL = os.environ.get(
    "TIDINGS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
TALLY: dict[str, Counts] = {}


@dataclasses.dataclass
class Backend:
    name: str
    database_url: str
    database: str | None = None  # PostgreSQL: the test's own database

    async def admin_execute(self, sql: str) -> None:
        import asyncpg

        admin = await asyncpg.connect(POSTGRES_URL, timeout=3)
        try:
            await admin.execute(sql)
        finally:
            await admin.close()

    async def kill_backends(self) -> None:
        """Terminate the server's PostgreSQL connections (this test's database only)."""
        await self.admin_execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{self.database}' AND pid <> pg_backend_pid()"
        )

    async def allow_connections(self, allowed: bool) -> None:
        await self.admin_execute(
            f"ALTER DATABASE {self.database} ALLOW_CONNECTIONS {str(allowed).lower()}"
        )


async def _postgres_database() -> str:
    import asyncpg

    try:
        admin = await asyncpg.connect(POSTGRES_URL, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        reason = f"PostgreSQL is not reachable at {POSTGRES_URL}: {exc!r}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    name = f"tidings_rel_{uuid.uuid4().hex[:12]}"
    try:
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    return name


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        yield Backend("sqlite", f"sqlite:///{tmp_path / 'tidings.db'}")
        return
    name = await _postgres_database()
    base = POSTGRES_URL.rsplit("/", 1)[0]
    made = Backend("postgres", f"{base}/{name}", name)
    try:
        yield made
    finally:
        await made.admin_execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
        await made.admin_execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def history(request: pytest.FixtureRequest) -> Iterator[History]:
    """A history for this test; its counts join the run's tally under the store's name."""
    recorded = History()
    store = "sqlite"
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None and "backend" in callspec.params:
        store = callspec.params["backend"]
    yield recorded
    TALLY[store] = TALLY.get(store, Counts()) + recorded.counts()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TALLY:
        terminalreporter.section("history checker counts")
        for store, counts in sorted(TALLY.items()):
            terminalreporter.write_line(f"{store}: {counts}")
