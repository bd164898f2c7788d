"""A fault-injecting TCP proxy on 127.0.0.1, for testing the SDK against a real server.

It forwards each accepted connection to the target port, and on command it can:

* `cut()` every open connection *mid-frame*: the next chunk in each direction is cut in
  half, the first half forwarded and both sockets reset (or at once, if idle);
* `stall()` the open connections: they stay open, nothing more is forwarded either way;
* `refuse(True)`: new connections are reset at once (until `refuse(False)`);
* `chaos(every_s)`: cut every connection every `every_s` seconds, in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from typing import Any


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
        self._pairs: set[_Pair] = set()
        self._refusing = False
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

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
        self._spawn(self._pump(pair, pair.client[0], pair.server[1]))
        self._spawn(self._pump(pair, pair.server[0], pair.client[1]))

    async def _pump(
        self, pair: _Pair, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while not pair.closed.is_set():
                data = await reader.read(65536)
                if not data:
                    break
                if pair.stalled:
                    await pair.closed.wait()  # a stalled line forwards nothing, ever
                    return
                if pair.cutting:
                    # Mid-frame: half of this chunk goes through, then the line drops.
                    writer.write(data[: max(1, len(data) // 2)])
                    pair.abort()
                    return
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            pair.abort()
            self._pairs.discard(pair)

    # ------------------------------------------------------------ faults

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


@contextlib.asynccontextmanager
async def faulty_proxy(target_port: int) -> AsyncIterator[FaultyProxy]:
    proxy = FaultyProxy(target_port)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()
