"""Issue 9 point 12 (same-origin needs an allowed host, not just a matching `Host`) and
point 9's handshake part (repeated Origin/Host/Authorization headers are refused)."""

from __future__ import annotations

from pathlib import Path

from tests.security.attacks import ServerErrors, upgrade_status
from tests.server.harness import running_server


async def test_a_rebound_host_name_is_not_same_origin(
    tmp_path: Path, server_errors: ServerErrors
) -> None:
    async with running_server(tmp_path) as server:
        rebound = f"evil.example:{server.port}"
        status = await upgrade_status(server, [("Host", rebound), ("Origin", f"http://{rebound}")])
        assert status == 403
        here = f"localhost:{server.port}"
        assert await upgrade_status(server, [("Host", here), ("Origin", f"http://{here}")]) == 101
    assert not server_errors.lines()


async def test_an_operator_allowed_host_is_same_origin(tmp_path: Path) -> None:
    async with running_server(tmp_path, allowed_hosts=("chat.example",)) as server:
        named = f"chat.example:{server.port}"
        assert await upgrade_status(server, [("Host", named), ("Origin", f"http://{named}")]) == 101
        here = f"127.0.0.1:{server.port}"
        # The allow-list replaces the defaults: loopback is no longer vouched for.
        assert await upgrade_status(server, [("Host", here), ("Origin", f"http://{here}")]) == 403


async def test_repeated_origin_or_authorization_headers_get_400_without_a_traceback(
    tmp_path: Path, server_errors: ServerErrors
) -> None:
    async with running_server(tmp_path) as server:
        here = f"http://127.0.0.1:{server.port}"
        twice_origin = [("Origin", here), ("Origin", "https://evil.example")]
        twice_auth = [("Authorization", "Bearer a"), ("Authorization", "Bearer b")]
        assert await upgrade_status(server, twice_origin) == 400
        assert await upgrade_status(server, twice_auth) == 400
        # The server still serves.
        assert await upgrade_status(server, []) == 101
    assert not server_errors.lines()
