"""Build the ASGI app and run it: FastAPI for HTTP, the lean `WebSocket` class for `/v1/ws`."""

from __future__ import annotations

import gc
import logging
import signal
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import cast

import msgspec
import uvicorn
from fastapi import FastAPI
from fastapi.responses import Response

import tidings
from tidings.protocol.asyncapi import document
from tidings.server import http
from tidings.server.access import AccessLog
from tidings.server.config import Config
from tidings.server.edge import AuthBeforeBody, edge_protocol
from tidings.server.node import Node
from tidings.server.openapi import install_docs
from tidings.server.web import install_web

log = logging.getLogger("tidings.app")


def create_app(config: Config, node: Node | None = None) -> FastAPI:
    node = node or Node(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await node.start()
        try:
            yield
        finally:
            await node.close()

    app = FastAPI(
        title="Tidings",
        version=tidings.__version__,
        summary="Real-time session server for collaborative AI chat (protocol v1). "
        "The WebSocket endpoint is GET /v1/ws; see docs/protocol.md.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.node = node
    http.install(app)
    asyncapi = msgspec.json.encode(document(tidings.__version__))

    @app.get("/asyncapi.json", include_in_schema=False)
    async def asyncapi_json() -> Response:
        """The AsyncAPI 3 document of the WebSocket protocol (built from the frame types)."""
        return Response(asyncapi, media_type="application/json")

    install_web(app, config)
    install_docs(app)
    app.add_middleware(AuthBeforeBody, node=node)
    app.add_middleware(AccessLog, metrics=node.metrics)
    return app


def uvicorn_config(config: Config, app: FastAPI) -> uvicorn.Config:
    node: Node = app.state.node
    return uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        # httptools, with head/body deadlines, size limits and a connection cap.
        http=edge_protocol(config),
        timeout_keep_alive=cast(int, config.http_keepalive_s),
        loop="uvloop",
        ws=node.ws_protocol(),
        lifespan="on",
        log_config=None,
        access_log=False,
        # Typed int, used as a float (asyncio.timeout): a fraction of a second works.
        timeout_graceful_shutdown=cast(int, config.shutdown_grace_s),
        server_header=False,
        proxy_headers=True,
    )


class Server(uvicorn.Server):
    """uvicorn's server, telling the node the moment its shutdown begins.

    uvicorn runs the app's lifespan shutdown only after every connection is gone; a
    long-poll or SSE stream never goes by itself, so the node must answer and end them
    first (`Node.drain`), or shutdown would wait out the whole grace period."""

    def __init__(self, config: uvicorn.Config, node: Node) -> None:
        super().__init__(config)
        self.node = node

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.node.drain()
        await super().shutdown(sockets)


def run(config: Config, sock: socket.socket | None = None) -> None:
    """Serve until SIGTERM/SIGINT: stop accepting, answer long-polls (503), end SSE
    streams, close sockets with 1001 once their acks are out, exit 0."""
    app = create_app(config)
    server = Server(uvicorn_config(config, app), app.state.node)
    # uvicorn re-raises a captured SIGTERM once its graceful shutdown is done; under the
    # default handler that kills the process (status -15) instead of exiting 0.
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    # Everything alive now (modules, the app, its routes: ~70k objects) lives as long as
    # the process. Frozen, the cyclic GC stops rescanning it on every full collection:
    # those went from ~130 ms to ~40 ms under the S3 benchmark, a visible tail latency.
    gc.collect()
    gc.freeze()
    # A socket bound by the caller (`tidings serve`): a busy port was reported before
    # the app started; uvicorn would start it and only then fail to bind.
    server.run(sockets=[sock] if sock is not None else None)
