"""The command line: `tidings token`, `tidings migrate`, and the made-up key of `serve`."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.server.harness import free_port
from tidings.core.auth import AuthConfig, verify

SECRET = "cli-test-secret-0123456789-abcdefghij"


def tidings(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    return subprocess.run(
        [sys.executable, "-m", "tidings.cli", *args],
        cwd=cwd,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_token_prints_a_token_signed_with_the_configured_key(tmp_path: Path) -> None:
    done = tidings("token", "alice", "--ttl", "120", cwd=tmp_path, TIDINGS_JWT_SECRET=SECRET)
    assert done.returncode == 0, done.stderr
    claims = verify(done.stdout.strip(), AuthConfig(secret=SECRET), now_s=int(time.time()))
    assert claims.user == "alice"
    assert 100 <= claims.exp - time.time() <= 121


def test_token_without_any_key_explains_what_to_do(tmp_path: Path) -> None:
    done = tidings("token", "alice", cwd=tmp_path)
    assert done.returncode == 2
    assert "TIDINGS_JWT_SECRET" in done.stderr


def test_token_uses_the_key_serve_made_in_this_folder(tmp_path: Path) -> None:
    (tmp_path / "tidings.secret").write_text("k" * 40 + "\n")
    done = tidings("token", "bob", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert verify(done.stdout.strip(), AuthConfig(secret="k" * 40), now_s=int(time.time()))


def test_migrate_creates_the_schema_of_an_empty_database(tmp_path: Path) -> None:
    db = tmp_path / "fresh.db"
    done = tidings("migrate", cwd=tmp_path, TIDINGS_DATABASE_URL=f"sqlite:///{db}")
    assert done.returncode == 0, done.stderr
    assert "up to date" in done.stdout
    with sqlite3.connect(db) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert {"sessions", "members", "events", "messages"} <= tables


def test_a_bad_number_in_the_environment_is_a_clear_error(tmp_path: Path) -> None:
    done = tidings("token", "x", cwd=tmp_path, TIDINGS_JWT_SECRET=SECRET, TIDINGS_PORT="eighty")
    assert done.returncode == 2
    assert "TIDINGS_PORT must be a number" in done.stderr


def test_serve_without_a_key_makes_one_that_token_then_uses(tmp_path: Path) -> None:
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    server = subprocess.Popen(
        [sys.executable, "-m", "tidings.cli", "serve", "--port", str(port)],
        cwd=tmp_path,
        env=clean,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        secret = tmp_path / "tidings.secret"
        assert secret.stat().st_mode & 0o777 == 0o600
        token = tidings("token", "carol", cwd=tmp_path).stdout.strip()
        response = httpx.get(
            f"http://127.0.0.1:{port}/v1/sessions", headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 200
        assert (tmp_path / "tidings.db").exists()  # the embedded default store
    finally:
        server.terminate()
        _, stderr = server.communicate(timeout=20)
    assert server.returncode == 0
    assert "tidings.secret" in stderr


def test_serve_refuses_a_database_it_cannot_write(tmp_path: Path) -> None:
    """A read-only database (here PostgreSQL's `default_transaction_read_only` on a
    database of this test's own) is refused at start, in one line, with status 2."""
    import asyncio
    import uuid

    import asyncpg
    import pytest

    url = os.environ.get("TIDINGS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    name = f"tidings_ro_{uuid.uuid4().hex[:10]}"

    async def admin(*statements: str) -> None:
        conn = await asyncpg.connect(url, timeout=3)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    try:
        asyncio.run(admin(f"CREATE DATABASE {name}"))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"PostgreSQL is not reachable at {url}: {exc!r}")
    db_url = url.rsplit("/", 1)[0] + f"/{name}"
    try:
        migrated = tidings("migrate", cwd=tmp_path, TIDINGS_DATABASE_URL=db_url)
        assert migrated.returncode == 0, migrated.stderr
        asyncio.run(admin(f"ALTER DATABASE {name} SET default_transaction_read_only = on"))
        done = tidings(
            "serve",
            cwd=tmp_path,
            TIDINGS_DATABASE_URL=db_url,
            TIDINGS_JWT_SECRET=SECRET,
            TIDINGS_PORT=str(free_port()),
        )
        assert done.returncode == 2, done.stderr
        lines = [line for line in done.stderr.splitlines() if line.startswith("tidings:")]
        assert len(lines) == 1
        assert "cannot serve" in lines[0]
        assert "read-only" in lines[0]
    finally:
        asyncio.run(admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
