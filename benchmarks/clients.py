"""Load-generator connections and the three wire dialects they speak.

A `Conn` is one WebSocket client (picows when installed, else the `websockets`
library). Until `start()` its frames queue in an inbox for the handshake; after, each
frame is handled in the receive callback with no task or queue: count the payload
markers, optionally record latencies, optionally hand the frame to `extra`.

Payloads carry ``@b@<monotonic ns>;`` so one process can measure publish→delivery
latency; a Tidings batch (a JSON array of frames) simply holds several markers.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
import urllib.request
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

MARK = b"@b@"
STAMP = re.compile(rb"@b@(\d+);")

if TYPE_CHECKING:
    from picows import WSListener as ListenerBase
    from picows import WSMsgType, ws_connect

    HAVE_PICOWS = True
else:
    try:
        from picows import WSListener as ListenerBase
        from picows import WSMsgType, ws_connect

        HAVE_PICOWS = True
    except ImportError:  # pragma: no cover - the bench extra installs picows
        HAVE_PICOWS = False
        ListenerBase = object

request_ids = itertools.count(1)


def payload(tag: str = "") -> str:
    """A message body stamped with the current monotonic time."""
    return f"{tag}@b@{time.monotonic_ns()};"


class Conn(ListenerBase):
    """One client connection; see the module docstring for its two phases."""

    def __init__(self, engineio: bool = False) -> None:
        super().__init__()
        self.engineio = engineio
        self.inbox: asyncio.Queue[bytes] | None = asyncio.Queue()
        self.count = 0
        self.lats: list[int] | None = None
        self.on_count: Callable[[], None] | None = None
        self.extra: Callable[[Conn, bytes], None] | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self._send: Callable[[bytes], None] = _unconnected
        self._close: Callable[[], None] = lambda: None

    # picows callbacks -------------------------------------------------------------
    def on_ws_connected(self, transport: Any) -> None:
        text = WSMsgType.TEXT
        self._send = lambda data: transport.send(text, data)
        self._close = lambda: transport.disconnect()

    def on_ws_frame(self, transport: Any, frame: Any) -> None:
        kind = frame.msg_type
        if kind is WSMsgType.TEXT or kind is WSMsgType.CONTINUATION:
            self.received(frame.get_payload_as_bytes())
        elif kind is WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    def on_ws_disconnected(self, transport: Any) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    # shared by both client libraries -----------------------------------------------
    def received(self, data: bytes) -> None:
        if self.engineio and data == b"2":  # engine.io ping: answer or be dropped
            self._send(b"3")
            return
        if self.inbox is not None:
            self.inbox.put_nowait(data)
            return
        n = data.count(MARK)
        if n:
            self.count += n
            if self.lats is not None:
                now = time.monotonic_ns()
                self.lats.extend(now - int(m) for m in STAMP.findall(data))
            if self.on_count is not None:
                self.on_count()
        if self.extra is not None:
            self.extra(self, data)

    def send(self, data: bytes) -> None:
        self._send(data)

    def start(self) -> None:
        """Leave the handshake phase: frames are handled in the callback from now on."""
        self.inbox = None

    async def recv(self, within: float) -> bytes:
        assert self.inbox is not None
        return await asyncio.wait_for(self.inbox.get(), within)

    def close(self) -> None:
        self._close()


def _unconnected(data: bytes) -> None:
    raise ConnectionError("not connected")


async def open_conn(url: str, engineio: bool = False, within: float = 15.0) -> Conn:
    if HAVE_PICOWS:
        _, listener = await ws_connect(
            lambda: Conn(engineio),
            url,
            websocket_handshake_timeout=within,
            enable_auto_pong=True,
            max_frame_size=16 << 20,
        )
        assert isinstance(listener, Conn)
        return listener
    return await _open_with_websockets(url, engineio, within)  # pragma: no cover


async def _open_with_websockets(url: str, engineio: bool, within: float) -> Conn:
    """The fallback client: a reader task feeds `Conn.received`."""
    from websockets.asyncio.client import connect

    ws = await asyncio.wait_for(connect(url, compression=None, max_size=16 << 20), within)
    conn = Conn(engineio)
    loop = asyncio.get_running_loop()
    conn._send = lambda data: loop.create_task(ws.send(data.decode()))  # type: ignore[assignment]
    conn._close = lambda: loop.create_task(ws.close())  # type: ignore[assignment]

    async def read() -> None:
        try:
            async for message in ws:
                conn.received(message.encode() if isinstance(message, str) else message)
        finally:
            if not conn.closed.done():
                conn.closed.set_result(None)

    conn.reader = loop.create_task(read())  # type: ignore[attr-defined]
    return conn


# Dialects ---------------------------------------------------------------------------


class Dialect(Protocol):
    name: str

    def prepare(self, rooms: int, agent: str = "none") -> list[str]:
        """Create `rooms` rooms (sessions) and return their names."""

    async def join(self, room: str, within: float, extra_rooms: tuple[str, ...] = ()) -> Conn:
        """An open connection that receives every message of `room`."""

    def publish(self, room: str, body: str) -> bytes:
        """The frame that publishes `body` to `room`."""


class Plain:
    """The peers' protocol: every text frame is relayed to the room."""

    name = "plain"

    def __init__(self, port: int) -> None:
        self.port = port

    def prepare(self, rooms: int, agent: str = "none") -> list[str]:
        return [f"r{i}" for i in range(rooms)]

    async def join(self, room: str, within: float, extra_rooms: tuple[str, ...] = ()) -> Conn:
        return await open_conn(f"ws://127.0.0.1:{self.port}/ws?room={room}", within=within)

    def publish(self, room: str, body: str) -> bytes:
        return body.encode()


