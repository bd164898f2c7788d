"""The benchmark report's ratios: to the FastAPI baseline and to the best peer."""

from __future__ import annotations

from benchmarks.report import best_peer_ratios, document
from benchmarks.runner import Row


def row(scenario: str, target: str, metric: str, higher: bool, *values: float) -> Row:
    return Row(scenario, target, metric, higher, [{metric: v} for v in values])


def test_the_best_peer_for_latency_is_the_one_with_the_lowest_median() -> None:
    rows = [
        row("S3", "websockets", "p99_ms", False, 0.9, 1.0, 5.0),
        row("S3", "aiohttp", "p99_ms", False, 1.2),
        row("S3", "tidings", "p99_ms", False, 1.5),
        row("S3", "sqlite-commit", "p99_ms", False, 1.8),
    ]
    ratios = best_peer_ratios(rows)
    assert ratios["S3", "tidings"] == ("websockets", 1.5 / 1.0)
    assert ratios["S3", "sqlite-commit"] == ("websockets", 1.8)
    assert ("S3", "websockets") not in ratios


def test_the_best_peer_for_throughput_is_the_one_with_the_highest_median() -> None:
    rows = [
        row("S1", "fastapi", "deliveries_per_s", True, 50_000),
        row("S1", "aiohttp", "deliveries_per_s", True, 80_000),
        row("S1", "tidings", "deliveries_per_s", True, 400_000),
    ]
    assert best_peer_ratios(rows)["S1", "tidings"] == ("aiohttp", 5.0)


def test_a_scenario_without_peers_has_no_best_peer_ratio() -> None:
    rows = [row("S5", "tidings", "acked_per_s", True, 7000)]
    [entry] = document(rows, {})["results"]
    assert entry["ratio_to_best_peer"] is None


def test_the_json_names_the_best_peer_and_the_ratio() -> None:
    rows = [
        row("S2", "websockets", "p99_ms", False, 20.0),
        row("S2", "tidings", "p99_ms", False, 22.0),
    ]
    entries = {e["server"]: e for e in document(rows, {})["results"]}
    assert entries["tidings"]["ratio_to_best_peer"] == {"peer": "websockets", "ratio": 1.1}
    assert entries["websockets"]["ratio_to_best_peer"] is None


def test_profile_samples_go_to_the_innermost_matching_category() -> None:
    from benchmarks.pyspy_shares import LOOP, shares

    main = "thread (1): MainThread;Runner.run (asyncio/runners.py:118)"
    lines = [
        f"{main};Node._sent (node.py:1);Channel._deliver (tidings/server/hub.py:2) 3",
        f"{main};Flusher._flush (tidings/server/websocket.py:3);WebSocket.flush (x:4) 5",
        f"{main};WebSocket.data_received (tidings/server/websocket.py:5) 2",
        f"{main} 1",
        "thread (2): tidings-sqlite-writer_0;SqliteStore._commit_batch (sqlite.py:9) 4",
        "thread (2): tidings-sqlite-writer_0;_worker (concurrent/futures/thread.py:81) 7",
    ]
    by_category, writer = shares(lines)
    assert by_category["hub fan-out: ordering, folding, queue appends"] == 3
    assert by_category["writing frames to sockets (Flusher, transport.write)"] == 5
    assert by_category["reading and parsing client frames"] == 2
    assert by_category[LOOP] == 1
    assert writer == 4  # the idle wait on the work queue is not counted
