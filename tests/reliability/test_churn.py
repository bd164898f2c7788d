"""Connection churn: clients connect, subscribe, send and leave (cleanly or by a reset) for
a while; the server's RSS stays flat and its connection and subscription gauges return to
zero. `TIDINGS_SOAK_S` sets the duration (8 s here; `make reliability` runs 60 s)."""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from pathlib import Path

from tests.reliability.recording import Watcher, Writer, drop, finish, open_client
from tests.security.memory import MIB, rss_bytes
from tests.server.harness import ServerProcess, metric
from tidings.testing.history import History

SOAK_S = float(os.environ.get("TIDINGS_SOAK_S", "8"))


async def test_connection_churn_keeps_rss_flat_and_gauges_return_to_zero(
    tmp_path: Path, history: History
) -> None:
    process = ServerProcess(tmp_path, TIDINGS_RATE_LIMIT="0")
    server = await process.start()
    assert process.proc is not None
    pid = process.proc.pid
    try:
        session = await server.create_session("al")
        watcher = Watcher(history, lambda: server.ws_url, "al", session, "watcher")
        watcher.start()
        samples: list[tuple[float, int]] = []
        began = time.monotonic()
        rounds = 0
        while time.monotonic() - began < SOAK_S:
            clients = [await open_client(server.ws_url, "al") for _ in range(10)]
            for n, client in enumerate(clients):
                assert client is not None
                await client.subscribe(session, after=0 if n % 2 else None)
            writer = Writer(history, lambda: server.ws_url, "al", session)
            await writer.send(f"round-{rounds}")
            for n, client in enumerate(clients):
                if n % 2:
                    await drop(client)  # a reset, no close handshake
                else:
                    assert client is not None
                    await client.close()
            await writer.close()
            rounds += 1
            samples.append((time.monotonic() - began, rss_bytes(pid)))
        counts = await finish(history, server, "al", [session], [watcher])
        assert counts.acked == rounds
        # Flat: the last quarter's median within a few MiB of the second quarter's (the
        # first is warm-up: caches and allocator arenas filling).
        quarter = max(1, len(samples) // 4)
        early = statistics.median(r for _, r in samples[quarter : 2 * quarter])
        late = statistics.median(r for _, r in samples[-quarter:])
        assert (late - early) / MIB < 8, f"RSS grew {(late - early) / MIB:.1f} MiB"
        deadline = time.monotonic() + 5
        while (
            await metric(server, "tidings_connections"),
            await metric(server, "tidings_subscriptions"),
        ) != (0.0, 0.0):
            assert time.monotonic() < deadline, "gauges did not return to zero"
            await asyncio.sleep(0.05)
        assert rounds >= 5
    finally:
        await process.stop()
