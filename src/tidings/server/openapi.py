"""What the OpenAPI document says about the HTTP API, so that it tells the truth.

The routes answer with pre-encoded JSON (msgspec), so FastAPI never sees their return
values: the models below exist to *document* the bodies, and a test validates real
responses against the published schema (`tests/server/test_openapi.py`). Every route lists
the statuses it can answer, each with the `{"error": {...}}` body, and FastAPI's automatic
422 is removed: invalid input is a 400 `bad_request` here, as on the WebSocket.

Swagger UI and ReDoc are served from files shipped with `fastapi-offline`, never from a
CDN, so `/docs` works on a host with no Internet access.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from tidings.protocol.codes import HTTP_STATUS, ErrorCode

# ---------------------------------------------------------------- bodies


class ErrorBody(BaseModel):
    code: ErrorCode
    message: str = Field(description="A plain sentence fit to show a developer")
    retry_after_ms: int | None = Field(None, description="With rate_limited and unavailable")
    version: int | None = Field(None, description="With conflict: the session's version now")
    session: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class SessionOut(BaseModel):
    id: str
    title: str
    agent: str
    owner: str
    created_at: int = Field(description="Unix milliseconds")
    seq: int = Field(0, description="The session's last seq")
    version: int = 0
    status: str = "active"


class SessionList(BaseModel):
    sessions: list[SessionOut]
    #: Pass as `?cursor=` for the next page; null on the last page.
    next: str | None = None


class MemberOut(BaseModel):
    user: str
    role: str


class CardOut(BaseModel):
    id: str
    title: str
    content: str
    source: str = ""
    tokens: int = 0


class SnapshotMessage(BaseModel):
    """A message as snapshots carry it."""

    id: str
    role: str
    author: str
    content: str
    is_code: bool
    status: str = Field(description="complete, streaming or failed")
    created_at: int
    offset: int | None = Field(None, description="While streaming: the content's length")
    error: str | None = None
    usage: dict[str, int] | None = None


class MessageOut(SnapshotMessage):
    """A message as history (`GET …/messages`) shows it: with the seq that created it."""

    seq: int


class TokenStats(BaseModel):
    prompt: int
    completion: int


class Stats(BaseModel):
    messages: int
    tokens: TokenStats
    cards: int
    participants: int


class Snapshot(BaseModel):
    session: str
    seq: int
    title: str
    status: str
    metadata: dict[str, Any]
    version: int
    members: list[MemberOut]
    presence: list[str]
    agent: dict[str, Any]
    cards: list[CardOut]
    stats: Stats
    messages: list[SnapshotMessage]


class SessionWithSnapshot(BaseModel):
    session: SessionOut
    seq: int
    snapshot: Snapshot


class MemberAdded(BaseModel):
    user: str
    role: str
    seq: int


class MemberRemoved(BaseModel):
    user: str
    seq: int


class AckOut(BaseModel):
    session: str
    client_id: str
    seq: int
    event_id: str
    duplicate: bool


class EventOut(BaseModel):
    type: str = "event"
    session: str
    seq: int
    kind: str
    ts: int
    author: str
    data: dict[str, Any]
    client_id: str | None = None


class EventsPage(BaseModel):
    events: list[EventOut]
    seq: int = Field(description="The session's last seq")


class MessagesPage(BaseModel):
    messages: list[MessageOut]


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str = Field(description="ready or unavailable")
    reason: str | None = None


# ---------------------------------------------------------------- statuses

_WHEN = {
    ErrorCode.BAD_REQUEST: "Invalid body, path or query parameter",
    ErrorCode.UNAUTHORIZED: "No token, or a bad or expired one",
    ErrorCode.FORBIDDEN: "Not allowed in this session",
    ErrorCode.NOT_FOUND: "No such session (or message)",
    ErrorCode.CONFLICT: "Compare-and-set failed: the error carries the current version",
    ErrorCode.RATE_LIMITED: "Over a rate or count limit: see Retry-After",
    ErrorCode.TOO_LARGE: "A field or the body over its limit",
    ErrorCode.UNAVAILABLE: "Storage unavailable or the server shutting down: retry later",
    ErrorCode.INTERNAL: "A bug; the message holds no internals",
}

#: What every authenticated route may answer.
COMMON = (
    ErrorCode.BAD_REQUEST,
    ErrorCode.UNAUTHORIZED,
    ErrorCode.RATE_LIMITED,
    ErrorCode.TOO_LARGE,
    ErrorCode.UNAVAILABLE,
    ErrorCode.INTERNAL,
)
#: And what a route about one session adds.
IN_SESSION = (*COMMON, ErrorCode.FORBIDDEN, ErrorCode.NOT_FOUND)


def errors(*codes: ErrorCode) -> dict[int | str, dict[str, Any]]:
    """The `responses=` entry for these error codes, each with the error body."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        status = HTTP_STATUS[code]
        entry = out.setdefault(status, {"model": ErrorResponse, "description": ""})
        entry["description"] = "; ".join(filter(None, [entry["description"], _WHEN[code]]))
    return out


# ---------------------------------------------------------------- the document and its UIs

DOCS_STATIC = "/docs-static"


def install_docs(app: FastAPI) -> None:
    """`/openapi.json` without phantom 422s, with the bearer scheme; `/docs` and `/redoc`
    from local files."""
    assets = files("fastapi_offline") / "static"
    app.mount(DOCS_STATIC, StaticFiles(directory=str(assets)), name="docs-static")

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                description=app.description,
                routes=app.routes,
            )
            _drop_422(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get("/docs", include_in_schema=False)
    async def swagger() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{app.title} — API",
            swagger_js_url=f"{DOCS_STATIC}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_STATIC}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_STATIC}/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url="/openapi.json",
            title=f"{app.title} — API",
            redoc_js_url=f"{DOCS_STATIC}/redoc.standalone.js",
            redoc_favicon_url=f"{DOCS_STATIC}/favicon.png",
            with_google_fonts=False,
        )


def _drop_422(schema: dict[str, Any]) -> None:
    """FastAPI documents a 422 on every route with parameters; this server never sends one."""
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            operation.get("responses", {}).pop("422", None)
    components = schema.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