class SocketIO(Plain):
    """Socket.IO over a bare engine.io WebSocket transport, framed by hand for speed."""

    name = "socketio"

    async def join(self, room: str, within: float, extra_rooms: tuple[str, ...] = ()) -> Conn:
        url = f"ws://127.0.0.1:{self.port}/socket.io/?EIO=4&transport=websocket&room={room}"
        conn = await open_conn(url, engineio=True, within=within)
        opened = await conn.recv(within)
        if not opened.startswith(b"0"):
            raise ConnectionError(f"engine.io open expected, got {opened[:80]!r}")
        conn.send(b"40")
        while not (await conn.recv(within)).startswith(b"40"):
            pass
        return conn

    def publish(self, room: str, body: str) -> bytes:
        return b'42["msg",' + json.dumps(body).encode() + b"]"


class Tidings:
    """Protocol v1: connect, subscribe, then `send` (durable) or `signal` (ephemeral)."""

    name = "tidings"

    def __init__(self, port: int, token: str, kind: str = "send") -> None:
        self.port = port
        self.token = token
        self.kind = kind
        self.sent = itertools.count()

    def prepare(self, rooms: int, agent: str = "none") -> list[str]:
        return [self.create_session(agent) for _ in range(rooms)]

    def create_session(self, agent: str) -> str:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/v1/sessions",
            data=json.dumps({"title": "bench", "agent": agent}).encode(),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            body = json.loads(response.read())
        session = body.get("id") or body.get("session", {}).get("id")
        if not isinstance(session, str):
            raise RuntimeError(f"POST /v1/sessions gave no id: {body!r}")
        return session

    async def connect(self, within: float) -> Conn:
        conn = await open_conn(f"ws://127.0.0.1:{self.port}/v1/ws", within=within)
        await self.request(
            conn, {"type": "connect", "token": self.token, "client": "bench"}, within
        )
        return conn

    async def join(self, room: str, within: float, extra_rooms: tuple[str, ...] = ()) -> Conn:
        conn = await self.connect(within)
        for session in (room, *extra_rooms):
            await self.request(conn, {"type": "subscribe", "session": session, "after": 0}, within)
        return conn

    async def request(self, conn: Conn, frame: dict[str, Any], within: float) -> dict[str, Any]:
        """Send a request and wait for its reply, skipping unrelated frames."""
        rid = next(request_ids)
        conn.send(json.dumps({**frame, "id": rid}).encode())
        deadline = time.monotonic() + within
        while True:
            for obj in frames(await conn.recv(max(0.01, deadline - time.monotonic()))):
                if obj.get("re") == rid:
                    if obj.get("type") == "error":
                        raise RuntimeError(f"{frame['type']} failed: {obj}")
                    return obj

    def publish(self, room: str, body: str) -> bytes:
        if self.kind == "signal":
            return (
                f'{{"type":"signal","session":"{room}","name":"bench","data":{{"t":"{body}"}}}}'
            ).encode()
        return self.send_frame(room, body, next(request_ids))

    def send_frame(self, room: str, body: str, rid: int) -> bytes:
        return (
            f'{{"type":"send","id":{rid},"session":"{room}","client_id":"b{next(self.sent)}",'
            f'"kind":"message","data":{{"content":"{body}","is_code":false}}}}'
        ).encode()


def frames(data: bytes) -> list[dict[str, Any]]:
    """The objects of one server frame: a single object or a batch (JSON array)."""
    try:
        decoded = json.loads(data)
    except ValueError:
        return []
    if isinstance(decoded, list):
        return [obj for obj in decoded if isinstance(obj, dict)]
    return [decoded] if isinstance(decoded, dict) else []


def make_token(secret: str, user: str = "bench", ttl: int = 3600) -> str:
    import jwt

    return jwt.encode({"sub": user, "exp": int(time.time()) + ttl}, secret, algorithm="HS256")


def make_dialect(name: str, port: int, secret: str = "", kind: str = "send") -> Dialect:
    if name == "plain":
        return Plain(port)
    if name == "socketio":
        return SocketIO(port)
    if name == "tidings":
        return Tidings(port, make_token(secret), kind)
    raise ValueError(f"unknown dialect {name!r}")
