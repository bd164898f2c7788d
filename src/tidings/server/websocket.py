"""The WebSocket layer of `/v1/ws`: bytes in, frames out, nothing else.

Uvicorn serves HTTP through the ASGI app and hands every WebSocket upgrade to this
protocol class (its `ws` setting takes a class), so `/v1/ws` shares the port without the
ASGI message layer in the hot path. The handshake and incoming frames are parsed by the
`websockets` library's sans-I/O `ServerProtocol`; outgoing text frames are framed here,
because a server frame is only a 2-10 byte header before the payload.

Why not the ASGI WebSocket path: measured (docs/performance.md), ASGI's per-message
dispatch costs more than the whole fan-out; it cannot write a close frame while the peer
stalls (needed for 4009), cannot close with 1001 on shutdown (uvicorn sends 1012), and
keeps more memory per idle connection.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qs, urlsplit

from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from tidings.protocol.codes import CloseCode
from tidings.protocol.messages import batch, merge_streams
from tidings.protocol.state import Input

if TYPE_CHECKING:
    from tidings.server.connection import Connection
    from tidings.server.metrics import Metrics
    from tidings.server.node import Node

log = logging.getLogger("tidings.ws")

SUBPROTOCOL = Subprotocol("tidings.v1")
WS_PATH = "/v1/ws"
#: How long a peer has to answer our close frame before the socket is dropped.
CLOSE_TIMEOUT_S = 5.0

_pack_short = struct.Struct("!BBH").pack
_pack_long = struct.Struct("!BBQ").pack


def text_frame_header(length: int) -> bytes:
    """The header of one unmasked, final text frame (RFC 6455 §5.2)."""
    if length < 126:
        return bytes((0x81, length))
    if length < 65536:
        return _pack_short(0x81, 126, length)
    return _pack_long(0x81, 127, length)


class _ServerProtocol(ServerProtocol):
    """websockets' server protocol, with a close frame allowed between fragments."""

    def recv_frame(self, frame: Frame) -> None:
        if frame.opcode is Opcode.CLOSE:
            # RFC 6455 §5.4: control frames may be interleaved with a message's fragments,
            # and a close there is a normal close that abandons the unfinished message;
            # websockets would call it a protocol error (1002).
            self.current_size = None
        super().recv_frame(frame)


def _select_subprotocol(
    protocol: ServerProtocol, offered: Any
) -> Subprotocol | None:  # pragma: no cover - trivial
    return SUBPROTOCOL if SUBPROTOCOL in offered else None


def close_code_of(protocol: ServerProtocol) -> int:
    """The code a closed connection ended with: the one we sent, else the peer's, else
    1006 (the socket ended without a close frame)."""
    frame = protocol.close_sent or protocol.close_rcvd
    return int(frame.code) if frame is not None else 1006


