"""Origin checks at the WebSocket upgrade: the allowed pass, everything else gets 403,
and refusing thousands costs no memory.

A browser always sends `Origin`, lower-case and without a path; a page on another site
that opens a WebSocket to the server is refused before any frame is read (cross-site
WebSocket hijacking). Clients that send no `Origin` are not browsers and pass.
"""

from __future__ import annotations

from pathlib import Path

from tests.security.attacks import RSS_BUDGET_MIB, ServerErrors, upgrade_status
from tests.security.memory import sampled_rss
from tests.server.harness import Server, metric, running_server

ALLOWED = "https://app.example"


def origin_cases(port: int) -> dict[str, tuple[str | None, int]]:
    """Name: (the Origin header or None for none, the expected status)."""
    here = f"127.0.0.1:{port}"
    return {
        "no Origin (not a browser)": (None, 101),
        "same origin": (f"http://{here}", 101),
        "same origin, https": (f"https://{here}", 101),
        "allow-listed": (ALLOWED, 101),
        "foreign": ("https://evil.example", 403),
        "null (sandboxed iframe, file://)": ("null", 403),
        "empty": ("", 403),
        "allow-listed with another scheme": ("http://app.example", 403),
        "allow-listed with another port": ("https://app.example:8443", 403),
        "allow-listed as a prefix": ("https://app.example.evil.example", 403),
        "allow-listed as a suffix": ("https://evilapp.example", 403),
        "allow-listed in the path": ("https://evil.example/https://app.example", 403),
        "allow-listed in userinfo": ("https://app.example@evil.example", 403),
        "upper-case foreign": ("HTTPS://EVIL.EXAMPLE", 403),
        "upper-case allow-listed (no browser sends it)": ("HTTPS://APP.EXAMPLE", 403),
        "the host as a prefix": (f"http://{here}.evil.example", 403),
        "the host in userinfo": (f"http://{here}@evil.example", 403),
        "the host in the path": (f"http://evil.example/{here}", 403),
        "another port of the host": ("http://127.0.0.1:1", 403),
        "wildcard text": ("*", 403),
    }


async def test_every_origin_gets_the_expected_verdict_at_the_upgrade(
    tmp_path: Path, server_errors: ServerErrors
) -> None:
    async with running_server(tmp_path, allowed_origins=(ALLOWED,)) as server:
        cases = origin_cases(server.port)
        seen = {}
        for name, (origin, _) in cases.items():
            headers = [] if origin is None else [("Origin", origin)]
            seen[name] = await upgrade_status(server, headers)
        assert seen == {name: status for name, (_, status) in cases.items()}
        refused = sum(1 for _, status in cases.values() if status == 403)
        assert await metric(server, "tidings_origin_refused_total") == refused
    assert not server_errors.lines()


async def test_with_no_allow_list_only_same_origin_and_no_origin_pass(server: Server) -> None:
    assert await upgrade_status(server, []) == 101
    assert await upgrade_status(server, [("Origin", f"http://127.0.0.1:{server.port}")]) == 101
    assert await upgrade_status(server, [("Origin", ALLOWED)]) == 403


async def test_thousands_of_refused_origins_leave_memory_bounded(server: Server) -> None:
    async with sampled_rss() as rss:
        for i in range(1000):
            assert await upgrade_status(server, [("Origin", f"https://evil{i}.example")]) == 403
    assert rss.growth_mib < RSS_BUDGET_MIB, rss.growth_mib
    assert await metric(server, "tidings_origin_refused_total") == 1000
