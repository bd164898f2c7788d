"""`/metrics` follows the Prometheus conventions and carries the series operators need."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from tests.server.harness import Server, message, running_server

SNAKE = re.compile(r"^[a-z][a-z0-9_]*$")
UNITS = ("seconds", "bytes")
STANDARD_PREFIXES = ("process_", "python_")


async def scrape(server: Server) -> dict[str, Metric]:
    async with server.http() as http:
        text = (await http.get("/metrics")).text
    return {family.name: family for family in text_string_to_metric_families(text)}


async def exercised(tmp_path: Path) -> dict[str, Metric]:
    """Scrape a server that answered HTTP, ran an echo reply and saw a connection close."""
    async with running_server(tmp_path, agent="echo", echo_delay_ms=1) as server:
        session = await server.create_session("alice", agent="echo")
        client = await server.client("alice")
        await client.subscribe(session)
        await client.request(message("hello", session=session))
        await client.next(lambda f: f.get("kind") == "message.completed")
        await client.close()
        for _ in range(100):  # the close is counted when the socket is gone
            families = await scrape(server)
            closes = families.get("tidings_websocket_closes")
            if closes is not None and closes.samples:
                return families
            await asyncio.sleep(0.02)
        return families


async def test_every_series_follows_the_naming_conventions(tmp_path: Path) -> None:
    families = await exercised(tmp_path)
    for name, family in families.items():
        assert SNAKE.match(name), name
        assert name.startswith(("tidings_", *STANDARD_PREFIXES)), name
        assert family.documentation, f"{name} has no HELP"
        if not name.startswith("tidings_"):
            continue
        words = name.split("_")
        for unit in UNITS:
            # A unit is the last word of the name (before _total, _bucket, …): sent_bytes.
            if unit in words[:-1]:
                pytest.fail(f"{name}: the unit {unit!r} must come last")
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples), name
        if family.type == "gauge":
            assert not name.endswith("_total"), name


async def test_the_series_operators_need_are_there(tmp_path: Path) -> None:
    families = await exercised(tmp_path)
    expected = {
        "tidings_http_request_duration_seconds": "histogram",
        "tidings_agent_first_token_seconds": "histogram",
        "tidings_agent_replies": "counter",
        "tidings_agent_queue_depth": "gauge",
        "tidings_store_commit_duration_seconds": "histogram",
        "tidings_store_commit_batch_events": "histogram",
        "tidings_websocket_closes": "counter",
        "tidings_sent_bytes": "counter",
        "process_resident_memory_bytes": "gauge",
        "python_gc_collections": "counter",
    }
    for name, kind in expected.items():
        assert name in families, f"{name} is missing"
        assert families[name].type == kind, name
    assert "tidings_bytes_sent" not in families  # renamed: nothing left under the old name


async def test_store_commits_are_timed_and_their_batch_sizes_counted(tmp_path: Path) -> None:
    families = await exercised(tmp_path)
    for name in ("tidings_store_commit_duration_seconds", "tidings_store_commit_batch_events"):
        [count] = [s.value for s in families[name].samples if s.name.endswith("_count")]
        assert count >= 5, name  # the session, the message, the reply's four events


async def test_http_requests_are_timed_by_route_template_not_by_path(tmp_path: Path) -> None:
    families = await exercised(tmp_path)
    routes = {s.labels["route"] for s in families["tidings_http_request_duration_seconds"].samples}
    assert "/v1/sessions" in routes
    assert not any("s_" in route for route in routes), routes


async def test_a_reply_is_counted_with_its_outcome_and_first_token_time(tmp_path: Path) -> None:
    families = await exercised(tmp_path)
    replies = {
        (s.labels["agent"], s.labels["outcome"]): s.value
        for s in families["tidings_agent_replies"].samples
        if s.name.endswith("_total")
    }
    assert replies == {("echo", "completed"): 1.0}
    counts = [
        s.value
        for s in families["tidings_agent_first_token_seconds"].samples
        if s.name.endswith("_count")
    ]
    assert counts == [1.0]


async def test_a_closed_connection_is_counted_by_its_close_code(tmp_path: Path) -> None:
    families = await exercised(tmp_path)
    codes = {
        s.labels["code"]: s.value
        for s in families["tidings_websocket_closes"].samples
        if s.name.endswith("_total")
    }
    assert codes.get("1000") == 1.0


async def test_the_access_log_names_method_path_status_and_duration_without_the_query(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tidings.access")
    async with running_server(tmp_path) as server, server.http("alice") as http:
        await http.get("/v1/sessions", params={"token": "s3cret-in-the-query"})
    lines = [r.getMessage() for r in caplog.records if r.name == "tidings.access"]
    assert any(re.match(r"^GET /v1/sessions 200 [0-9.]+ ms$", line) for line in lines), lines
    assert not any("s3cret" in line for line in lines)
