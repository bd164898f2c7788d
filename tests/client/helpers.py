"""Helpers shared by the client tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from tests.server.harness import Server, make_token
from tidings.client import Client, connect


@contextlib.asynccontextmanager
async def client_for(
    server: Server,
    user: str,
    *,
    url: str | None = None,
    http_url: str | None = None,
    **options: Any,
) -> AsyncIterator[Client]:
    """An SDK client of `user`, to `url` (default: the server directly); HTTP goes
    straight to the server unless `http_url` says otherwise."""
    async with connect(
        url or server.ws_url,
        token=make_token(user),
        http_url=http_url or server.http_url,
        **options,
    ) as client:
        yield client


async def until(predicate: Callable[[], bool], *, timeout: float = 10, what: str = "") -> None:
    """Wait until `predicate()` holds (polled), or fail after `timeout` seconds."""
    try:
        async with asyncio.timeout(timeout):
            while True:
                if predicate():
                    return
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what or predicate}") from None
