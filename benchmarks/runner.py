"""Run a scenario against a server: start the server, drive the load generator, sample
the server's CPU and memory at the phases the load generator reports, clean up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from benchmarks.scenarios import Scenario
from benchmarks.servers import REPO, ServerProcess, ServerSpec, pinned


@dataclass
class Row:
    """One line of the report: a scenario on one server (and Tidings request kind)."""

    scenario: str
    target: str
    metric: str
    higher_is_better: bool
    samples: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    def median(self) -> dict[str, float]:
        keys = {k for s in self.samples for k, v in s.items() if isinstance(v, int | float)}
        return {
            k: statistics.median(s[k] for s in self.samples if isinstance(s.get(k), int | float))
            for k in sorted(keys)
        }


@dataclass
class Snapshot:
    at: float
    cpu: float
    rss: int


async def run_once(
    scenario: Scenario, config: dict[str, Any], server: ServerProcess
) -> dict[str, Any]:
    """One load-generator run; its result plus the server's CPU and memory figures."""
    config = {
        **config,
        "dialect": server.spec.dialect,
        "port": server.port,
        "secret": server.secret,
        "timeout": scenario.timeout(config),
    }
    with tempfile.TemporaryFile() as stderr:
        proc = await asyncio.create_subprocess_exec(
            *pinned(
                [sys.executable, "-m", "benchmarks.loadgen", "--config", json.dumps(config)], 1
            ),
            cwd=REPO,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
        )
        try:
            async with asyncio.timeout(scenario.timeout(config) + 10):
                result, snaps = await _drive(proc, server, idle=scenario.workload == "idle")
        except TimeoutError:
            raise TimeoutError(f"{scenario.key} did not finish in time") from None
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            await proc.wait()
            stderr.seek(0)
            errors = stderr.read()[-1500:].decode(errors="replace")
        if result is None:
            raise RuntimeError(
                f"load generator gave no result (exit {proc.returncode}): {errors}"
                f"\nserver log: {server.log_tail(800)}"
            )
    return {**result, **_server_figures(snaps, result)}


async def _drive(
    proc: asyncio.subprocess.Process, server: ServerProcess, idle: bool
) -> tuple[dict[str, Any] | None, dict[str, Snapshot]]:
    assert proc.stdout is not None
    assert proc.stdin is not None
    snaps: dict[str, Snapshot] = {}
    while line := await proc.stdout.readline():
        try:
            message = json.loads(line)
        except ValueError:
            continue  # a stray print: not part of the phase protocol
        phase = message.pop("phase", None)
        if phase == "result":
            return message, snaps
        if idle and phase == "ready":
            await asyncio.sleep(0.5)  # let the allocator settle before reading RSS
        snaps[str(phase)] = Snapshot(time.monotonic(), server.cpu_seconds(), server.rss_bytes())
        proc.stdin.write(b"go\n")
        await proc.stdin.drain()
    return None, snaps


def _server_figures(snaps: dict[str, Snapshot], result: dict[str, Any]) -> dict[str, float]:
    figures: dict[str, float] = {}
    ready, stop, prepared = snaps.get("ready"), snaps.get("stop"), snaps.get("prepared")
    if ready and stop and stop.at > ready.at:
        figures["server_cpu_pct"] = 100 * (stop.cpu - ready.cpu) / (stop.at - ready.at)
    if stop:
        figures["server_rss_mib"] = stop.rss / 2**20
    connections = result.get("connections")
    if prepared and ready and connections:
        figures["rss_per_conn_kib"] = (ready.rss - prepared.rss) / connections / 1024
    return figures


async def run_scenario(
    scenario: Scenario,
    spec: ServerSpec,
    config: dict[str, Any],
    reps: int,
    log: Any = print,
) -> list[Row]:
    """Every row of one scenario on one server: one per Tidings request kind, `reps` runs each."""
    kinds = scenario.tidings_kinds if spec.is_tidings else ("",)
    rows = [
        Row(
            scenario.key,
            spec.target if kind in ("", "send") else f"{spec.target}-{kind}",
            scenario.metric,
            scenario.higher_is_better,
        )
        for kind in kinds
    ]
    try:
        async with ServerProcess(spec) as server:
            for row, kind in zip(rows, kinds, strict=True):
                for rep in range(reps):
                    if not server.alive():
                        raise RuntimeError(f"server died: {server.log_tail()}")
                    sample = await run_once(scenario, {**config, "kind": kind or "send"}, server)
                    row.samples.append(sample)
                    log(
                        f"  {scenario.key} {row.target} rep {rep + 1}/{reps}: "
                        f"{scenario.metric}={sample.get(scenario.metric, 'n/a')}"
                    )
    except Exception as exc:  # one broken server must not stop the whole run
        for row in rows:
            if row.error is None and len(row.samples) < reps:
                row.error = f"{type(exc).__name__}: {exc}"[:2000]
    return rows


#: The rows of S3's durability floor: benchmarks.store_append backend → row name.
FLOORS = {"sqlite": "sqlite-commit", "fdatasync": "fdatasync"}


async def run_floor(
    scenario: str, config: dict[str, Any], reps: int, backend: str, log: Any = print
) -> Row:
    """What a durable send costs before the server does anything else, measured in the
    same run, paced like the scenario's sends and pinned to the server's core: one
    SQLite append on its own (`synchronous=FULL`, one commit each) or the disk's bare
    `fdatasync`."""
    rate = float(config.get("rooms", 1)) * float(config["rate"])
    row = Row(scenario, FLOORS[backend], "p99_ms", False)
    command = [sys.executable, "-m", "benchmarks.store_append", "--backend", backend]
    command += ["--rate", str(rate), "--seconds", str(config["duration"]), "--uvloop", "--json"]
    for rep in range(reps):
        proc = await asyncio.create_subprocess_exec(
            *pinned(command, 0),
            cwd=REPO,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            async with asyncio.timeout(float(config["duration"]) + 60):
                out, _ = await proc.communicate()
        except TimeoutError:
            proc.kill()
            await proc.wait()
            row.error = f"the {row.target} run did not finish in time"
            break
        lines = [line for line in out.decode().splitlines() if line.startswith("{")]
        if proc.returncode != 0 or not lines:
            row.error = f"store_append exited {proc.returncode} with no result"
            break
        row.samples.append(json.loads(lines[-1]))
        log(f"  {scenario} {row.target} rep {rep + 1}/{reps}: p99_ms={row.samples[-1]['p99_ms']}")
    return row
