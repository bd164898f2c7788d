"""`GET /v1/sessions/{id}/sse`: a session's events and stream frames as Server-Sent Events.

Every event goes out with `id: <seq>`, so a browser's `EventSource` (or any client)
resumes with `Last-Event-ID`; `?after=N` does the same where headers cannot be set.
Stream frames, presence and signals go out without an id, so they never move the resume
point. Without a resume point the stream opens with an `event: snapshot` (the
`subscribed` reply, snapshot included) and goes on live from its seq.

The subscriber joins the session's hub channel like a WebSocket connection does
(`server.catchup`): it catches up from the store page by page, paced by the response's
writes, with its role checked after every await, then goes live. A resume point past
the head (or events no longer kept) opens with `event: snapshot` and `recovered: false`,
as the WebSocket's `subscribed` does. Its queue is bounded; a consumer too slow to keep
up has its stream ended, and resumes from its last id.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import weakref
from collections.abc import AsyncIterator
from typing import Annotated, Any, Final, cast

import msgspec
from fastapi import FastAPI, Header, Query, Request
from fastapi.responses import StreamingResponse

from tidings.core.rules import Action
from tidings.protocol import messages as wire
from tidings.protocol.codes import ErrorCode, ProtocolError
from tidings.protocol.messages import MAX_SEQ
from tidings.server import catchup, limits
from tidings.server.hub import Channel
from tidings.server.node import Node
from tidings.server.openapi import IN_SESSION, errors

log = logging.getLogger("tidings.sse")

#: Frames queued for one SSE client before its stream is ended (it resumes by id).
MAX_QUEUED: Final = 10_000
#: A comment line this often keeps proxies from timing the stream out.
KEEPALIVE_S: Final = 15.0

_ids = itertools.count(1)
_END: Final = b""
#: Queued by `going_away`: the server is shutting down (compared by identity).
_GOING_AWAY: Final = b"\0going away"


class _Head(msgspec.Struct):
    type: str = ""
    seq: int | None = None


_head_decoder: Final = msgspec.json.Decoder(_Head)


class _Queue:
    """Stands in for a WebSocket: the hub calls `push(frame)`; never blocks."""

    def __init__(self) -> None:
        self.frames: asyncio.Queue[bytes] = asyncio.Queue()
        self.overflowed = False

    def push(self, frame: bytes) -> None:
        if self.overflowed:
            return
        if self.frames.qsize() >= MAX_QUEUED:
            self.overflowed = True
            self.frames.put_nowait(_END)
            return
        self.frames.put_nowait(frame)


class SseSubscriber:
    """What the hub's channel needs of a subscriber (`id`, `user`, `socket.push`, and
    `subscription_ended` when the user is removed from the session)."""

    def __init__(self, user: str) -> None:
        self.id = f"sse_{next(_ids)}"
        self.user = user
        self.socket = _Queue()
        self.ended: str | None = None

    def subscription_ended(self, session_id: str, why: str) -> None:
        self.ended = why
        self.socket.frames.put_nowait(_END)

    def going_away(self) -> None:
        """The server is shutting down: the stream ends after its queued frames."""
        self.socket.frames.put_nowait(_GOING_AWAY)


def going_away_message() -> bytes:
    """The last SSE message before a shutdown ends the stream (EventSource reconnects
    after its `retry` and resumes from the last id)."""
    error = wire.Error(
        code=str(ErrorCode.UNAVAILABLE), message="server going away; reconnect and resume"
    )
    return sse_message(wire.encode(error), event="going_away")


def sse_message(frame: bytes, *, event: str | None = None) -> bytes:
    """One SSE message carrying a JSON frame; an `event` frame gets `id: <seq>`."""
    head = _head_decoder.decode(frame)
    lines = []
    if event is not None:
        lines.append(b"event: " + event.encode())
    if head.type == "event" and head.seq is not None:
        lines.append(b"id: " + str(head.seq).encode())
    lines.append(b"data: " + frame)
    return b"\n".join(lines) + b"\n\n"


def _token(authorization: str | None, token: str | None) -> str | None:
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip()
    return token


def _resume_point(last_event_id: str | None, after: int | None) -> int | None:
    if last_event_id is not None and last_event_id.strip():
        try:
            value = int(last_event_id.strip())
        except ValueError:
            raise ProtocolError(
                ErrorCode.BAD_REQUEST, "Last-Event-ID must be a seq (an integer)"
            ) from None
        if not 0 <= value <= MAX_SEQ:
            raise ProtocolError(
                ErrorCode.BAD_REQUEST, f"Last-Event-ID must be a seq from 0 to {MAX_SEQ}"
            )
        return value
    return after


def _error(code: ErrorCode, message: str, session_id: str) -> bytes:
    error = wire.Error(code=str(code), message=message, session=session_id)
    return sse_message(wire.encode(error), event="error")


async def _join(
    node: Node, channel: Channel, subscriber: SseSubscriber, after: int | None
) -> AsyncIterator[bytes]:
    """The messages that bring the stream to live, then go live (`server.catchup`).

    Missed events are read in pages and yielded one by one: each yield waits for the
    response to be written, which paces a resume at any distance to the client. The role
    is checked after every await; the subscriber is made live with no await in between
    the last check and its first live frame."""
    key = cast(Any, subscriber)
    user = subscriber.user
    if after is not None and after <= channel.seq:
        try:
            async for page in catchup.missed(node, channel, user, after):
                for event in page:
                    yield sse_message(wire.encode(event))
            channel.live[key] = None
            return
        except catchup.NotRetained:
            pass  # the log no longer holds them: a snapshot supersedes what was sent
    # No resume point, a resume point past the head, or missed events no longer kept:
    # a snapshot, as the WebSocket's `subscribed`, says where the session is.
    catchup.check_reader(node, channel, user)
    recovered = None if after is None else False
    frame = wire.encode(catchup.subscribed(node, channel, 0, recovered))
    channel.live[key] = None
    yield sse_message(frame, event="snapshot")


def install_sse(app: FastAPI) -> None:
    """Add `GET /v1/sessions/{session_id}/sse`."""

    @app.get(
        "/v1/sessions/{session_id}/sse",
        summary="Events as Server-Sent Events (token in Authorization or ?token=)",
        response_class=StreamingResponse,
        responses={
            200: {
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
                "description": "`id: <seq>` per event; `event: snapshot` first without a "
                "resume point; resume with Last-Event-ID or ?after=",
            },
            **errors(*IN_SESSION),
        },
    )
    async def sse(
        session_id: str,
        request: Request,
        authorization: Annotated[str | None, Header()] = None,
        last_event_id: Annotated[str | None, Header()] = None,
        token: Annotated[str | None, Query()] = None,
        after: Annotated[int | None, Query(ge=0, le=MAX_SEQ)] = None,
    ) -> StreamingResponse:
        node: Node = request.app.state.node
        claims = await node.authenticate(_token(authorization, token))
        await node.require(session_id, claims.user, Action.READ)
        resume = _resume_point(last_event_id, after)
        user = claims.user
        limits.acquire(node.limits.streams, user, "SSE streams")
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                node.limits.streams.release(user)

        # Joined inside the body, so that leaving (in its `finally`) always follows.
        async def body() -> AsyncIterator[bytes]:
            subscriber = SseSubscriber(claims.user)
            key = cast(Any, subscriber)
            if node.draining:
                yield going_away_message()
                return
            channel = await node.session_channel(session_id)
            channel.joining[key] = None
            node.streams.add(subscriber)
            try:
                yield b"retry: 1000\n\n"
                try:
                    async for message in _join(node, channel, subscriber, resume):
                        yield message
                except ProtocolError as err:  # no longer a member, or the store failed
                    yield _error(err.code, err.message, session_id)
                    return
                channel.joining.pop(key, None)
                queue = subscriber.socket.frames
                while True:
                    try:
                        frame = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                    except TimeoutError:
                        yield b": keep-alive\n\n"
                        continue
                    if frame is _GOING_AWAY:
                        yield going_away_message()
                        return
                    if frame == _END:
                        if subscriber.ended is not None:
                            yield _error(ErrorCode.FORBIDDEN, subscriber.ended, session_id)
                        return
                    yield sse_message(frame)
            finally:
                node.streams.discard(subscriber)
                channel.joining.pop(key, None)
                channel.live.pop(key, None)
                node.hub.release(channel)

        async def held() -> AsyncIterator[bytes]:
            try:
                async for chunk in body():
                    yield chunk
            finally:
                release()

        stream = held()
        # A response never started (the client left first) never runs `held`'s finally.
        weakref.finalize(stream, release)
        return StreamingResponse(
            stream,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
