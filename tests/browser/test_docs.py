"""`/docs` renders in Chromium with every request off this server blocked: no CDN."""

from __future__ import annotations

from playwright.async_api import Browser, Route, expect

from tests.browser.conftest import artifact
from tests.server.harness import ServerProcess


async def test_the_api_docs_render_with_the_network_blocked(
    served: ServerProcess, browser: Browser
) -> None:
    origin = served.server.http_url
    blocked: list[str] = []

    async def only_this_server(route: Route) -> None:
        if route.request.url.startswith(origin):
            await route.continue_()
        else:
            blocked.append(route.request.url)
            await route.abort()

    context = await browser.new_context()
    await context.route("**/*", only_this_server)
    page = await context.new_page()
    await page.goto(origin + "/docs")
    await expect(page.locator(".opblock").first).to_be_visible()
    assert await page.locator(".opblock").count() >= 10
    await expect(page.locator(".btn.authorize")).to_be_visible()
    await page.screenshot(path=artifact("api-docs.png"), full_page=True)
    assert blocked == []
