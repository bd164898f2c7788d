"""`tidings` as a new user meets it: --version, --help, settings refused in one line
(exit status 2) before anything starts, the banner, and no secret ever printed."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.server.harness import free_port
from tests.test_cli import SECRET, tidings
from tidings import __version__


def _one_line_refusal(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("tidings: "), lines
    return lines[0]


def test_version_prints_the_package_version(tmp_path: Path) -> None:
    done = tidings("--version", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"tidings {__version__}"


def test_serve_help_gives_each_flag_a_description_its_default_and_its_variable(
    tmp_path: Path,
) -> None:
    done = tidings("serve", "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())  # argparse wraps lines
    assert "--port PORT port to listen on (0: any free port) [default: 8765; env TIDINGS_PORT]" in (
        text
    )
    assert "[default: sqlite:///tidings.db; env TIDINGS_DATABASE_URL]" in text
    assert "[default: 10.0; env TIDINGS_SHUTDOWN_GRACE_S]" in text
    # The openai agent's settings are flags too.
    for flag in ("--openai-model", "--openai-api-key", "--openai-base-url"):
        assert flag in text
    assert "env TIDINGS_OPENAI_MODEL" in text


def test_token_help_lists_only_its_own_options(tmp_path: Path) -> None:
    done = tidings("token", "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "--ttl" in done.stdout
    assert "--jwt-secret" in done.stdout
    for server_flag in ("--port", "--database-url", "--rate-limit", "--dev", "--openai-model"):
        assert server_flag not in done.stdout


def test_migrate_help_lists_only_the_database_url(tmp_path: Path) -> None:
    done = tidings("migrate", "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "--database-url" in done.stdout
    for server_flag in ("--port", "--jwt-secret", "--agent"):
        assert server_flag not in done.stdout


def test_an_openai_setting_given_as_a_flag_reaches_the_agent_check(tmp_path: Path) -> None:
    # Without the flag the openai agent is refused for want of a model (next test);
    # with it, the check passes and the next refusal is the (bad) log level's.
    done = tidings(
        "serve",
        "--agent",
        "openai",
        "--openai-model",
        "some-model",
        "--log-level",
        "loud",
        cwd=tmp_path,
        TIDINGS_JWT_SECRET=SECRET,
    )
    assert "TIDINGS_LOG_LEVEL" in _one_line_refusal(done)


_BAD_SETTINGS = {
    "unknown-database-scheme": ({"TIDINGS_DATABASE_URL": "mysql://db/x"}, "scheme 'mysql'"),
    "short-secret": ({"TIDINGS_JWT_SECRET": "too-short"}, "TIDINGS_JWT_SECRET is too short"),
    "bad-log-level": ({"TIDINGS_LOG_LEVEL": "loud"}, "TIDINGS_LOG_LEVEL must be one of"),
    "not-a-number": ({"TIDINGS_MAX_FRAME": "big"}, "TIDINGS_MAX_FRAME must be a number"),
    "port-out-of-range": ({"TIDINGS_PORT": "70000"}, "TIDINGS_PORT must be between 0 and"),
    "zero-heartbeat": ({"TIDINGS_HEARTBEAT_MS": "0"}, "TIDINGS_HEARTBEAT_MS must be more"),
    "agent-not-importable": ({"TIDINGS_AGENT": "nowhere.module:make"}, "'nowhere.module'"),
    "listed-agent-not-importable": (
        {"TIDINGS_AGENTS": "echo,nowhere:make"},
        "TIDINGS_AGENTS: agent 'nowhere:make'",
    ),
    "openai-without-model": ({"TIDINGS_AGENT": "openai"}, "needs TIDINGS_OPENAI_MODEL"),
}


@pytest.mark.parametrize(("env", "says"), _BAD_SETTINGS.values(), ids=_BAD_SETTINGS.keys())
def test_serve_refuses_a_bad_setting_in_one_line_with_status_2(
    tmp_path: Path, env: dict[str, str], says: str
) -> None:
    env = {"TIDINGS_JWT_SECRET": SECRET, "TIDINGS_PORT": str(free_port()), **env}
    line = _one_line_refusal(tidings("serve", cwd=tmp_path, **env))
    assert says in line, line


def test_serve_refuses_an_unreachable_postgresql_in_one_line_without_its_password(
    tmp_path: Path,
) -> None:
    # Port 1 on loopback: nothing listens, the connection is refused at once.
    url = "postgresql://tidings:hunter2-secret@127.0.0.1:1/tidings"
    done = tidings("serve", cwd=tmp_path, TIDINGS_JWT_SECRET=SECRET, TIDINGS_DATABASE_URL=url)
    line = _one_line_refusal(done)
    assert "postgresql://tidings:***@127.0.0.1:1/tidings" in line
    assert "hunter2-secret" not in done.stderr + done.stdout


def test_a_busy_port_is_refused_in_one_line_before_the_app_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = tidings("serve", "--port", str(port), cwd=tmp_path, TIDINGS_JWT_SECRET=SECRET)
    line = _one_line_refusal(done)
    assert f"cannot listen on 127.0.0.1:{port}" in line
    assert "startup complete" not in done.stderr


def test_serve_prints_a_banner_without_secrets(tmp_path: Path) -> None:
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TIDINGS_")}
    env = {
        **clean,
        "TIDINGS_JWT_SECRET": SECRET,
        "TIDINGS_REDIS_URL": "redis://:redis-password-1@127.0.0.1:6379/15",
        "TIDINGS_ALLOWED_ORIGINS": "https://chat.example",
        "TIDINGS_AGENTS": "none",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "tidings.cli", "serve", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and server.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
    finally:
        server.terminate()
        _, stderr = server.communicate(timeout=20)
    assert server.returncode == 0, stderr
    # The banner is logged like the rest (JSON lines on stderr).
    lines = [json.loads(line)["msg"] for line in stderr.splitlines() if line.startswith("{")]
    first = lines.index(
        f"tidings {__version__} listening on http://127.0.0.1:{port} "
        f"(WebSocket ws://127.0.0.1:{port}/v1/ws)"
    )
    banner = "\n".join(lines[first : first + 6])
    assert "store:   sqlite:///tidings.db" in banner
    assert "broker:  Redis redis://:***@127.0.0.1:6379/15" in banner
    assert "agents:  echo (default), none" in banner
    assert "origins: https://chat.example" in banner
    assert "dev mode: off" in banner
    for secret in (SECRET, "redis-password-1"):
        assert secret not in stderr
    # The banner comes before uvicorn claims anything.
    assert first < lines.index("Application startup complete.")


def test_migrate_does_not_print_the_database_password(tmp_path: Path) -> None:
    """On a PostgreSQL database of this test's own (trust auth ignores the password)."""
    import asyncpg

    url = os.environ.get("TIDINGS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    name = f"tidings_cli_{uuid.uuid4().hex[:10]}"

    async def admin(statement: str) -> None:
        conn = await asyncpg.connect(url, timeout=3)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    try:
        asyncio.run(admin(f"CREATE DATABASE {name}"))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"PostgreSQL is not reachable at {url}: {exc!r}")
    try:
        host = url.split("://", 1)[1].split("@", 1)[-1].rsplit("/", 1)[0]
        with_password = f"postgresql://postgres:pg-password-7@{host}/{name}"
        done = tidings("migrate", cwd=tmp_path, TIDINGS_DATABASE_URL=with_password)
    finally:
        asyncio.run(admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    assert done.returncode == 0, done.stderr
    assert "pg-password-7" not in done.stdout + done.stderr
    assert f"postgresql://postgres:***@{host}/{name}" in done.stdout
