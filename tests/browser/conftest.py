"""Chromium (Debian's, driven by Playwright) against a real `tidings serve` process.

Never `playwright install`: the browser is /usr/bin/chromium. Without it the tests skip,
except under CI=true, where they fail. Screenshots go to `artifacts/` at the repository
root (`TIDINGS_ARTIFACTS` to put them elsewhere).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from tests.server.harness import Server, ServerProcess

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = Path(os.environ.get("TIDINGS_ARTIFACTS", Path(__file__).parents[2] / "artifacts"))

pytestmark = pytest.mark.browser


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        reason = f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[ServerProcess]:
    """`tidings serve --dev` with the echo agent, in a child process (so it can restart)."""
    process = ServerProcess(
        tmp_path, TIDINGS_DEV="1", TIDINGS_AGENT="echo", TIDINGS_ECHO_DELAY_MS="15"
    )
    await process.start()
    try:
        yield process
    finally:
        await process.stop()


SignIn = Callable[..., Awaitable[tuple[BrowserContext, Page]]]


@pytest.fixture
def sign_in(browser: Browser) -> SignIn:
    """A fresh browser context signed in to the UI under `name` (dev mode)."""

    async def open_page(
        server: Server, name: str, *, path: str = "/", **context_options: Any
    ) -> tuple[BrowserContext, Page]:
        context = await browser.new_context(**context_options)
        page = await context.new_page()
        page.on("pageerror", lambda error: print(f"[{name}] page error: {error}"))
        await page.goto(server.http_url + path)
        await page.wait_for_selector("body[data-ready=true]")
        await page.fill("#dev-name", name)
        await page.click("#dev-form button[type=submit]")
        await page.wait_for_selector("#badge[data-state=connected]")
        return context, page

    return open_page


def artifact(name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / name
