"""Run the benchmark scenarios against Tidings and its peers.

    python -m benchmarks [--quick] [--scenarios S1,S2] [--servers tidings,fastapi] [--reps 5]

Each (scenario, server) gets a fresh server process (Tidings: a fresh temporary
directory and SQLite file, TIDINGS_RATE_LIMIT=0). Prints a table and writes JSON to
benchmarks/results/<date>-<time>.json (or --out DIR).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarks.peers._common import raise_file_limit
from benchmarks.report import document, print_table, write_json
from benchmarks.runner import FLOORS, Row, run_floor, run_scenario
from benchmarks.scenarios import SCENARIOS
from benchmarks.servers import (
    ALL_SERVERS,
    BASELINE,
    fresh_postgres_database,
    peer_spec,
    tidings_available,
    tidings_spec,
)

RESULTS = Path(__file__).resolve().parent / "results"


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="short runs (S1: 1 s, 1 rep)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="e.g. S1,S2")
    parser.add_argument("--servers", default=",".join(ALL_SERVERS), help="e.g. tidings,fastapi")
    parser.add_argument(
        "--reps", type=int, default=None, help="S1-S3 repetitions (default 5, quick 1)"
    )
    parser.add_argument("--duration", type=float, default=None, help="seconds, every scenario")
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply connection counts (smoke tests: 0.02)"
    )
    parser.add_argument(
        "--window", type=int, default=None, help="S1: undelivered messages in flight (64)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory for the JSON")
    args = parser.parse_args(argv)
    args.scenario_keys = [s.strip().upper() for s in args.scenarios.split(",") if s.strip()]
    args.server_names = [s.strip().lower() for s in args.servers.split(",") if s.strip()]
    for key in args.scenario_keys:
        if key not in SCENARIOS:
            parser.error(f"unknown scenario {key}; known: {', '.join(SCENARIOS)}")
    for name in args.server_names:
        if name not in ALL_SERVERS:
            parser.error(f"unknown server {name}; known: {', '.join(ALL_SERVERS)}")
    if args.reps is None:
        args.reps = 1 if args.quick else 5
    return args


async def run_all(args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    # The baseline first, so every ratio compares runs made minutes apart at most.
    order = sorted(args.server_names, key=lambda n: (n != BASELINE, n == "tidings"))
    skip_tidings = tidings_available() if "tidings" in order else None
    if skip_tidings:
        print(f"skipping tidings: {skip_tidings}", file=sys.stderr)
    for key in args.scenario_keys:
        scenario = SCENARIOS[key]
        config = scenario.config(args.quick, args.scale, args.duration)
        if args.window and "window" in config:
            config["window"] = args.window
        reps = args.reps if scenario.repeated else 1
        print(f"{key}: {scenario.title}", file=sys.stderr)
        for name in order:
            if name == "tidings":
                if skip_tidings:
                    continue
                agent = "echo" if scenario.workload == "agent" else "none"
                rows += await run_scenario(scenario, tidings_spec(agent=agent), config, reps, _log)
                if scenario.commit_floor:
                    for backend in FLOORS:
                        rows.append(await run_floor(key, config, reps, backend, _log))
                if scenario.workload == "acks":
                    async with fresh_postgres_database() as url:
                        if url is None:
                            print("  S5 PostgreSQL: not reachable, skipped", file=sys.stderr)
                        else:
                            spec = tidings_spec("tidings-pg", database_url=url)
                            rows += await run_scenario(scenario, spec, config, reps, _log)
            elif not scenario.tidings_only:
                rows += await run_scenario(scenario, peer_spec(name), config, reps, _log)
    return rows


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    raise_file_limit()  # children inherit it: 10,000 connections need descriptors
    rows = asyncio.run(run_all(args))
    settings = {
        "quick": args.quick,
        "scenarios": args.scenario_keys,
        "servers": args.server_names,
        "reps": args.reps,
        "duration": args.duration,
        "scale": args.scale,
        "window": args.window,
    }
    print_table(rows)
    path = write_json(document(rows, settings), args.out)
    print(f"wrote {path}")
    return 1 if any(row.error for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
