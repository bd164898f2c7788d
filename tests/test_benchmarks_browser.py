"""Smoke test of the browser benchmark: it runs in Chromium and yields both rows with their
baselines. It asserts nothing about speed (the machine is shared and noisy)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.browser.conftest import CHROMIUM

REPO = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.slow, pytest.mark.browser]


def test_the_browser_benchmark_yields_both_rows_against_their_baselines(tmp_path: Path) -> None:
    if not os.access(CHROMIUM, os.X_OK):
        reason = f"Chromium is not installed at {CHROMIUM}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    command = [
        sys.executable,
        "-m",
        "benchmarks.browser",
        "--quick",
        "--events",
        "500",
        "--words",
        "50",
        "--out",
        str(tmp_path),
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, timeout=240, check=False)
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    [written] = tmp_path.glob("*-browser.json")
    rows = json.loads(written.read_text())["rows"]
    assert [row["row"] for row in rows] == [
        "replica apply (events/s)",
        "50-word streamed reply (ms)",
    ]
    for row in rows:
        assert row["ratio"] > 0
