"""Issue 9 point 15 (part): `/metrics` can be protected by a bearer token."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.server.harness import running_server

METRICS_TOKEN = "m-3f9c2a7d41b8e6"


async def test_metrics_need_the_metrics_token_when_one_is_set(tmp_path: Path) -> None:
    async with (
        running_server(tmp_path, metrics_token=METRICS_TOKEN) as server,
        httpx.AsyncClient(base_url=server.http_url) as http,
    ):
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": f"Basic {METRICS_TOKEN}"},
            {"Authorization": f"Bearer {METRICS_TOKEN}x"},
        ):
            refused = await http.get("/metrics", headers=headers)
            assert refused.status_code == 401, headers
            assert refused.json()["error"]["code"] == "unauthorized"
        ok = await http.get("/metrics", headers={"Authorization": f"bearer {METRICS_TOKEN}"})
        assert ok.status_code == 200
        assert "tidings_" in ok.text


async def test_metrics_stay_public_when_no_token_is_set(tmp_path: Path) -> None:
    async with (
        running_server(tmp_path) as server,
        httpx.AsyncClient(base_url=server.http_url) as http,
    ):
        assert (await http.get("/metrics")).status_code == 200
