"""The HTTP API of PROTOCOL.md, as the SDK uses it: fallback sends and receives, gap
fetches and message refetches."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx

from tidings.client.errors import TidingsError
from tidings.client.sse_parser import SseParser
from tidings.protocol.client_frames import Frame

TokenSource = Callable[[bool], Awaitable[str]]


class HttpApi:
    """`token(fresh)` gives the bearer token; with `fresh=True` after a 401, a new one."""

    def __init__(self, base_url: str, token: TokenSource, *, timeout_s: float = 10.0) -> None:
        self._token = token
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout_s)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(
        self, method: str, path: str, *, timeout: float | None = None, **kwargs: Any
    ) -> Any:
        fresh = False
        while True:
            headers = {"Authorization": f"Bearer {await self._token(fresh)}"}
            extra: dict[str, Any] = {}
            if timeout is not None:
                extra["timeout"] = timeout
            response = await self._http.request(method, path, headers=headers, **kwargs, **extra)
            if response.status_code == 401 and not fresh:
                fresh = True
                continue
            return _body(response)

    async def health(self) -> None:
        """Raise unless the server answers `GET /healthz` (no token needed)."""
        response = await self._http.get("/healthz")
        _body(response)

    async def create_session(self, title: str, agent: str | None) -> dict[str, Any]:
        """A new session, the caller its owner: its info (`id`, `title`, …)."""
        body: dict[str, Any] = {"title": title}
        if agent is not None:
            body["agent"] = agent
        return dict(await self._request("POST", "/v1/sessions", json=body))

    async def add_member(self, session_id: str, user: str, role: str) -> int:
        """Add (or change the role of) a member; the seq of the `member.added` event."""
        body = await self._request(
            "POST", f"/v1/sessions/{session_id}/members", json={"user": user, "role": role}
        )
        return int(body["seq"])

    async def remove_member(self, session_id: str, user: str) -> int:
        """Remove a member; the seq of the `member.removed` event."""
        body = await self._request("DELETE", f"/v1/sessions/{session_id}/members/{user}")
        return int(body["seq"])

    async def messages(self, session_id: str, *, before: int, limit: int) -> list[dict[str, Any]]:
        """Up to `limit` messages older than `before` (a seq), newest first."""
        body = await self._request(
            "GET",
            f"/v1/sessions/{session_id}/messages",
            params={"before": before, "limit": limit},
        )
        return list(body["messages"])

    async def session(self, session_id: str) -> tuple[int, dict[str, Any]]:
        """(seq, snapshot) of a session."""
        body = await self._request("GET", f"/v1/sessions/{session_id}")
        return int(body["seq"]), dict(body["snapshot"])

    async def events(
        self, session_id: str, *, after: int, limit: int = 1000, wait_s: float = 0
    ) -> tuple[list[Frame], int]:
        params: dict[str, Any] = {"after": after, "limit": limit}
        if wait_s:
            params["wait"] = wait_s
        body = await self._request(
            "GET",
            f"/v1/sessions/{session_id}/events",
            params=params,
            timeout=wait_s + 10 if wait_s else None,
        )
        return list(body["events"]), int(body["seq"])

    async def send(
        self, session_id: str, client_id: str, kind: str, data: dict[str, Any]
    ) -> dict[str, Any]:
        body = await self._request(
            "POST",
            f"/v1/sessions/{session_id}/events",
            json={"client_id": client_id, "kind": kind, "data": data},
        )
        return dict(body)

    async def message(self, session_id: str, message_id: str) -> dict[str, Any]:
        return dict(await self._request("GET", f"/v1/sessions/{session_id}/messages/{message_id}"))

    async def sse(self, session_id: str, *, after: int) -> AsyncIterator[Frame]:
        """The session's frames over Server-Sent Events, from `after` on."""
        headers = {
            "Authorization": f"Bearer {await self._token(False)}",
            "Last-Event-ID": str(after),
            "Accept": "text/event-stream",
        }
        timeout = httpx.Timeout(10.0, read=None)
        async with self._http.stream(
            "GET", f"/v1/sessions/{session_id}/sse", headers=headers, timeout=timeout
        ) as response:
            if response.status_code != 200:
                await response.aread()
                _body(response)
            parser = SseParser()
            async for line in response.aiter_lines():
                event = parser.feed(line)
                if event is None:
                    continue
                value = json.loads(event.data)
                if isinstance(value, dict):
                    yield value


def _body(response: httpx.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.is_success:
        return body
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        raise TidingsError.from_frame(error)
    raise TidingsError("internal", f"HTTP {response.status_code}")
