"""Clients that record what they do and see into a `History`, through any fault.

A `Writer` sends messages one after another, each until it is answered (a retry keeps the
client id); a `Watcher` stays subscribed, resuming from the last seq it holds whenever its
connection drops. `finish` reads the stored logs, lets every watcher catch up, and asserts
the checker found nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from websockets.exceptions import WebSocketException

from tests.server.harness import Client, Frame, Server, fetch_events, make_token, message
from tidings.testing.history import LOG, Counts, History

# Answers after which the same send is tried again (the server said: not stored, later).
RETRYABLE = {"unavailable", "rate_limited", "internal"}
CONNECTION_ERRORS = (OSError, TimeoutError, WebSocketException, ConnectionError)


async def open_client(url: str, user: str, timeout: float = 3) -> Client | None:
    """A connected client of `user`, or None when the server cannot be reached now."""
    try:
        async with asyncio.timeout(timeout):
            client = await Client.open(url)
            reply = await client.request({"type": "connect", "token": make_token(user)})
    except CONNECTION_ERRORS:
        return None
    if reply.get("type") != "connected":
        await drop(client)
        return None
    return client


async def drop(client: Client | None) -> None:
    if client is not None:
        with contextlib.suppress(Exception):
            client.ws.transport.abort()
            await asyncio.wait_for(client._reader, 2)


async def answer(client: Client, frame: Frame, timeout: float) -> Frame | None:
    """The reply to `frame`, or None when the connection ends or nothing comes in time."""
    request: asyncio.Future[Any] = asyncio.ensure_future(client.request(frame, timeout=timeout))
    closed: asyncio.Future[Any] = asyncio.ensure_future(asyncio.shield(client.closed))
    try:
        done, _ = await asyncio.wait({request, closed}, return_when=asyncio.FIRST_COMPLETED)
        if request in done and request.exception() is None:
            reply: Frame = request.result()
            return reply
        return None
    finally:
        for future in (request, closed):
            future.cancel()
        await asyncio.gather(request, closed, return_exceptions=True)


class Writer:
    """One user sending messages to one session, each until it is answered or time is up."""

    def __init__(
        self,
        history: History,
        url: Callable[[], str],
        user: str,
        session: str,
        *,
        timeout: float = 3,
        give_up_s: float = 30,
    ) -> None:
        self.history = history
        self.url = url
        self.user = user
        self.session = session
        self.timeout = timeout
        self.give_up_s = give_up_s
        self.client: Client | None = None
        self.sent = 0

    async def send(self, content: str, client_id: str | None = None) -> Frame | None:
        """Send until acked (the ack), refused for good (the error) or time is up (None)."""
        client_id = client_id or uuid.uuid4().hex
        deadline = time.monotonic() + self.give_up_s
        while time.monotonic() < deadline:
            if self.client is None or self.client.closed.done():
                await drop(self.client)
                self.client = await open_client(self.url(), self.user)
                if self.client is None:
                    await asyncio.sleep(0.05)
                    continue
            key = self.history.invoke(self.session, self.user, client_id)
            reply = await answer(
                self.client, message(content, client_id, session=self.session), self.timeout
            )
            if reply is None:
                self.history.unknown(key)
                await drop(self.client)
                self.client = None
                continue
            if reply["type"] == "ack":
                self.history.ok(key, reply["seq"], duplicate=reply["duplicate"])
                self.sent += 1
                return reply
            self.history.fail(key, reply.get("code", "?"))
            if reply.get("code") not in RETRYABLE:
                return reply
            await asyncio.sleep(min(reply.get("retry_after_ms", 50), 200) / 1000)
        return None

    async def run(self, count: int, *, pause_s: float = 0.0) -> None:
        for i in range(count):
            await self.send(f"{self.user}-{i}")
            if pause_s:
                await asyncio.sleep(pause_s)

    async def close(self) -> None:
        if self.client is not None:
            with contextlib.suppress(*CONNECTION_ERRORS):
                await asyncio.wait_for(self.client.close(), 2)
        self.client = None


class Watcher:
    """One observer subscribed to one session from its start, resuming after every drop."""

    def __init__(
        self, history: History, url: Callable[[], str], user: str, session: str, name: str
    ) -> None:
        self.history = history
        self.url = url
        self.user = user
        self.session = session
        self.name = name
        self.last = 0
        self.resumes = 0
        self._task: asyncio.Task[None] | None = None
        self._client: Client | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            client = await open_client(self.url(), self.user)
            if client is None:
                await asyncio.sleep(0.05)
                continue
            self._client = client
            try:
                await self._follow(client)
            except CONNECTION_ERRORS:
                pass
            finally:
                await drop(client)
                self._client = None
            self.resumes += 1

    async def _follow(self, client: Client) -> None:
        reply = await answer(
            client, {"type": "subscribe", "session": self.session, "after": self.last}, 5
        )
        if reply is None or reply.get("type") != "subscribed":
            await asyncio.sleep(0.05)
            return
        # A resume answered with a snapshot skips on purpose; otherwise it continues.
        self.history.start(
            self.name, self.session, self.last if reply.get("recovered", True) else reply["seq"]
        )
        if not reply.get("recovered", True):
            self.last = reply["seq"]
        while True:
            getter: asyncio.Future[Any] = asyncio.ensure_future(client.inbox.get())
            closed: asyncio.Future[Any] = asyncio.ensure_future(asyncio.shield(client.closed))
            done, _ = await asyncio.wait({getter, closed}, return_when=asyncio.FIRST_COMPLETED)
            closed.cancel()
            if getter not in done:
                getter.cancel()
                # Frames already read before the close still count.
                while not client.inbox.empty():
                    self._record(client.inbox.get_nowait())
                return
            self._record(getter.result())

    def _record(self, frame: Frame) -> None:
        if frame.get("type") == "event" and frame.get("session") == self.session:
            self.history.deliver_frame(self.name, frame)
            self.last = max(self.last, int(frame["seq"]))

    async def caught_up(self, seq: int, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while self.last < seq:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} stuck at seq {self.last} of {seq}")
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await drop(self._client)


async def finish(
    history: History,
    server: Server,
    owner: str,
    sessions: list[str],
    watchers: list[Watcher],
    writers: Sequence[Writer] = (),
    *,
    timeout: float = 20,
) -> Counts:
    """Read each session's log, let the watchers reach its head, then check the history."""
    for writer in writers:
        await writer.close()
    try:
        for session in sessions:
            events = await fetch_events(server, owner, session)
            head = events[-1]["seq"] if events else 0
            for watcher in watchers:
                if watcher.session == session:
                    await watcher.caught_up(head, timeout)
            history.log(session, events)
    finally:
        for watcher in watchers:
            await watcher.stop()
    return history.assert_valid()


def message_log(history: History, session: str) -> list[Any]:
    """The stored log's deliveries of `session` (after `finish` or `History.log`)."""
    return history.views[(LOG, session)].deliveries
