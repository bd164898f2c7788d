"""The access log and request metrics of the HTTP API, as one pure ASGI middleware.

Every HTTP request is timed into `tidings_http_request_duration_seconds{route, method,
status}` (the route *template*, so ids do not explode the label set) and logged on
`tidings.access` with its method, path, status and duration. The query string is never
logged: it may hold a token (`?token=` is how browsers authenticate SSE). WebSocket
upgrades do not pass here (they go to the lean WebSocket layer).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tidings.server.metrics import Metrics

log = logging.getLogger("tidings.access")


class AccessLog:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what the client gets if the app fails before answering

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            seconds = time.perf_counter() - start
            route = _route_of(scope)
            method = str(scope.get("method", "GET"))
            self.metrics.http_seconds.labels(route, method, str(status)).observe(seconds)
            log.info(
                "%s %s %d %.1f ms",
                method,
                scope.get("path", ""),
                status,
                seconds * 1000,
                extra={"route": route, "status": status, "duration_ms": round(seconds * 1000, 2)},
            )


def _route_of(scope: Scope) -> str:
    """The matched route's template (`/v1/sessions/{session_id}`), or `unmatched`."""
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "unmatched"
