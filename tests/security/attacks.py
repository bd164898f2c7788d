"""Shared pieces of the attack suite: forged tokens, the ways a token reaches the server,
and the refusal each of them must get.

A token reaches the server five ways: the WebSocket `connect` frame, the upgrade's
`Authorization` header, the upgrade's `?token=` query, the HTTP API's `Authorization`
header and the SSE route's `?token=`. `refusal` tries one token one way and says how the
server refused it, so every token attack is checked on every path by one loop.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import os
import threading
import time
from collections.abc import Coroutine, Iterator
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.server.harness import Client, Server, running_server

#: What an attack may cost the server's resident memory. The attacks are small; a hole
#: (an unbounded queue, a body read in full) shows as tens or hundreds of MiB.
RSS_BUDGET_MIB = 24.0


#: Attacks that still get in, each fixed by another lane of issue 9: the ONE place that
#: marks them as expected failures (not strict: a fix lands without breaking the suite;
#: then delete its line here).
KNOWN_HOLES: dict[str, str] = {
    # An entry reads: "case name": "issue N point P (lane): what must hold".
}


def known_hole(name: str) -> list[pytest.MarkDecorator]:
    """The marks of a test case named `name`: an expected failure while it is a known
    hole, none otherwise."""
    reason = KNOWN_HOLES.get(name)
    return [pytest.mark.xfail(reason=reason, strict=False)] if reason else []


T = TypeVar("T")


class Path_(StrEnum):
    """The ways a token reaches the server."""

    FRAME = "connect frame"
    HEADER = "upgrade Authorization header"
    QUERY = "upgrade ?token= query"
    HTTP = "HTTP Authorization header"
    SSE = "SSE ?token= query"


TOKEN_PATHS = tuple(Path_)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_token(claims: dict[str, Any], header: dict[str, Any] | None = None) -> str:
    """A token with `alg: none` and an empty signature (RFC 7519 §6)."""
    head = header or {"alg": "none", "typ": "JWT"}
    return f"{b64url(json.dumps(head).encode())}.{b64url(json.dumps(claims).encode())}."


def hmac_token(
    claims: dict[str, Any], secret: bytes, *, header: dict[str, Any] | None = None
) -> str:
    """An HS256 token made by hand, so any bytes can be the key (PyJWT refuses a PEM
    public key as an HMAC secret): the algorithm-confusion attack's token."""
    head = header or {"alg": "HS256", "typ": "JWT"}
    signing = f"{b64url(json.dumps(head).encode())}.{b64url(json.dumps(claims).encode())}"
    signature = hmac.new(secret, signing.encode(), hashlib.sha256).digest()
    return f"{signing}.{b64url(signature)}"


