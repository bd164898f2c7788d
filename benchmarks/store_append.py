"""Microbenchmark: acknowledged appends per second into ONE session, and their latency.

`python -m benchmarks.store_append [--backend sqlite|postgres|all] [--seconds 5]
[--concurrency 50] [--uvloop]`

Each of `concurrency` tasks appends `message.created` events (each with a fresh
client_id, as real clients send) into the same session, back to back, for `seconds`.
Besides appends/s and latency it prints the CPU time this process spent per append,
which, unlike wall-clock rates, does not depend on what else the machine runs.
An append counts when `append` returns: for SQLite that is after the fsync of its
group commit (`synchronous=FULL`). PostgreSQL uses a new schema of
`TIDINGS_TEST_POSTGRES_URL` (default postgresql://postgres@127.0.0.1:5432/test) and
drops it afterwards.

`--rate R` measures the commit floor instead: one appender, R appends per second,
evenly spaced, so every append is a commit of its own (what a durable send costs at
S3's pace before the server does anything else); `--backend fdatasync` times the disk
alone the same way (append 300 bytes to a file, `fdatasync`); `--json` prints the
figures as one JSON line for the benchmark harness.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from tidings.backends.base import EventStore
from tidings.backends.postgres import PostgresStore
from tidings.backends.sqlite import SqliteStore
from tidings.core.model import Draft, Kind

POSTGRES_URL = os.environ.get(
    "TIDINGS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def _clock() -> int:
    return time.time_ns() // 1_000_000


@asynccontextmanager
async def _sqlite() -> AsyncIterator[EventStore]:
    with tempfile.TemporaryDirectory(prefix="tidings-bench-") as folder:
        store = SqliteStore(os.path.join(folder, "bench.db"), _clock)
        await store.open()
        try:
            yield store
        finally:
            await store.close()
            print(f"  sqlite commits: {store.commits} for {store.writes} writes", file=sys.stderr)


@asynccontextmanager
async def _postgres() -> AsyncIterator[EventStore]:
    import asyncpg

    schema = f"tidings_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(POSTGRES_URL)
    await admin.execute(f"CREATE SCHEMA {schema}")
    try:
        sep = "&" if "?" in POSTGRES_URL else "?"
        store = PostgresStore(f"{POSTGRES_URL}{sep}search_path={schema}", _clock, max_size=20)
        await store.open()
        try:
            yield store
        finally:
            await store.close()
    finally:
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()


BACKENDS: dict[str, Callable[[], Any]] = {"sqlite": _sqlite, "postgres": _postgres}
Figures = dict[str, float]


def _draft(client_id: str) -> Draft:
    return Draft(
        kind=Kind.MESSAGE_CREATED,
        author="bench",
        data={
            "message": {
                "role": "user",
                "author": "bench",
                "content": "Hello, this is a benchmark message.",
                "is_code": False,
                "status": "complete",
            }
        },
        client_id=client_id,
    )


async def run(backend: str, seconds: float, concurrency: int) -> None:
    async with BACKENDS[backend]() as store:
        await store.create_session("bench", title="Bench", agent="none", owner="bench")
        latencies: list[float] = []
        deadline = time.perf_counter() + seconds

        async def appender(worker: int) -> None:
            n = 0
            while time.perf_counter() < deadline:
                draft = _draft(f"w{worker}-{n}")
                n += 1
                started = time.perf_counter()
                await store.append("bench", draft)
                latencies.append(time.perf_counter() - started)

        began, cpu_began = time.perf_counter(), time.process_time()
        await asyncio.gather(*(appender(i) for i in range(concurrency)))
        elapsed = time.perf_counter() - began
        cpu = time.process_time() - cpu_began
        head = await store.head("bench")
        assert head == len(latencies) + 1, (head, len(latencies))
        cuts = statistics.quantiles(latencies, n=100)
        print(
            f"{backend:9s} {len(latencies) / elapsed:9,.0f} appends/s"
            f"  p50 {cuts[49] * 1000:6.2f} ms  p99 {cuts[98] * 1000:6.2f} ms"
            f"  ({len(latencies)} appends, {concurrency} appenders, {elapsed:.1f} s)"
        )
        # On a shared machine the wall-clock rate depends on the neighbours; the CPU
        # this process spent per append does not (the database server's is not counted).
        print(
            f"  this process used {cpu:.2f} CPU-s: {cpu / len(latencies) * 1e6:.0f} µs per append,"
            f" {len(latencies) / cpu:,.0f} appends per CPU-second"
        )


async def _paced(one: Callable[[int], Awaitable[None]], seconds: float, rate: float) -> Figures:
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    start = due = loop.time()
    while due < start + seconds:
        await asyncio.sleep(max(0.0, due - loop.time()))
        started = time.perf_counter()
        await one(len(latencies))
        latencies.append(time.perf_counter() - started)
        due += 1 / rate
    cuts = statistics.quantiles(latencies, n=100)
    return {
        "p50_ms": cuts[49] * 1000,
        "p99_ms": cuts[98] * 1000,
        "max_ms": max(latencies) * 1000,
        "samples": len(latencies),
    }


async def paced(backend: str, seconds: float, rate: float) -> Figures:
    """One appender at `rate` appends/s: the latency of a commit on its own. Backend
    "fdatasync" is the disk's own floor: a 300-byte append to a plain file, then
    `fdatasync`, on the event loop's thread (no database at all)."""
    if backend == "fdatasync":
        with tempfile.TemporaryDirectory(prefix="tidings-bench-") as folder:
            fd = os.open(os.path.join(folder, "log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            record = b"x" * 299 + b"\n"

            async def write_and_sync(_: int) -> None:
                os.write(fd, record)
                os.fdatasync(fd)

            try:
                return await _paced(write_and_sync, seconds, rate)
            finally:
                os.close(fd)
    async with BACKENDS[backend]() as store:
        await store.create_session("bench", title="Bench", agent="none", owner="bench")

        async def append(n: int) -> None:
            await store.append("bench", _draft(f"p{n}"))

        return await _paced(append, seconds, rate)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--backend",
        choices=[*BACKENDS, "fdatasync", "all"],
        default="all",
        help="fdatasync: with --rate only",
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    parser.add_argument("--rate", type=float, help="one appender at this many appends/s")
    parser.add_argument("--json", action="store_true", help="with --rate: one JSON line")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        uvloop.install()
    if args.rate:
        for backend in BACKENDS if args.backend == "all" else [args.backend]:
            figures = asyncio.run(paced(backend, args.seconds, args.rate))
            if args.json:
                print(json.dumps({"backend": backend, **figures}), flush=True)
            else:
                print(
                    f"{backend:9s} one append every {1000 / args.rate:.1f} ms:"
                    f" p50 {figures['p50_ms']:.2f} ms  p99 {figures['p99_ms']:.2f} ms"
                    f"  max {figures['max_ms']:.2f} ms ({figures['samples']:.0f} appends)"
                )
        return
    if args.backend == "fdatasync":
        parser.error("--backend fdatasync needs --rate")
    for backend in BACKENDS if args.backend == "all" else [args.backend]:
        asyncio.run(run(backend, args.seconds, args.concurrency))


if __name__ == "__main__":
    main()