class Flusher:
    """Writes every dirty socket's queue once per event-loop iteration.

    Fan-out only appends to queues; one callback per loop turn turns each socket's queue
    into a single frame (a JSON array batch when several are waiting). Subscribers of one
    session usually hold the very same queued frames, so the framed bytes are built once
    per distinct queue and shared: encode once, frame once, write to each.
    """

    __slots__ = ("_dirty", "_loop", "_metrics", "_scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop, metrics: Metrics) -> None:
        self._loop = loop
        self._metrics = metrics
        self._dirty: list[WebSocket] = []
        self._scheduled = False

    def mark(self, socket: WebSocket) -> None:
        self._dirty.append(socket)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        dirty, self._dirty = self._dirty, []
        # Values keep their queue alive for the whole pass, so no `id` in a key is reused.
        framed: dict[object, tuple[bytes, list[bytes]]] = {}
        frames = 0
        sent = 0
        for socket in dirty:
            written = socket.flush(framed)
            if written:
                frames += 1
                sent += written
        if frames:
            self._metrics.frames_sent.inc(frames)
            self._metrics.bytes_sent.inc(sent)


class WebSocket(asyncio.Protocol):
    """One client socket of `/v1/ws`. Created by uvicorn with the upgrade request's bytes."""

    def __init__(
        self,
        node: Node,
        server_state: Any,
        on_lost: Callable[[WebSocket], None] | None = None,
    ) -> None:
        config = node.config
        self.node = node
        self.server_state = server_state
        self.protocol = _ServerProtocol(
            subprotocols=[SUBPROTOCOL],
            select_subprotocol=_select_subprotocol,
            max_size=config.max_frame,
        )
        self.transport: asyncio.Transport | None = None
        self.connection: Connection | None = None
        self.queue: list[bytes] = []
        self.queued_bytes = 0
        self.queue_limit = config.queue_bytes
        self.dirty = False
        self.paused = False
        self.closing = False
        # Why reading is paused: the transport's write buffer is over its mark (the peer
        # does not read), or the connection's requests are backlogged. Either way, no
        # more input is taken, so no more output (pongs, replies) is made for it.
        self._write_blocked = False
        self._backlog_blocked = False
        self._reading = True
        self.max_fragments = config.max_fragments
        self.last_seen = time.monotonic()
        self.peer = "?"
        self._fragments: list[bytes] = []
        self._text = True  # the opcode of the message being received: text or binary
        self._close_timer: asyncio.TimerHandle | None = None
        #: Set while a catch-up waits for the queue to be written (`drain`).
        self._drained: asyncio.Future[None] | None = None

    # ------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not `asyncio.Transport` subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.peer = f"{peer[0]}:{peer[1]}"
        self.server_state.connections.add(self)

    def data_received(self, data: bytes) -> None:
        self.last_seen = time.monotonic()
        protocol = self.protocol
        protocol.receive_data(data)
        for event in protocol.events_received():
            if isinstance(event, Request):
                self._handshake(event)
            elif isinstance(event, Frame):
                self._frame(event)
        self._write_protocol_output()

    def eof_received(self) -> bool | None:
        self.protocol.receive_eof()
        self._write_protocol_output()
        return None

    def pause_writing(self) -> None:
        self.paused = True
        self._write_blocked = True
        self._update_reading()

    def resume_writing(self) -> None:
        self.paused = False
        self._write_blocked = False
        self._update_reading()
        if self.queue:
            self.flush()
        self._wake_drained()

    def hold_reading(self, hold: bool) -> None:
        """Pause (or resume) reading for the connection's own backlog of requests."""
        self._backlog_blocked = hold
        self._update_reading()

    def _update_reading(self) -> None:
        # While closing, the backlog no longer matters: the rest of the input is read and
        # dropped, so that the peer's close (or EOF) is seen and the socket ends cleanly
        # instead of with a reset. A peer that does not read stays paused until the
        # close timer drops it.
        want = not self._write_blocked and (self.closing or not self._backlog_blocked)
        transport = self.transport
        if want is self._reading or transport is None or transport.is_closing():
            return
        self._reading = want
        if want:
            transport.resume_reading()
        else:
            transport.pause_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.queue = []
        self.queued_bytes = 0
        self._wake_drained()
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        self.server_state.connections.discard(self)
        connection, self.connection = self.connection, None
        if connection is not None:
            self.node.metrics.closes.labels(str(close_code_of(self.protocol))).inc()
            connection.on_closed()
        # The parser is a generator holding its protocol, and the EOFError that ended it
        # (kept in `parser_exc`) holds the parser's frame: two reference cycles per
        # connection, left to the cyclic GC unless broken here (its pauses are tail
        # latency for everyone else).
        self.protocol.parser.close()
        self.protocol.parser_exc = None

    # ------------------------------------------------------------ uvicorn hooks

    def shutdown(self) -> None:
        """Server going away: flush what is queued, then close with 1001."""
        if self.connection is not None:
            self.connection.apply(Input.CLOSE)
        else:
            self.close(CloseCode.GOING_AWAY, "server shutting down")

    # ------------------------------------------------------------ incoming

    def _handshake(self, request: Request) -> None:
        node = self.node
        url = urlsplit(request.path)
        if url.path != WS_PATH:
            self._reject(404, "no WebSocket endpoint here; use /v1/ws\n")
            return
        headers = request.headers
        # One Origin, Host and Authorization at most: a repeated one is ambiguous (which
        # does a proxy check?) and is refused, not guessed at (`get` would raise).
        for name in ("Origin", "Host", "Authorization"):
            if len(headers.get_all(name)) > 1:
                self._reject(400, f"more than one {name} header\n")
                return
        origin = headers.get("Origin")
        if not node.origin_allowed(origin, headers.get("Host")):
            node.metrics.origin_refused.inc()
            log.warning(
                "refused a WebSocket upgrade from origin %r: not same-origin (Host %r) and "
                "not in TIDINGS_ALLOWED_ORIGINS",
                origin,
                request.headers.get("Host"),
            )
            self._reject(403, "origin not allowed\n")
            return
        response = self.protocol.accept(request)
        # websockets binds `select_subprotocol` to the protocol as an instance attribute,
        # a reference cycle; it is only needed by `accept`.
        vars(self.protocol).pop("select_subprotocol", None)
        if response.status_code != 101:
            # websockets refused the handshake itself (bad headers): send its answer.
            self.protocol.send_response(response)
            self._write_protocol_output()
            return
        self.protocol.send_response(response)
        token = None
        auth = request.headers.get("Authorization")
        if auth and auth.lower().startswith("bearer "):
            token = auth[7:].strip()
        if token is None:
            values = parse_qs(url.query).get("token")
            if values:
                token = values[0]
        from tidings.server.connection import Connection

        self.connection = Connection(node, self, header_token=token)

    def _reject(self, status: int, text: str) -> None:
        response = self.protocol.reject(status, text)
        self.protocol.send_response(response)
        self._write_protocol_output()
        if self.transport is not None:
            self.transport.close()

    def _frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY or opcode is Opcode.CONT:
            if self.closing:
                return
            # The parser hands out `bytes`; the annotation is wider (any buffer).
            data = frame.data if isinstance(frame.data, bytes) else bytes(frame.data)
            if opcode is not Opcode.CONT:
                self._fragments = []
                self._text = opcode is Opcode.TEXT
            if frame.fin and not self._fragments:
                self._message(data)
            elif frame.fin:
                self._fragments.append(data)
                data = b"".join(self._fragments)
                self._fragments = []
                self._message(data)
            elif len(self._fragments) >= self.max_fragments:
                # websockets bounds the assembled size (`max_size`), not the count: empty
                # continuation frames would pile up without end.
                self._fragments = []
                self.fail(
                    CloseCode.MESSAGE_TOO_BIG,
                    f"a message may come in at most {self.max_fragments} fragments",
                )
            else:
                self._fragments.append(data)
        elif opcode is Opcode.CLOSE:
            self._fragments = []

    def _message(self, data: bytes) -> None:
        if self.connection is not None and not self.closing:
            self.connection.on_message(data, self._text)

    # ------------------------------------------------------------ outgoing

    def push(self, frame: bytes) -> None:
        """Queue one encoded frame; it leaves with the next flush, batched with others."""
        if self.closing:
            return
        if self.paused and self.queue:
            # Backlogged: a stream chunk that continues the last queued one joins it.
            merged = merge_streams(self.queue[-1], frame)
            if merged is not None:
                self.queued_bytes += len(merged) - len(self.queue[-1])
                self.queue[-1] = merged
                return
        self.queue.append(frame)
        self.queued_bytes += len(frame)
        if self.queued_bytes > self.queue_limit:
            self.node.metrics.slow_consumer_closes.inc()
            self.queue = []
            self.queued_bytes = 0
            if self.connection is not None:
                self.connection.apply(Input.SLOW_CONSUMER)
            else:
                self.close(CloseCode.SLOW_CONSUMER, "slow consumer")
            return
        if not self.dirty:
            self.dirty = True
            self.node.flusher.mark(self)

    def flush(self, framed: dict[object, tuple[bytes, list[bytes]]] | None = None) -> int:
        """Write the queue as one frame; returns the bytes written (0 when nothing was)."""
        self.dirty = False
        queue = self.queue
        if not queue or self.paused or self.closing or self.transport is None:
            return 0
        self.queue = []
        self.queued_bytes = 0
        key: object = id(queue[0]) if len(queue) == 1 else tuple(map(id, queue))
        cached = framed.get(key) if framed is not None else None
        if cached is None:
            payload = batch(queue)
            data = text_frame_header(len(payload)) + payload
            if framed is not None:
                framed[key] = (data, queue)
        else:
            data = cached[0]
        self.transport.write(data)
        if framed is None:
            metrics = self.node.metrics
            metrics.frames_sent.inc()
            metrics.bytes_sent.inc(len(data))
        if not self.paused:  # the transport took it all without going over its mark
            self._wake_drained()
        return len(data)

    async def drain(self) -> None:
        """Wait until the queue is written and the transport takes more (or the socket
        closes): how a catch-up paces itself to the peer's reading."""
        while (self.queue or self.paused) and not self.closing:
            if self._drained is None:
                self._drained = asyncio.get_running_loop().create_future()
            await self._drained

    def _wake_drained(self) -> None:
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    def ping(self) -> None:
        if not self.closing:
            self.protocol.send_ping(struct.pack("!d", time.monotonic()))
            self._write_protocol_output()

    def close(self, code: int, reason: str = "") -> None:
        """Send a close frame (even while the peer stalls) and drop the socket if unanswered."""
        if self.closing or self.transport is None:
            return
        self.closing = True
        self.queue = []
        self.queued_bytes = 0
        self._wake_drained()
        try:
            self.protocol.send_close(code, reason)
        except Exception:  # the protocol is already closing: just drop the socket
            self.transport.abort()
            return
        self._write_protocol_output()
        if self.transport is not None:
            self._begin_closing(self.transport)

    def fail(self, code: int, reason: str) -> None:
        """End the connection for a broken frame (RFC 6455 "fail"): close frame, then EOF."""
        if self.closing or self.transport is None:
            return
        self.queue = []
        self.queued_bytes = 0
        self.protocol.fail(code, reason)
        self._write_protocol_output()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _write_protocol_output(self) -> None:
        transport = self.transport
        if transport is None:
            return
        for data in self.protocol.data_to_send():
            if data:
                transport.write(data)
            else:
                # websockets asks for end-of-stream: our side is done. Half-close only,
                # and go on reading (and discarding) until the peer's EOF: closing the
                # socket with unread input would reset it, and a reset can destroy our
                # close frame (1009...) in the peer's buffer before it reads it.
                self._begin_closing(transport)
                if transport.can_write_eof():
                    transport.write_eof()
                else:
                    transport.close()
                return
        if self.protocol.parser_exc is not None and not self.closing:
            # A protocol violation (oversized or malformed frame): websockets already
            # queued the close frame (1009 or 1002) above.
            self._begin_closing(transport)
        # Protocol output (pongs, close frames) counts against the outbound bound too.
        if transport.get_write_buffer_size() + self.queued_bytes > self.queue_limit:
            self._over_bound(transport)

    def _begin_closing(self, transport: asyncio.Transport) -> None:
        self.closing = True
        self._wake_drained()
        if self._close_timer is None:
            self._close_timer = asyncio.get_running_loop().call_later(
                CLOSE_TIMEOUT_S, transport.abort
            )
        self._update_reading()

    def _over_bound(self, transport: asyncio.Transport) -> None:
        if self.closing:
            return  # reading is paused (or input discarded); the close timer ends it
        self.node.metrics.slow_consumer_closes.inc()
        self.queue = []
        self.queued_bytes = 0
        if self.connection is not None:
            self.connection.apply(Input.SLOW_CONSUMER)
        else:
            self.close(CloseCode.SLOW_CONSUMER, "slow consumer")


__all__ = ["Flusher", "WebSocket", "text_frame_header"]