def claims(user: str = "mallory", *, ttl_s: int = 3600, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": user, "iat": now, "exp": now + ttl_s, **extra}


async def refusal(server: Server, token: str, path: Path_, session_id: str = "s_none") -> str:
    """Try `token` by `path`; the refusal seen, as a short string for the assertion.

    `"4001"`: `unauthorized` then close 4001 (WebSocket); `"401"`: HTTP 401 with the
    `unauthorized` body; `"close <code>"` or `"http <status>"` for any other refusal
    (a frame or header over its limit); `"accepted"` when the token got in.
    """
    if path is Path_.HTTP or path is Path_.SSE:
        async with httpx.AsyncClient(base_url=server.http_url, timeout=10) as http:
            if path is Path_.HTTP:
                response = await http.get(
                    "/v1/sessions", headers={"Authorization": f"Bearer {token}"}
                )
                status = response.status_code
                if status == 401:
                    assert response.json()["error"]["code"] == "unauthorized"
            else:
                # By hand: httpx refuses URLs over 64 KiB, and an accepted stream never
                # ends, so only the status line is read.
                try:
                    status = await raw_status(
                        server, f"/v1/sessions/{session_id}/sse?token={quote(token)}"
                    )
                except ConnectionError:
                    # Refused from the request line's first bytes, the rest reset.
                    return "http reset"
        if status == 401:
            return "401"
        return "accepted" if status < 400 else f"http {status}"
    try:
        if path is Path_.FRAME:
            client = await server.client()
        elif path is Path_.HEADER:
            client = await Client.open(
                server.ws_url, additional_headers={"Authorization": f"Bearer {token}"}
            )
        else:
            client = await server.client_at(f"?token={quote(token)}")
    except InvalidStatus as exc:
        return f"http {exc.response.status_code}"
    frame: dict[str, Any] = {"type": "connect"}
    if path is Path_.FRAME:
        frame["token"] = token
    request = asyncio.ensure_future(client.request(frame))
    # Whichever comes first: the reply, or a close without one (a frame over the limit).
    closed: asyncio.Future[Any] = client.closed
    await asyncio.wait([request, closed], return_when=asyncio.FIRST_COMPLETED)
    if not request.done() or isinstance(request.exception(), ConnectionClosed):
        # Closed before a reply, even while the frame was still being written (the
        # server refuses an oversized frame from its header and may reset the rest).
        request.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
            await request
        code, _ = await client.wait_closed()
        return f"close {code}"
    reply = request.result()
    if reply["type"] == "connected":
        await client.close()
        return "accepted"
    assert (reply["type"], reply["code"]) == ("error", "unauthorized"), reply
    code, _ = await client.wait_closed()
    return "4001" if code == 4001 else f"close {code}"


async def raw_status(server: Server, target: str, headers: dict[str, str] | None = None) -> int:
    """The status of `GET target` sent over a bare socket (no client-side URL limits);
    only the status line is read, then the socket is closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        head = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        writer.write(head.encode("latin-1") + b"Connection: close\r\n\r\n")
        await writer.drain()
        async with asyncio.timeout(10):
            line = await reader.readline()
        parts = line.split()
        if len(parts) < 2:
            raise ConnectionError(f"no status line: {line!r}")
        return int(parts[1])
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def upgrade_status(server: Server, headers: list[tuple[str, str]]) -> int:
    """The status of a WebSocket upgrade of `/v1/ws` sent by hand with `headers` added
    (a list, so a header may be repeated or `Host` replaced); 101 when accepted."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        names = {name.lower() for name, _ in headers}
        lines = ["GET /v1/ws HTTP/1.1"]
        if "host" not in names:
            lines.append(f"Host: 127.0.0.1:{server.port}")
        lines += [
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}",
            "Sec-WebSocket-Version: 13",
        ]
        lines += [f"{name}: {value}" for name, value in headers]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        await writer.drain()
        async with asyncio.timeout(10):
            line = await reader.readline()
        parts = line.split()
        if len(parts) < 2:
            raise ConnectionError(f"no status line: {line!r}")
        return int(parts[1])
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


#: The refusal each path gives a bad token.
REFUSED = {
    Path_.FRAME: "4001",
    Path_.HEADER: "4001",
    Path_.QUERY: "4001",
    Path_.HTTP: "401",
    Path_.SSE: "401",
}


class ServerErrors:
    """Records logged at ERROR or above by the server while a test runs (in-process
    servers log into the test's own logging tree)."""

    def __init__(self) -> None:
        self.records: list[logging.LogRecord] = []

    def lines(self) -> list[str]:
        out = []
        for record in self.records:
            text = f"{record.name}: {record.getMessage()}"
            if record.exc_info and record.exc_info[1] is not None:
                text += f" ({type(record.exc_info[1]).__name__}: {record.exc_info[1]})"
            out.append(text)
        return out


class _Collector(logging.Handler):
    def __init__(self, sink: ServerErrors) -> None:
        super().__init__(logging.ERROR)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.records.append(record)


@pytest.fixture
def server_errors() -> Iterator[ServerErrors]:
    """Every error the server logs during the test; assert `not server_errors.lines()`."""
    sink = ServerErrors()
    handler = _Collector(sink)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield sink
    finally:
        root.removeHandler(handler)


class ThreadedServer:
    """A `running_server` in a background thread's event loop; `run` runs a coroutine
    there and waits for its result."""

    def __init__(self, tmp_path: Path, **overrides: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self._stack = contextlib.AsyncExitStack()
        self.server: Server = self.run(
            self._stack.enter_async_context(running_server(tmp_path, **overrides))
        )
        self.session = self.run(self.server.create_session("fuzzer"))
        self.run(self.server.add_member("fuzzer", self.session, "viewer", "viewer"))

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.run(self._stack.aclose())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def threaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedServer]:
    server = ThreadedServer(tmp_path_factory.mktemp("fuzz-live"))
    try:
        yield server
    finally:
        server.close()
