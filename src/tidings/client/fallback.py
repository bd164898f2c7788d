"""The HTTP fallback: sends over `POST …/events`, receives over long-poll or SSE.

It runs while the WebSocket cannot be opened (rule 9 of docs/client-python.md). Each
joined session has a receive loop from its replica's seq; one send loop posts every send
without an ack, in order, with its original client id, so a send that also went out on a
WebSocket before lands once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Mapping
from typing import Any, Protocol, TypeVar

from tidings.client.backoff import Backoff
from tidings.client.errors import TidingsError
from tidings.client.http_api import HttpApi
from tidings.client.options import Options
from tidings.client.protocol import send_retry_s
from tidings.client.session import Session
from tidings.protocol.client_frames import Frame

log = logging.getLogger("tidings.client")

T = TypeVar("T")

#: Errors after which a session's fallback receive stops: the session is over.
FINAL_CODES = frozenset({"forbidden", "not_found", "unauthorized"})
#: Backoff attempts at most between fallback retries (the fallback stays responsive).
MAX_FALLBACK_ATTEMPT = 4


class FallbackHost(Protocol):
    """What the fallback needs of the client."""

    @property
    def sessions(self) -> Mapping[str, Session]: ...

    @property
    def api(self) -> HttpApi: ...

    @property
    def options(self) -> Options: ...

    @property
    def backoff(self) -> Backoff: ...

    def spawn(self, coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]: ...

    def dispatch(self, frame: Frame) -> None:
        """Handle a frame that came over HTTP (SSE)."""

    def drop(self, session: Session, error: TidingsError) -> None:
        """The session can go on no more."""

    def fallback_probed(self, error: BaseException | None) -> None:
        """The fallback's first look at the HTTP API: it answered (None) or failed."""


class HttpFallback:
    def __init__(self, host: FallbackHost) -> None:
        self.host = host
        self.tasks: list[asyncio.Task[None]] = []
        self._wakeup = asyncio.Event()

    @property
    def running(self) -> bool:
        return bool(self.tasks)

    def start(self) -> None:
        log.info("switching to the HTTP fallback (%s)", self.host.options.fallback_receive)
        self._wakeup = asyncio.Event()
        self.tasks = [
            self.host.spawn(self._probe(), "probe HTTP"),
            self.host.spawn(self._send(), "send over HTTP"),
        ]
        for session in list(self.host.sessions.values()):
            self.add(session)

    def add(self, session: Session) -> None:
        """Receive a (newly joined) session over HTTP too."""
        self.tasks.append(self.host.spawn(self._receive(session), f"receive {session.id}"))

    def wake(self) -> None:
        """A new send is queued."""
        self._wakeup.set()

    def cancel(self) -> None:
        for task in self.tasks:
            task.cancel()

    async def stop(self) -> None:
        tasks, self.tasks = self.tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _pause(self, failures: int) -> None:
        await asyncio.sleep(self.host.backoff.delay(min(failures, MAX_FALLBACK_ATTEMPT)))

    async def _probe(self) -> None:
        # Whether the fallback can work at all: `connect()` waits for this answer.
        try:
            await self.host.api.health()
        except Exception as exc:
            self.host.fallback_probed(exc)
        else:
            self.host.fallback_probed(None)

    async def _receive(self, session: Session) -> None:
        api, options = self.host.api, self.host.options
        failures = 0
        while session.error is None:
            try:
                if not session.replica.loaded:
                    seq, snapshot = await api.session(session.id)
                    session.load_snapshot(seq, snapshot)
                if options.fallback_receive == "sse":
                    async for frame in api.sse(session.id, after=session.replica.seq):
                        self.host.dispatch(frame)
                        failures = 0
                else:
                    events, _ = await api.events(
                        session.id, after=session.replica.seq, wait_s=options.poll_wait_s
                    )
                    session.on_events(events)
                failures = 0
                continue
            except TidingsError as exc:
                if exc.code in FINAL_CODES:
                    self.host.drop(session, exc)
                    return
                failures += 1
            except Exception as exc:  # the network
                log.debug("receiving over HTTP failed: %r", exc)
                failures += 1
            await self._pause(failures)

    async def _send(self) -> None:
        failures = 0
        while True:
            todo = [(s, cid) for s in list(self.host.sessions.values()) for cid in s.unacked()]
            if not todo:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            session, client_id = todo[0]
            entry = session.outgoing.get(client_id)
            if entry is None:
                continue
            kind, data = entry
            try:
                ack = await self.host.api.send(session.id, client_id, kind, data)
            except TidingsError as exc:
                retry = send_retry_s(exc)
                if retry is not None:
                    await asyncio.sleep(retry)
                else:
                    session.on_send_error(client_id, exc)
                continue
            except Exception as exc:  # the network
                failures += 1
                log.debug("sending over HTTP failed: %r", exc)
                await self._pause(failures)
                continue
            failures = 0
            session.on_ack(client_id, int(ack["seq"]), str(ack["event_id"]))
