"""uvicorn's httptools HTTP protocol with the limits a public port needs.

uvicorn gives an HTTP connection no deadline until its first response (a slowloris
trickle, a partial head or an idle socket stays open for good, holding a file
descriptor), bounds neither the head's size nor its header count (httptools buffers a
64 MB header whole), and reads a body the app has not asked for into memory. This
subclass adds, per connection:

- a head deadline (`http_head_timeout_s`) from the connection's start, or from the first
  byte of a later request, to the end of its head: a WebSocket upgrade is an HTTP head
  too, so a trickled upgrade is cut the same way (408, then close);
- a body deadline (`http_body_timeout_s`) from the end of the head to the end of the body;
- head size (`http_max_header_bytes`, request line included) and header count
  (`http_max_headers`) limits: 431;
- a body limit (`http_max_body_bytes`): 413 from `Content-Length` before a byte of the
  body is read, and while a chunked body streams in;
- a cap on open connections (`max_connections`, WebSockets included; 0 derives it from
  the descriptor limit): a connection over it gets 503 and is closed at once, so idle
  sockets cannot take the descriptors the store and live clients need.

Idle keep-alive connections are closed by uvicorn's own `timeout_keep_alive`
(`http_keepalive_s`). Only the hooks below are overridden; the rest is uvicorn's.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from typing import TYPE_CHECKING, Any

import httptools
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from tidings.protocol.codes import ProtocolError
from tidings.server.config import Config

if TYPE_CHECKING:
    from tidings.server.node import Node

log = logging.getLogger("tidings.edge")

_REASONS = {
    408: b"Request Timeout",
    413: b"Content Too Large",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}
#: Descriptors kept for the store, the listening socket, logs and the rest when the
#: connection cap is derived from the descriptor limit.
_FD_HEADROOM = 64
#: After a refusal, how much more input is read and dropped, and for how long, so the
#: peer reads the answer instead of a reset.
_LINGER_BYTES = 8 * 1024 * 1024
_LINGER_S = 2.0


def connection_cap(config: Config) -> int:
    """The most open client connections: the setting, or the descriptor limit less room."""
    if config.max_connections > 0:
        return config.max_connections
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1_000_000
    return max(16, soft - _FD_HEADROOM)


class _Refused(Exception):
    """Raised inside a parser callback to stop parsing a refused request."""


class EdgeHTTP(HttpToolsProtocol):
    """One HTTP connection, with deadlines and limits (see the module's docstring)."""

    settings: Config
    cap: int

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._timer: asyncio.TimerHandle | None = None
        self._in_head = True
        self._head_bytes = 0
        self._header_count = 0
        self._body_bytes = 0
        self._refused = False
        self._linger = 0

    # ------------------------------------------------------------ deadlines

    def _arm(self, seconds: float) -> None:
        self._disarm()
        if seconds > 0:
            self._timer = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        what = "head" if self._in_head else "body"
        log.info(
            "closed an HTTP connection from %s: its request %s came too slowly",
            _peer(self.client),
            what,
        )
        self._refuse(408, f"the request {what} took too long\n")

    def _refuse(self, status: int, text: str) -> None:
        """Answer `status` and close. Only before the app answered (head or body phase)."""
        self._refused = True
        self._disarm()
        transport = self.transport
        if transport.is_closing():
            return
        # In a head, any earlier cycle is over; in a body, the app may have answered.
        if self._in_head or self.cycle is None or not self.cycle.response_started:
            body = text.encode()
            transport.write(
                b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n%s"
                % (status, _REASONS[status], len(body), body)
            )
        if not self._in_head and self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        if status == 503 or not transport.can_write_eof():
            transport.close()  # over the cap: the descriptor is what must go, at once
            return
        # A lingering close: closing with the peer's input unread makes the kernel send
        # a reset, and a client still sending (a big header, a body) would lose the
        # answer. Half-close instead and read and drop the rest, bounded in bytes and
        # time, until the peer closes.
        transport.write_eof()
        self._linger = _LINGER_BYTES
        self.flow.resume_reading()
        self._timer = self.loop.call_later(_LINGER_S, transport.close)

    # ------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.server_state.connections) > self.cap:
            log.warning(
                "refused a connection from %s: %d open (max_connections)",
                _peer(self.client),
                self.cap,
            )
            self._refuse(503, "too many connections\n")
            return
        self._arm(self.settings.http_head_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            # The rest of a refused request is dropped, up to the lingering bound.
            self._linger -= len(data)
            if self._linger < 0:
                self.transport.close()
            return
        limit = self.settings.http_max_header_bytes
        room = limit - self._head_bytes
        if self._in_head and len(data) > room:
            # Feed only what the head may still take: if it is not over by then, it is
            # too large (httptools would buffer a header of any size whole).
            head, rest = data[: max(room, 0)], data[max(room, 0) :]
            self._head_bytes = limit
            if head:
                self._feed(head)
            if self._refused or self.transport.is_closing():
                return
            protocol = self.transport.get_protocol()
            if protocol is not self:  # upgraded to a WebSocket: the rest is its input
                protocol.data_received(rest)  # type: ignore[attr-defined]
                return
            if not self._head_done():
                self._refuse(431, f"the request head is over {limit} bytes\n")
                return
            data = rest
        elif self._in_head:
            self._head_bytes += len(data)
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        """uvicorn's `data_received`, quiet about the requests refused here."""
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        except httptools.HttpParserError:
            if not self._refused:  # ours raised `_Refused` after answering
                self.logger.warning("Invalid HTTP request received.")
                self.send_400_response("Invalid HTTP request received.")

    def _head_done(self) -> bool:
        # A method, not the attribute: the parser's callbacks change it under a call.
        return not self._in_head

    def handle_websocket_upgrade(self) -> None:
        self._disarm()  # from here the WebSocket layer's own deadlines apply
        super().handle_websocket_upgrade()

    # ------------------------------------------------------------ parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_count = 0
        self._body_bytes = 0
        if not self._in_head:  # a later request on a kept-alive connection
            self._in_head = True
            self._head_bytes = 0
            self._arm(self.settings.http_head_timeout_s)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.settings.http_max_headers:
            self._refuse(431, f"more than {self.settings.http_max_headers} header lines\n")
            raise _Refused
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm()
        limit = self.settings.http_max_body_bytes
        for name, value in self.headers:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                self._refuse(413, f"the request body is over {limit} bytes\n")
                raise _Refused
        super().on_headers_complete()
        if not self.parser.should_upgrade():
            self._arm(self.settings.http_body_timeout_s)

    def on_body(self, body: bytes) -> None:
        if self._refused:
            return
        self._body_bytes += len(body)
        limit = self.settings.http_max_body_bytes
        if self._body_bytes > limit:  # chunked: no Content-Length told us before
            self._refuse(413, f"the request body is over {limit} bytes\n")
            raise _Refused
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "?"


def edge_protocol(config: Config) -> type[EdgeHTTP]:
    """The class uvicorn instantiates per HTTP connection, bound to `config`'s limits."""

    class BoundEdgeHTTP(EdgeHTTP):
        settings = config
        cap = connection_cap(config)

    return BoundEdgeHTTP


#: Methods whose requests carry a body the API reads.
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class AuthBeforeBody:
    """Refuse an unauthenticated `/v1` request with a body before any of it is read.

    FastAPI reads and parses the body before it runs the route's dependencies, so a
    stranger's upload cost memory before the 401. The token is checked here first; the
    route checks it again (a signature check costs microseconds)."""

    def __init__(self, app: ASGIApp, node: Node) -> None:
        self.app = app
        self.node = node

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] in _BODY_METHODS
            and str(scope["path"]).startswith("/v1/")
            # The dev UI's token mint is how a token is got (dev mode only).
            and scope["path"] != "/v1/dev/token"
        ):
            values = [v for k, v in scope["headers"] if k == b"authorization"]
            token = None
            if len(values) == 1:
                scheme, _, credential = values[0].decode("latin-1").partition(" ")
                if scheme.lower() == "bearer":
                    token = credential.strip()
            try:
                await self.node.authenticate(token)
            except ProtocolError as exc:
                from tidings.server.http import error_response

                await error_response(exc)(scope, receive, send)
                return
        await self.app(scope, receive, send)
