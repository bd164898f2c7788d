"""Smoke tests of the benchmark harness: every scenario runs for about a second and
yields numbers. They assert nothing about speed (the machine is shared and noisy).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
PEER_SCENARIOS = "S1,S2,S3,S4,S6"
ALL_SCENARIOS = "S1,S2,S3,S4,S5,S6,S7"

pytestmark = pytest.mark.slow


def run_harness(out: Path, servers: str, scenarios: str) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "benchmarks",
        "--quick",
        "--duration",
        "1",
        "--scale",
        "0.02",
        "--reps",
        "1",
        "--servers",
        servers,
        "--scenarios",
        scenarios,
        "--out",
        str(out),
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, timeout=300, check=False)
    report = done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
    assert done.returncode == 0, report
    written = list(out.glob("*.json"))
    assert len(written) == 1, report
    document: dict[str, Any] = json.loads(written[0].read_text())
    return document


def headline(document: dict[str, Any], scenario: str, server: str) -> float:
    [row] = [r for r in document["results"] if r["scenario"] == scenario and r["server"] == server]
    assert row["error"] is None, row["error"]
    value: float = row["median"][row["metric"]]
    return value


def test_every_peer_scenario_yields_numbers_against_the_websockets_peer(tmp_path: Path) -> None:
    document = run_harness(tmp_path, "websockets", PEER_SCENARIOS)
    for scenario in PEER_SCENARIOS.split(","):
        assert headline(document, scenario, "websockets") > 0, scenario
    s2 = next(r for r in document["results"] if r["scenario"] == "S2")
    assert s2["median"]["delivered"] > 0
    assert "server_cpu_pct" in s2["median"]


def test_ratios_to_the_fastapi_baseline_are_written(tmp_path: Path) -> None:
    document = run_harness(tmp_path, "fastapi,websockets", "S1")
    assert headline(document, "S1", "fastapi") > 0
    [row] = [r for r in document["results"] if r["server"] == "websockets"]
    assert row["ratio_to_fastapi"]["deliveries_per_s"] > 0


def test_every_scenario_yields_numbers_against_tidings(tmp_path: Path) -> None:
    if not (REPO / "src" / "tidings" / "server").is_dir():
        pytest.skip("src/tidings/server does not exist yet: nothing to benchmark")
    document = run_harness(tmp_path, "tidings", ALL_SCENARIOS)
    for scenario in ALL_SCENARIOS.split(","):
        assert headline(document, scenario, "tidings") > 0, scenario
    assert headline(document, "S1", "tidings-signal") > 0
    s7 = next(r for r in document["results"] if r["scenario"] == "S7")
    assert s7["median"]["ack_no_agent_p99_ms"] > 0
    assert s7["median"]["token_gap_p50_ms"] > 0
    # S3 also times one SQLite commit, and a bare fdatasync: the floors under a durable send.
    assert headline(document, "S3", "sqlite-commit") > 0
    assert headline(document, "S3", "fdatasync") > 0
