"""`GET /v1/sessions/{id}/sse`: a session's events and stream frames as Server-Sent Events.

Every event goes out with `id: <seq>`, so a browser's `EventSource` (or any client)
resumes with `Last-Event-ID`; `?after=N` does the same where headers cannot be set.
Stream frames, presence and signals go out without an id, so they never move the resume
point. Without a resume point the stream opens with an `event: snapshot` (the
`subscribed` reply, snapshot included) and goes on live from its seq.

The subscriber joins the session's hub channel like a WebSocket connection does
(`Node.subscribe`): it catches up from the store while the channel buffers for it
(`channel.pending`), then goes live. Its queue is bounded; a consumer too slow to keep up
has its stream ended, and resumes from its last id.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any, Final, cast

import msgspec
from fastapi import FastAPI, Header, Query, Request
from fastapi.responses import StreamingResponse

from tidings.core.rules import Action
from tidings.protocol import messages as wire
from tidings.protocol.codes import ErrorCode, ProtocolError
from tidings.protocol.messages import MAX_SEQ
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


async def _open(
    node: Node, session_id: str, subscriber: SseSubscriber, after: int | None
) -> tuple[Any, list[bytes]]:
    """Join the channel: the frames to send first, and the channel (now live for us).

    As on the WebSocket: a resume point the events cannot serve (past the head, or no
    longer retained) starts with a snapshot marked `recovered: false`, and the role is
    checked again after the last await (a member removed meanwhile gets `forbidden`)."""
    channel = await node.hub.channel(session_id)
    first: list[bytes] = []
    key = cast(Any, subscriber)
    recovered: bool | None = None
    caught_up: tuple[int, list[bytes]] | None = None
    if after is not None and after < channel.seq:
        try:
            caught_up = await node.hub.catch_up(channel, key, after)
        except BaseException:
            node.hub.release(channel)
            raise
    node.recheck(channel, subscriber.user)
    if caught_up is not None:
        first.extend(caught_up[1])
        channel.live[key] = None
        return channel, first
    if after is not None and after != channel.seq:
        recovered = False  # past the head, or no longer retained
    elif after is not None:
        channel.live[key] = None  # already at the head: live from here
        return channel, first
    snapshot = msgspec.Raw(wire.encode(node.hub.snapshot(channel)))
    subscribed = wire.Subscribed(
        re=0, session=session_id, seq=channel.seq, snapshot=snapshot, recovered=recovered
    )
    first.append(wire.encode(subscribed))
    channel.live[key] = None
    return channel, first


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

        # Joined inside the body, so that leaving (in its `finally`) always follows.
        async def body() -> AsyncIterator[bytes]:
            subscriber = SseSubscriber(claims.user)
            key = cast(Any, subscriber)
            if node.draining:
                yield going_away_message()
                return
            try:
                channel, first = await _open(node, session_id, subscriber, resume)
            except ProtocolError as refused:
                yield sse_message(wire.encode(wire.error_from(refused)), event="error")
                return
            node.streams.add(subscriber)
            try:
                yield b"retry: 1000\n\n"
                for frame in first:
                    event = "snapshot" if frame.startswith(b'{"type":"subscribed"') else None
                    yield sse_message(frame, event=event)
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
                            error = wire.Error(
                                code=str(ErrorCode.FORBIDDEN),
                                message=subscriber.ended,
                                session=session_id,
                            )
                            yield sse_message(wire.encode(error), event="error")
                        return
                    yield sse_message(frame)
            finally:
                node.streams.discard(subscriber)
                channel.live.pop(key, None)
                node.hub.release(channel)

        return StreamingResponse(
            body(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
