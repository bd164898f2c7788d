"""The server side of the browser path: CORS from the origin allow-list, the UI and the
static client, dev-mode sign-in, and origin refusals that say why in the log."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.server.harness import make_token, running_server

APP = "http://app.example"


async def test_a_preflight_from_an_allowed_origin_is_answered_with_cors_headers(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path, allowed_origins=(APP,)) as server, server.http() as http:
        response = await http.options(
            "/v1/sessions",
            headers={
                "Origin": APP,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )

    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == APP
    assert "POST" in response.headers["access-control-allow-methods"]
    assert "authorization" in response.headers["access-control-allow-headers"].lower()


async def test_a_request_from_an_allowed_origin_may_read_the_answer(tmp_path: Path) -> None:
    async with running_server(tmp_path, allowed_origins=(APP,)) as server, server.http() as http:
        response = await http.get(
            "/v1/sessions",
            headers={"Origin": APP, "Authorization": f"Bearer {make_token('alice')}"},
        )

    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == APP


async def test_another_origin_gets_no_cors_headers(tmp_path: Path) -> None:
    async with running_server(tmp_path, allowed_origins=(APP,)) as server, server.http() as http:
        preflight = await http.options(
            "/v1/sessions",
            headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
        )
        plain = await http.get("/healthz", headers={"Origin": "http://evil.example"})

    assert "access-control-allow-origin" not in preflight.headers
    assert preflight.status_code == 400
    assert "access-control-allow-origin" not in plain.headers


async def test_without_an_allow_list_no_cors_headers_are_sent(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server, server.http() as http:
        response = await http.get("/healthz", headers={"Origin": APP})

    assert "access-control-allow-origin" not in response.headers


async def test_the_root_serves_the_chat_ui_and_static_serves_the_client(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server, server.http() as http:
        page = await http.get("/")
        script = await http.get("/static/tidings.js")
        worker = await http.get("/sw.js")

    assert page.status_code == 200
    assert "<title>Tidings</title>" in page.text
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert "export" in script.text
    assert worker.headers["service-worker-allowed"] == "/"


async def test_dev_sign_in_is_off_unless_the_server_is_started_in_dev_mode(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path) as server, server.http() as http:
        mode = (await http.get("/v1/dev")).json()
        response = await http.post("/v1/dev/token", json={"name": "mallory"})

    assert mode == {"dev": False}
    assert response.status_code == 404
    assert "token" not in response.text


async def test_dev_mode_mints_a_token_the_server_accepts(tmp_path: Path) -> None:
    async with running_server(tmp_path, dev=True) as server, server.http() as http:
        minted = (await http.post("/v1/dev/token", json={"name": "ada"})).json()
        refused = await http.post("/v1/dev/token", json={"name": "../../etc"})
        sessions = await http.get(
            "/v1/sessions", headers={"Authorization": f"Bearer {minted['token']}"}
        )

    assert minted["user"] == "ada"
    assert refused.status_code == 400
    assert sessions.status_code == 200


async def test_a_refused_origin_is_logged_with_the_origin_and_the_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tidings.ws")
    async with running_server(tmp_path) as server:
        with pytest.raises(InvalidStatus):
            async with connect(server.ws_url, origin="http://evil.example"):  # type: ignore[arg-type]
                pass
    lines = [r.getMessage() for r in caplog.records if r.name == "tidings.ws"]
    assert any("http://evil.example" in line and "ALLOWED_ORIGINS" in line for line in lines)
