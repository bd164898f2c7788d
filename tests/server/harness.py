"""A real Tidings server on a loopback port, and a small protocol client for tests.

`running_server` runs the server in the test's event loop (uvicorn on port 0, a real
SQLite file); `ServerProcess` runs `tidings serve` as a child process, for the tests that
signal or kill it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from websockets.asyncio.client import ClientConnection, connect

from tidings.backends.base import EventStore
from tidings.core.auth import issue
from tidings.server.app import create_app, uvicorn_config
from tidings.server.config import Config
from tidings.server.node import Node

SECRET = "test-secret-please-ignore-0123456789"

Frame = dict[str, Any]


def send_frame(session: str | None, kind: str, data: Any, client_id: str | None = None) -> Frame:
    """A `send` frame (a fresh client id unless one is given; no session: none named)."""
    frame: Frame = {
        "type": "send",
        "kind": kind,
        "client_id": client_id or uuid.uuid4().hex,
        "data": data,
    }
    if session is not None:
        frame["session"] = session
    return frame


def message(content: str, client_id: str | None = None, *, session: str | None = None) -> Frame:
    """A `send` frame of a user message (a fresh client id unless one is given)."""
    return send_frame(session, "message", {"content": content}, client_id)


def make_token(user: str, *, ttl_s: int = 3600, secret: str = SECRET) -> str:
    return issue(user, secret=secret, ttl_s=ttl_s, now_s=int(time.time()))


@dataclasses.dataclass
class Server:
    config: Config
    node: Node | None
    port: int

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    def http(self, user: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {make_token(user)}"} if user else {}
        return httpx.AsyncClient(base_url=self.http_url, headers=headers, timeout=10)

    async def create_session(self, owner: str, *, agent: str = "none", title: str = "t") -> str:
        async with self.http(owner) as client:
            response = await client.post("/v1/sessions", json={"title": title, "agent": agent})
            response.raise_for_status()
            session_id: str = response.json()["id"]
            return session_id

    async def add_member(self, owner: str, session_id: str, user: str, role: str) -> None:
        async with self.http(owner) as client:
            response = await client.post(
                f"/v1/sessions/{session_id}/members", json={"user": user, "role": role}
            )
            response.raise_for_status()

    async def client_at(self, suffix: str, **kwargs: Any) -> Client:
        """A client whose upgrade URL is `/v1/ws` + `suffix` (a query string)."""
        return await Client.open(self.ws_url + suffix, **kwargs)

    async def client(self, user: str | None = None, **kwargs: Any) -> Client:
        """A connected (and, with `user`, authenticated) protocol client."""
        client = await Client.open(self.ws_url, **kwargs)
        if user is not None:
            reply = await client.request({"type": "connect", "token": make_token(user)})
            assert reply["type"] == "connected", reply
        return client


def server_config(tmp_path: Path, **overrides: Any) -> Config:
    values: dict[str, Any] = {
        "port": 0,
        "database_url": f"sqlite:///{tmp_path / 'tidings.db'}",
        "jwt_secret": SECRET,
        "agent": "none",
        "echo_delay_ms": 5,
    }
    values.update(overrides)
    return Config(**values)


@contextlib.asynccontextmanager
async def running_server(
    tmp_path: Path,
    *,
    store: EventStore | None = None,
    node: Node | None = None,
    **overrides: Any,
) -> AsyncIterator[Server]:
    """A server in this event loop; `store` or a whole `node` replace the defaults."""
    config = node.config if node is not None else server_config(tmp_path, **overrides)
    if node is None and store is not None:
        node = Node(config, store=store)
    app = create_app(config, node)
    server = uvicorn.Server(uvicorn_config(config, app))
    server.config.loop = "none"
    task = asyncio.get_running_loop().create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("the server stopped while starting")
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield Server(config=config, node=app.state.node, port=port)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=20)


class Client:
    """A protocol v1 client over a real WebSocket: requests matched by `re`, batches split."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.inbox: asyncio.Queue[Frame] = asyncio.Queue()
        self._waiting: dict[Any, asyncio.Future[Frame]] = {}
        self.closed: asyncio.Future[tuple[int | None, str]] = (
            asyncio.get_running_loop().create_future()
        )
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def open(cls, url: str, **kwargs: Any) -> Client:
        ws = await connect(url, max_size=2**24, **kwargs)
        return cls(ws)

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                value = json.loads(raw)
                for frame in value if isinstance(value, list) else [value]:
                    waiter = self._waiting.get(frame.get("re"))
                    if waiter is not None and not waiter.done():
                        waiter.set_result(frame)
                    else:
                        self.inbox.put_nowait(frame)
        except Exception:
            pass
        finally:
            if not self.closed.done():
                self.closed.set_result((self.ws.close_code, self.ws.close_reason or ""))

    async def send(self, frame: Frame | str) -> None:
        await self.ws.send(frame if isinstance(frame, str) else json.dumps(frame))

    async def request(self, frame: Frame, *, timeout: float = 5) -> Frame:
        """Send `frame` with a fresh id and return the reply carrying that id as `re`.

        Other frames stay in `inbox`, in order, for `next`."""
        request_id = next(self.ids)
        reply: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = reply
        try:
            await self.send({**frame, "id": request_id})
            return await asyncio.wait_for(reply, timeout)
        finally:
            self._waiting.pop(request_id, None)

    async def next(
        self, predicate: Callable[[Frame], bool] = lambda f: True, *, timeout: float = 5
    ) -> Frame:
        """The next frame matching `predicate`; frames before it are dropped."""
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.inbox.get()
                if predicate(frame):
                    return frame

    async def events(self, session: str, count: int, *, timeout: float = 10) -> list[Frame]:
        """The next `count` event frames of `session`."""
        out: list[Frame] = []
        while len(out) < count:
            out.append(
                await self.next(
                    lambda f: f.get("type") == "event" and f.get("session") == session,
                    timeout=timeout,
                )
            )
        return out

    async def subscribe(self, session: str, after: int | None = None) -> Frame:
        frame: Frame = {"type": "subscribe", "session": session}
        if after is not None:
            frame["after"] = after
        reply = await self.request(frame)
        assert reply["type"] == "subscribed", reply
        return reply

    async def wait_closed(self, timeout: float = 10) -> tuple[int | None, str]:
        return await asyncio.wait_for(asyncio.shield(self.closed), timeout)

    async def close(self) -> None:
        await self.ws.close()
        await asyncio.wait_for(self._reader, 5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ServerProcess:
    """`tidings serve` in a child process (for SIGTERM and SIGKILL tests)."""

    def __init__(self, tmp_path: Path, **env: str) -> None:
        self.tmp_path = tmp_path
        self.port = free_port()
        self.env = {
            **os.environ,
            "TIDINGS_JWT_SECRET": SECRET,
            "TIDINGS_DATABASE_URL": f"sqlite:///{tmp_path / 'tidings.db'}",
            "TIDINGS_AGENT": "none",
            "TIDINGS_PORT": str(self.port),
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.server = Server(config=server_config(tmp_path), node=None, port=self.port)

    async def start(self) -> Server:
        # The child keeps its own copy of the log file's descriptor; ours closes at once.
        with open(self.tmp_path / "server.log", "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tidings.cli", "serve"],
                env=self.env,
                cwd=self.tmp_path,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        deadline = time.monotonic() + 20
        async with httpx.AsyncClient() as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited: {self.log()}")
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get(f"{self.server.http_url}/readyz")).status_code == 200:
                        return self.server
                await asyncio.sleep(0.05)
        raise RuntimeError("server did not start")

    def kill(self) -> None:
        """SIGKILL, at once: no shutdown code runs in the child."""
        self.signal(signal.SIGKILL)

    def log(self) -> str:
        return (self.tmp_path / "server.log").read_text(errors="replace")

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait(self, timeout: float = 20) -> int:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                self.proc.kill()
                raise TimeoutError("server did not exit")
            await asyncio.sleep(0.05)
        return self.proc.returncode

    async def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            await self.wait()


# Imports of the helpers below (appended, so kept here rather than at the top).
from websockets.client import ClientProtocol  # noqa: E402
from websockets.frames import Close, Opcode  # noqa: E402
from websockets.frames import Frame as WsFrame  # noqa: E402
from websockets.protocol import State  # noqa: E402
from websockets.uri import parse_uri  # noqa: E402


class RawClient:
    """A WebSocket client over a bare socket, driven by hand (websockets' sans-I/O protocol).

    Unlike `Client`, it writes only what a test sends: it never answers pings on its own
    (`silent` heartbeat tests), and it reads only when asked, so a test can make it a
    stalled reader. `rcvbuf` shrinks the socket's kernel receive buffer, so the server's
    writes back up after a few kilobytes instead of megabytes.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        protocol: ClientProtocol,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.protocol = protocol
        self.ids = itertools.count(1)
        self.pings = 0
        self._events: list[WsFrame] = []

    @classmethod
    async def open(cls, url: str, *, rcvbuf: int | None = None) -> RawClient:
        uri = parse_uri(url)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if rcvbuf is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, (uri.host, uri.port))
        except BaseException:
            sock.close()
            raise
        # A small stream limit: the reader stops pulling from the kernel after 2 KiB.
        reader, writer = await asyncio.open_connection(sock=sock, limit=1024)
        protocol = ClientProtocol(uri, max_size=None)
        protocol.send_request(protocol.connect())
        client = cls(reader, writer, protocol)
        client._write()
        async with asyncio.timeout(5):
            while protocol.handshake_exc is None and protocol.state is State.CONNECTING:
                await client._read_some()
        if protocol.handshake_exc is not None:
            client.abort()
            raise protocol.handshake_exc
        return client

    def _write(self) -> None:
        for data in self.protocol.data_to_send():
            if data:
                self.writer.write(data)

    async def _read_some(self) -> bool:
        """Read once from the socket; False at end of stream (or a reset)."""
        try:
            data = await self.reader.read(65536)
        except ConnectionError:
            data = b""
        if data:
            self.protocol.receive_data(data)
        else:
            self.protocol.receive_eof()
        for event in self.protocol.events_received():
            if isinstance(event, WsFrame):
                if event.opcode is Opcode.PING:
                    self.pings += 1
                self._events.append(event)
        return bool(data)

    async def send(self, frame: Frame) -> None:
        """Send one JSON text frame (this also sends any pong the protocol owes)."""
        self.protocol.send_text(json.dumps(frame).encode())
        self._write()
        await self.writer.drain()

    async def request(self, frame: Frame, *, timeout: float = 5) -> Frame:
        """Send `frame` with a fresh id; the reply carrying it as `re` (others are dropped)."""
        frame = {**frame, "id": next(self.ids)}
        await self.send(frame)
        async with asyncio.timeout(timeout):
            while True:
                for got in await self.frames():
                    if got.get("re") == frame["id"]:
                        return got

    async def frames(self) -> list[Frame]:
        """The JSON frames of the next text message read (batches split)."""
        while True:
            while self._events:
                event = self._events.pop(0)
                if event.opcode is Opcode.TEXT:
                    value = json.loads(bytes(event.data))
                    return value if isinstance(value, list) else [value]
                if event.opcode is Opcode.CLOSE:
                    raise ConnectionError("closed by the server")
            if not await self._read_some():
                raise ConnectionError("end of stream")

    async def wait_closed(self, timeout: float = 10) -> int | None:
        """Read (without answering anything) until the server's close frame or the end of
        the stream; the close code, or None when the socket ended without one."""
        async with asyncio.timeout(timeout):
            while True:
                while self._events:
                    event = self._events.pop(0)
                    if event.opcode is Opcode.CLOSE:
                        return Close.parse(event.data).code
                if not await self._read_some():
                    for event in self._events:
                        if event.opcode is Opcode.CLOSE:
                            return Close.parse(event.data).code
                    return None

    async def burst(self, frames: list[Frame]) -> None:
        """Send `frames` in one write, so the server reads them in one go."""
        for frame in frames:
            self.protocol.send_text(json.dumps(frame).encode())
        self._write()
        await self.writer.drain()

    async def until_closed(self, timeout: float = 10) -> tuple[list[Frame], int | None]:
        """Every JSON frame read until the server's close frame (or the end of the
        stream), and the close code (None without a close frame)."""
        got: list[Frame] = []
        async with asyncio.timeout(timeout):
            while True:
                while self._events:
                    event = self._events.pop(0)
                    if event.opcode is Opcode.TEXT:
                        value = json.loads(bytes(event.data))
                        got.extend(value if isinstance(value, list) else [value])
                    elif event.opcode is Opcode.CLOSE:
                        return got, Close.parse(event.data).code
                if not await self._read_some() and not self._events:
                    return got, None

    def abort(self) -> None:
        self.writer.transport.abort()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


async def metric(server: Server, name: str) -> float:
    """A metric's value as `GET /metrics` shows it (0 when absent)."""
    async with httpx.AsyncClient(base_url=server.http_url, timeout=10) as client:
        response = await client.get("/metrics")
        response.raise_for_status()
    for line in response.text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


async def fetch_events(server: Server, user: str, session_id: str) -> list[Frame]:
    """Every event of the session's log, read over HTTP."""
    events: list[Frame] = []
    async with server.http(user) as client:
        while True:
            response = await client.get(
                f"/v1/sessions/{session_id}/events",
                params={"after": events[-1]["seq"] if events else 0, "limit": 1000},
            )
            response.raise_for_status()
            page: list[Frame] = response.json()["events"]
            if not page:
                return events
            events.extend(page)


async def create_sessions(server: Server, owner: str, count: int) -> list[str]:
    """`count` new sessions of `owner`, created over one HTTP connection."""
    ids: list[str] = []
    async with server.http(owner) as client:
        for i in range(count):
            response = await client.post("/v1/sessions", json={"title": f"s{i}", "agent": "none"})
            response.raise_for_status()
            ids.append(response.json()["id"])
    return ids
