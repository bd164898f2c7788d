"""The servers under test: how to start each one, and its CPU and memory while it runs.

Every server runs as a fresh subprocess, pinned to the first allowed core when the
machine has two or more (the load generator takes the second), with its output in a
log file of its own temporary directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import psutil

from benchmarks.peers import PEERS

PEER_NAMES = tuple(PEERS)
ALL_SERVERS = ("tidings", *PEER_NAMES)
BASELINE = "fastapi"
REPO = Path(__file__).resolve().parent.parent
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


def cores() -> tuple[int, int] | None:
    """(server core, load generator core), or None on a single-core machine."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2 or shutil.which("taskset") is None:
        return None
    return allowed[0], allowed[1]


def pinned(command: list[str], which: int) -> list[str]:
    """`command` prefixed with `taskset` for core number `which` of `cores()`."""
    pair = cores()
    return command if pair is None else ["taskset", "-c", str(pair[which]), *command]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tidings_available() -> str | None:
    """None when `tidings serve` can run here, else the reason it cannot."""
    if not (REPO / "src" / "tidings" / "server").is_dir():
        return "src/tidings/server does not exist yet"
    if not any((REPO / "src" / "tidings" / "server").glob("*.py")):
        return "src/tidings/server holds no module yet"
    if not tidings_executable().exists():
        return f"{tidings_executable()} is not installed"
    return None


def tidings_executable() -> Path:
    return Path(sys.executable).parent / "tidings"


@dataclass
class ServerSpec:
    """One server under test. `target` is the name in the report."""

    target: str
    dialect: str
    env: dict[str, str] = field(default_factory=dict)
    database_url: str | None = None  # Tidings: None means a fresh SQLite file

    @property
    def is_tidings(self) -> bool:
        return self.dialect == "tidings"

    def command(self, port: int) -> list[str]:
        if self.is_tidings:
            return [str(tidings_executable()), "serve", "--host", "127.0.0.1", "--port", str(port)]
        module = PEERS[self.target]
        return [sys.executable, "-m", module, "--port", str(port)]


def peer_spec(name: str) -> ServerSpec:
    return ServerSpec(name, "socketio" if name == "socketio" else "plain")


def tidings_spec(
    target: str = "tidings", agent: str = "none", database_url: str | None = None
) -> ServerSpec:
    return ServerSpec(
        target,
        "tidings",
        env={
            "TIDINGS_RATE_LIMIT": "0",
            # One benchmark user holds every connection and creates every session.
            "TIDINGS_MAX_CONNECTIONS_PER_USER": "0",
            "TIDINGS_SESSION_CREATE_RATE": "0",
            "TIDINGS_AGENT": agent,
            "TIDINGS_LOG_LEVEL": "warning",
        },
        database_url=database_url,
    )


class ServerProcess:
    """A running server; use `async with ServerProcess(spec) as server`."""

    secret = "bench-secret-not-for-production-0123456789"

    def __init__(self, spec: ServerSpec, start_timeout: float = 30.0) -> None:
        self.spec = spec
        self.port = free_port()
        self.start_timeout = start_timeout
        self.workdir = Path(tempfile.mkdtemp(prefix=f"bench-{spec.target}-"))
        self.log_path = self.workdir / "server.log"
        self.popen: subprocess.Popen[bytes] | None = None
        self.process: psutil.Process | None = None
        self._log: IO[bytes] | None = None

    async def __aenter__(self) -> ServerProcess:
        env = {**os.environ, **self.spec.env, "PYTHONUNBUFFERED": "1"}
        if self.spec.is_tidings:
            env["TIDINGS_JWT_SECRET"] = self.secret
            env["TIDINGS_DATABASE_URL"] = self.spec.database_url or (
                f"sqlite:///{self.workdir / 'bench.db'}"
            )
        self._spawn(env)
        try:
            await self._wait_ready()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _spawn(self, env: dict[str, str]) -> None:
        # Popen returns as soon as the child is forked: nothing here blocks the loop.
        self._log = self.log_path.open("wb")
        self.popen = subprocess.Popen(
            pinned(self.spec.command(self.port), 0),
            cwd=self.workdir if self.spec.is_tidings else REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.process = psutil.Process(self.popen.pid)

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            assert self.popen is not None
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.spec.target} exited at start: {self.log_tail()}")
            if await asyncio.to_thread(self._answers):
                return
            await asyncio.sleep(0.1)
        raise TimeoutError(
            f"{self.spec.target} not ready in {self.start_timeout} s: {self.log_tail()}"
        )

    def _answers(self) -> bool:
        if self.spec.is_tidings:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.port}/healthz", timeout=1
                ) as r:
                    return bool(r.status == 200)
            except (OSError, urllib.error.URLError):
                return False
        with socket.socket() as sock:
            sock.settimeout(1)
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def _processes(self) -> list[psutil.Process]:
        """The server and its children (the `taskset` wrapper execs, so pid is the server)."""
        assert self.process is not None
        try:
            return [self.process, *self.process.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_seconds(self) -> float:
        total = 0.0
        for proc in self._processes():
            with contextlib.suppress(psutil.NoSuchProcess):
                times = proc.cpu_times()
                total += times.user + times.system
        return total

    def rss_bytes(self) -> int:
        total = 0
        for proc in self._processes():
            with contextlib.suppress(psutil.NoSuchProcess):
                total += proc.memory_info().rss
        return total

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, size: int = 1500) -> str:
        try:
            return self.log_path.read_bytes()[-size:].decode(errors="replace")
        except OSError:
            return ""

    async def stop(self) -> None:
        popen = self.popen
        if popen is not None and popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(popen.pid, signal.SIGTERM)
            for _ in range(50):
                if popen.poll() is not None:
                    break
                await asyncio.sleep(0.1)
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(popen.pid, signal.SIGKILL)
                await asyncio.to_thread(popen.wait, 5)
        if self._log is not None:
            self._log.close()
            self._log = None
        shutil.rmtree(self.workdir, ignore_errors=True)


# PostgreSQL for S5 -------------------------------------------------------------------


def postgres_admin_url() -> str:
    return os.environ.get("TIDINGS_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL)


@contextlib.asynccontextmanager
async def fresh_postgres_database() -> AsyncIterator[str | None]:
    """Yield the URL of a new database `tidings_bench_<pid>` (dropped after), or None
    when PostgreSQL is not reachable."""
    try:
        import asyncpg
    except ImportError:
        yield None
        return
    admin = postgres_admin_url()
    name = f"tidings_bench_{os.getpid()}"
    try:
        conn = await asyncio.wait_for(asyncpg.connect(admin), 3)
    except (OSError, TimeoutError, asyncpg.PostgresError):
        yield None
        return
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await conn.execute(f'CREATE DATABASE "{name}"')
        base, _, _ = admin.rpartition("/")
        yield f"{base}/{name}"
    finally:
        with contextlib.suppress(Exception):
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()
