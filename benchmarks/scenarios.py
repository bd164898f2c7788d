"""The seven scenarios of issue 3, as load-generator configurations.

Each scenario names its headline metric (the one ratios are taken on) and whether
higher is better. ``scale`` multiplies connection counts and ``duration`` overrides
the measuring time, so the smoke test can run every scenario in about a second.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    workload: str
    metric: str
    higher_is_better: bool
    params: dict[str, Any]
    duration: float
    quick_duration: float
    tidings_only: bool = False
    # Tidings publishes with these request kinds; each is a row of its own.
    tidings_kinds: tuple[str, ...] = ("send",)
    repeated: bool = False  # S1, S2, S3: run --reps times and report medians
    # S3: also measure one SQLite commit on its own at the scenario's total pace, and the
    # disk's bare fdatasync: the floors under a durable send's latency (rows
    # "sqlite-commit" and "fdatasync").
    commit_floor: bool = False
    counted: tuple[str, ...] = field(default=("subscribers",))

    def config(self, quick: bool, scale: float, duration: float | None) -> dict[str, Any]:
        params = dict(self.params)
        for key in self.counted:
            if key in params:
                params[key] = max(2 if key != "rooms" else 1, round(params[key] * scale))
        params["duration"] = duration or (self.quick_duration if quick else self.duration)
        return {"workload": self.workload, **params}

    def connections(self, config: dict[str, Any]) -> int:
        rooms = int(config.get("rooms", 1))
        return rooms * (int(config.get("subscribers", 0)) + 1) + int(config.get("senders", 0))

    def timeout(self, config: dict[str, Any]) -> float:
        """A hard bound on one run: connecting, measuring, draining, closing."""
        setup = 20 + self.connections(config) / 100
        return setup + float(config["duration"]) * 2 + float(config.get("grace", 5)) + 30


SCENARIOS: dict[str, Scenario] = {
    s.key: s
    for s in (
        Scenario(
            "S1",
            "1 room x 100 subscribers, publish as fast as a 64-message window allows",
            "throughput",
            "deliveries_per_s",
            True,
            {"subscribers": 100, "window": 64},
            10,
            1,
            tidings_kinds=("send", "signal"),
            repeated=True,
        ),
        Scenario(
            "S2",
            "1 room x 1,000 subscribers, 20 msg/s",
            "paced",
            "p99_ms",
            False,
            {"rooms": 1, "subscribers": 1000, "rate": 20, "grace": 5},
            10,
            3,
            tidings_kinds=("send", "signal"),
            repeated=True,
        ),
        Scenario(
            "S3",
            "100 rooms x 10 subscribers, 200 msg/s in all",
            "paced",
            "p99_ms",
            False,
            {"rooms": 100, "subscribers": 10, "rate": 2, "grace": 5},
            10,
            3,
            counted=("rooms", "subscribers"),
            tidings_kinds=("send", "signal"),
            repeated=True,
            commit_floor=True,
        ),
        Scenario(
            "S4",
            "5,000 idle connections: server memory per connection",
            "idle",
            "rss_per_conn_kib",
            False,
            {"subscribers": 5000},
            0,
            0,
        ),
        Scenario(
            "S5",
            "50 concurrent durable senders into one session",
            "acks",
            "acked_per_s",
            True,
            {"senders": 50},
            10,
            2,
            tidings_only=True,
            counted=("senders",),
        ),
        Scenario(
            "S6",
            "10,000 connections (10 rooms x 1,000), 20 msg/s in all",
            "paced",
            "p99_ms",
            False,
            {"rooms": 10, "subscribers": 1000, "rate": 2, "grace": 5},
            10,
            3,
            tidings_kinds=("send", "signal"),
        ),
        Scenario(
            "S7",
            "echo-agent session watched by 100 subscribers",
            "agent",
            "first_token_p99_ms",
            False,
            {"subscribers": 100, "words": 10},
            10,
            3,
            tidings_only=True,
        ),
    )
}
