"""A fault-injecting TCP proxy on 127.0.0.1 that understands WebSocket frames.

It forwards each accepted connection to the target port. Plain HTTP passes through byte
for byte; once an upgrade is answered `101`, both directions are read frame by frame, so
faults can hit one WebSocket frame rather than an arbitrary slice of bytes. On command:

* `cut()` every open connection *mid-frame*: half of the next frame (or chunk) in each
  direction is forwarded, then both sockets are reset (at once, if idle);
* `stall()` the open connections: they stay open, nothing more is forwarded either way;
* `refuse(True)`: new connections are reset at once (until `refuse(False)`);
* `latency(s)`: hold every frame `s` seconds before forwarding it (order is kept);
* `drop_next`, `duplicate_next`, `delay_next` the frames a predicate picks (the ack of a
  send, say), or `on_frame(rule)` for any rule of your own;
* `chaos(every_s)`: cut every connection every `every_s` seconds, in the background;
* `random_faults(seed, ...)`: drop, duplicate, delay or cut frames at random, with
  probabilities you choose, reproducibly from `seed`.

So that it can read frames, the proxy removes `Sec-WebSocket-Extensions` from upgrade
requests: no compression is negotiated through it (a dropped compressed frame would
corrupt every later one, which is a different fault from a lost message).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import json
import random
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from websockets.utils import apply_mask

__all__ = [
    "Action",
    "Direction",
    "FaultyProxy",
    "WsFrame",
    "faulty_proxy",
]

_HEADERS_END = b"\r\n\r\n"
TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA


class Direction(enum.Enum):
    UP = "client to server"
    DOWN = "server to client"


@dataclasses.dataclass(frozen=True)
class WsFrame:
    """One WebSocket frame as it crosses the proxy (`payload` unmasked)."""

    direction: Direction
    opcode: int
    payload: bytes
    raw: bytes

    @property
    def is_data(self) -> bool:
        return self.opcode in (TEXT, BINARY, 0x0)

    def json(self) -> Any:
        """The payload as JSON (None when it is not a JSON text frame)."""
        if self.opcode != TEXT:
            return None
        try:
            return json.loads(self.payload)
        except ValueError:
            return None

    def frames(self) -> list[dict[str, Any]]:
        """The protocol frames this text frame carries (a batch is split)."""
        value = self.json()
        items = value if isinstance(value, list) else [value]
        return [item for item in items if isinstance(item, dict)]

    def has_type(self, *types: str) -> bool:
        return any(f.get("type") in types for f in self.frames())


@dataclasses.dataclass(frozen=True)
class Action:
    """What to do with a frame: forward it (after `delay_s`), drop it, or send `copies`."""

    drop: bool = False
    copies: int = 1
    delay_s: float = 0.0
    cut: bool = False


FORWARD = Action()
DROP = Action(drop=True)
DUPLICATE = Action(copies=2)
Rule = Callable[[WsFrame], Action | None]


def is_ack(frame: WsFrame) -> bool:
    """A server frame carrying an `ack` (the lost-ack fault's usual target)."""
    return frame.direction is Direction.DOWN and frame.has_type("ack")


def is_send(frame: WsFrame) -> bool:
    return frame.direction is Direction.UP and frame.has_type("send")


class _FrameReader:
    """Splits one direction's bytes into WebSocket frames (incrementally)."""

    def __init__(self, direction: Direction) -> None:
        self.direction = direction
        self.buffer = bytearray()

    def feed(self, data: bytes) -> list[WsFrame]:
        self.buffer.extend(data)
        out: list[WsFrame] = []
        while (frame := self._one()) is not None:
            out.append(frame)
        return out

    def _one(self) -> WsFrame | None:
        buf = self.buffer
        if len(buf) < 2:
            return None
        opcode, masked, length = buf[0] & 0x0F, buf[1] & 0x80, buf[1] & 0x7F
        pos = 2
        if length == 126:
            if len(buf) < 4:
                return None
            length, pos = int.from_bytes(buf[2:4], "big"), 4
        elif length == 127:
            if len(buf) < 10:
                return None
            length, pos = int.from_bytes(buf[2:10], "big"), 10
        mask = b""
        if masked:
            if len(buf) < pos + 4:
                return None
            mask, pos = bytes(buf[pos : pos + 4]), pos + 4
        end = pos + length
        if len(buf) < end:
            return None
        payload = bytes(buf[pos:end])
        raw = bytes(buf[:end])
        del buf[:end]
        return WsFrame(self.direction, opcode, apply_mask(payload, mask) if mask else payload, raw)


def _strip_extensions(head: bytes) -> bytes:
    lines = head.split(b"\r\n")
    kept = [ln for ln in lines if not ln.lower().startswith(b"sec-websocket-extensions:")]
    return b"\r\n".join(kept)


class _Pair:
    def __init__(
        self,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        server: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> None:
        self.client = client
        self.server = server
        self.cutting = False
        self.stalled = False
        self.upgraded = False
        self.closed = asyncio.Event()

    def abort(self) -> None:
        for _, writer in (self.client, self.server):
            writer.transport.abort()
        self.closed.set()


class FaultyProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.cuts = 0
        self.refused = 0
        self.accepted = 0
        self.dropped = 0
        self.duplicated = 0
        self.delayed = 0
        self.latency_s = 0.0
        self.rules: list[Rule] = []
        self._pairs: set[_Pair] = set()
        self._refusing = False
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for pair in list(self._pairs):
            pair.abort()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._refusing:
            self.refused += 1
            writer.transport.abort()
            return
        try:
            upstream = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self.accepted += 1
        pair = _Pair((reader, writer), upstream)
        self._pairs.add(pair)
        self._spawn(self._pump(pair, Direction.UP))
        self._spawn(self._pump(pair, Direction.DOWN))

    async def _pump(self, pair: _Pair, direction: Direction) -> None:
        reader = pair.client[0] if direction is Direction.UP else pair.server[0]
        writer = pair.server[1] if direction is Direction.UP else pair.client[1]
        frames = _FrameReader(direction)
        head = bytearray()  # the HTTP head being read, until its blank line
        in_head = True
        try:
            while not pair.closed.is_set():
                data = await reader.read(65536)
                if not data:
                    break
                if pair.stalled:
                    await pair.closed.wait()  # a stalled line forwards nothing, ever
                    return
                units: list[bytes | WsFrame] = []
                if in_head:
                    head.extend(data)
                    end = head.find(_HEADERS_END)
                    if end < 0:
                        continue
                    end += len(_HEADERS_END)
                    first, rest = bytes(head[:end]), bytes(head[end:])
                    head.clear()
                    in_head = False
                    if direction is Direction.UP:
                        # Frames follow only once the server answers 101 (the client waits
                        # for it), so the rest of this side stays raw until `upgraded`.
                        units += [_strip_extensions(first), rest]
                    else:
                        pair.upgraded = first.startswith(b"HTTP/1.1 101")
                        units.append(first)
                        units.extend(frames.feed(rest) if pair.upgraded else [rest])
                elif pair.upgraded:
                    units.extend(frames.feed(data))
                else:
                    units.append(data)
                for unit in units:
                    if not await self._forward(pair, writer, unit):
                        return
        except (ConnectionError, OSError):
            pass
        finally:
            pair.abort()
            self._pairs.discard(pair)

    async def _forward(
        self, pair: _Pair, writer: asyncio.StreamWriter, unit: bytes | WsFrame
    ) -> bool:
        """Write one unit (a frame, or raw bytes outside WebSocket); False once cut."""
        raw = unit.raw if isinstance(unit, WsFrame) else unit
        if not raw:
            return True
        action = self._decide(unit) if isinstance(unit, WsFrame) else FORWARD
        if pair.cutting or action.cut:
            # Mid-frame: half of this frame goes through, then the line drops.
            if action.cut:
                self.cuts += 1
            writer.write(raw[: max(1, len(raw) // 2)])
            pair.abort()
            return False
        if action.drop:
            self.dropped += 1
            return True
        delay = self.latency_s + action.delay_s
        if action.delay_s:
            self.delayed += 1
        if delay > 0:
            await asyncio.sleep(delay)
            if pair.closed.is_set():
                return False
        if action.copies > 1:
            self.duplicated += 1
        for _ in range(action.copies):
            writer.write(raw)
        await writer.drain()
        return True

    def _decide(self, frame: WsFrame) -> Action:
        for rule in list(self.rules):
            action = rule(frame)
            if action is not None:
                return action
        return FORWARD

    # ------------------------------------------------------------ faults on command

    def cut(self) -> None:
        """Drop every open connection, mid-frame when data is flowing."""
        for pair in list(self._pairs):
            self.cuts += 1
            pair.cutting = True
            # An idle connection has no next chunk to cut: drop it shortly anyway.
            asyncio.get_running_loop().call_later(0.02, pair.abort)

    def stall(self) -> None:
        """Stop forwarding on every open connection (they stay open)."""
        for pair in self._pairs:
            pair.stalled = True

    def refuse(self, on: bool) -> None:
        self._refusing = on

    def latency(self, seconds: float) -> None:
        """Hold every WebSocket frame (and raw chunk) this long; 0 to stop."""
        self.latency_s = seconds

    @property
    def connections(self) -> int:
        return len(self._pairs)

    def on_frame(self, rule: Rule) -> Callable[[], None]:
        """Apply `rule` to every frame (first rule with an answer wins); returns a remover."""
        self.rules.append(rule)
        return lambda: self.rules.remove(rule) if rule in self.rules else None

    def _next(self, predicate: Callable[[WsFrame], bool], action: Action, count: int) -> None:
        left = [count]

        def rule(frame: WsFrame) -> Action | None:
            if left[0] <= 0 or not predicate(frame):
                return None
            left[0] -= 1
            if left[0] == 0:
                self.rules.remove(rule)
            return action

        self.rules.append(rule)

    def drop_next(self, predicate: Callable[[WsFrame], bool], count: int = 1) -> None:
        """Drop the next `count` frames `predicate` picks (e.g. `is_ack`)."""
        self._next(predicate, DROP, count)

    def duplicate_next(self, predicate: Callable[[WsFrame], bool], count: int = 1) -> None:
        self._next(predicate, DUPLICATE, count)

    def delay_next(
        self, predicate: Callable[[WsFrame], bool], seconds: float, count: int = 1
    ) -> None:
        self._next(predicate, Action(delay_s=seconds), count)

    def cut_next(self, predicate: Callable[[WsFrame], bool], count: int = 1) -> None:
        """Cut the connection in the middle of the next frame `predicate` picks."""
        self._next(predicate, Action(cut=True), count)

    # ------------------------------------------------------------ faults at random

    @contextlib.asynccontextmanager
    async def chaos(self, every_s: float) -> AsyncIterator[None]:
        """Cut every connection every `every_s` seconds while the block runs."""

        async def loop() -> None:
            while True:
                await asyncio.sleep(every_s)
                self.cut()

        task = asyncio.get_running_loop().create_task(loop())
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    @contextlib.contextmanager
    def random_faults(
        self,
        seed: int,
        *,
        drop: float = 0.0,
        duplicate: float = 0.0,
        delay: float = 0.0,
        delay_s: float = 0.05,
        cut: float = 0.0,
        where: Callable[[WsFrame], bool] = lambda f: f.is_data,
    ) -> Any:
        """While the block runs, each frame `where` picks is dropped, duplicated, delayed or
        cut with the given probabilities, drawn from a generator seeded with `seed` (the
        same seed and traffic give the same faults)."""
        rng = random.Random(seed)

        def rule(frame: WsFrame) -> Action | None:
            if not where(frame):
                return None
            roll = rng.random()
            for chance, action in (
                (cut, Action(cut=True)),
                (drop, DROP),
                (duplicate, DUPLICATE),
                (delay, Action(delay_s=delay_s)),
            ):
                if roll < chance:
                    return action
                roll -= chance
            return None

        remove = self.on_frame(rule)
        try:
            yield self
        finally:
            remove()


@contextlib.asynccontextmanager
async def faulty_proxy(target_port: int) -> AsyncIterator[FaultyProxy]:
    proxy = FaultyProxy(target_port)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()
