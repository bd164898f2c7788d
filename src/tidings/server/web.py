"""The browser path: the chat UI at `/`, `tidings.js` under `/static/`, CORS, dev sign-in.

CORS follows the same allow-list as WebSocket origins (`TIDINGS_ALLOWED_ORIGINS`), so a
page allowed to open `/v1/ws` may also call the HTTP API, read history and use SSE, and no
other page may. Starlette's middleware answers preflights itself.

Dev mode (`--dev` / `TIDINGS_DEV=1`) lets the UI mint a token for any name: for trying
Tidings on a laptop only, never on a shared host. It is off by default, and said loudly
at start when on.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

import tidings
from tidings.core.auth import issue
from tidings.protocol.codes import ErrorCode, ProtocolError
from tidings.server.config import Config

log = logging.getLogger("tidings.web")

WEB_DIR = Path(tidings.__file__).parent / "web"
#: How long a dev-mode token lasts.
DEV_TOKEN_TTL_S = 12 * 3600
#: Names the dev sign-in accepts: what a person would type, nothing that looks like a path.
_DEV_NAME = re.compile(r"^[\w .@-]{1,64}$")


class DevTokenBody(BaseModel):
    name: str = Field(min_length=1, max_length=64)


def install_web(app: FastAPI, config: Config) -> None:
    """Add CORS, the UI, the static client and (in dev mode) the token route to `app`."""
    if config.allowed_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.allowed_origins),
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "Last-Event-ID"],
            expose_headers=["Retry-After"],
            max_age=600,
        )
    if not (WEB_DIR / "index.html").exists():
        return
    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        return FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/sw.js", include_in_schema=False)
    async def service_worker() -> Response:
        # Served from the root so that it may control the whole origin.
        return FileResponse(
            WEB_DIR / "sw.js",
            media_type="text/javascript",
            headers={"Cache-Control": "no-cache", "Service-Worker-Allowed": "/"},
        )

    @app.get("/v1/dev", include_in_schema=False)
    async def dev_mode() -> Response:
        return JSONResponse({"dev": config.dev})

    @app.post("/v1/dev/token", include_in_schema=False)
    async def dev_token(body: DevTokenBody, request: Request) -> Response:
        if not config.dev:
            raise ProtocolError(ErrorCode.NOT_FOUND, "dev sign-in is off (start with --dev)")
        name = body.name.strip()
        if not _DEV_NAME.match(name):
            raise ProtocolError(
                ErrorCode.BAD_REQUEST, "a name is 1-64 letters, digits, spaces or . @ - _"
            )
        token = issue(
            name,
            secret=config.jwt_secret,
            ttl_s=DEV_TOKEN_TTL_S,
            now_s=int(time.time()),
            algorithm=config.jwt_algorithm,
            audience=config.jwt_audience,
            issuer=config.jwt_issuer,
        )
        log.warning("dev mode: minted a token for %r", name)
        return JSONResponse({"token": token, "user": name})
