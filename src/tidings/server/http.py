"""The HTTP API under `/v1`: the same semantics as the WebSocket path, for fallback and
back-ends. Every route calls the node, as the WebSocket connections do."""

from __future__ import annotations

import hmac
import logging
import time
from typing import Annotated, Any

import msgspec
from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from tidings.backends.base import NotFound, StoreUnavailable
from tidings.core.model import Role
from tidings.core.ratelimit import TokenBucket
from tidings.protocol.codes import HTTP_STATUS, ErrorCode, ProtocolError
from tidings.protocol.messages import MAX_SEQ
from tidings.protocol.validation import check_text, check_value
from tidings.server import limits
from tidings.server.node import Node
from tidings.server.openapi import (
    COMMON,
    IN_SESSION,
    AckOut,
    EventsPage,
    Health,
    MemberAdded,
    MemberRemoved,
    MessageOut,
    MessagesPage,
    Readiness,
    SessionList,
    SessionOut,
    SessionWithSnapshot,
    errors,
)

_encoder = msgspec.json.Encoder()
log = logging.getLogger("tidings.http")


def json_response(value: Any, status: int = 200) -> Response:
    return Response(_encoder.encode(value), status_code=status, media_type="application/json")


def error_response(err: ProtocolError) -> Response:
    body: dict[str, Any] = {"code": str(err.code), "message": err.message}
    body.update({k: v for k, v in err.extra.items() if v is not None})
    headers = {}
    retry_ms = err.extra.get("retry_after_ms")
    # Any error carrying a wait (rate limits, a server shutting down) says it in HTTP too.
    if isinstance(retry_ms, int):
        headers["Retry-After"] = str(max(1, retry_ms // 1000 + 1))
    return Response(
        _encoder.encode({"error": body}),
        status_code=HTTP_STATUS[err.code],
        media_type="application/json",
        headers=headers,
    )


class CreateSession(BaseModel):
    title: str = Field(default="", max_length=200)
    agent: str | None = Field(default=None, max_length=200)


class AddMember(BaseModel):
    user: str = Field(min_length=1, max_length=128)
    role: Role = Role.MEMBER


class SendBody(BaseModel):
    client_id: str = Field(min_length=1, max_length=128)
    kind: str = Field(min_length=1, max_length=64)
    data: dict[str, Any] = Field(default_factory=dict)


def _node(request: Request) -> Node:
    node: Node = request.app.state.node
    return node


#: The bearer scheme, documented in OpenAPI (Swagger's Authorize button); refusals are
#: ours (401 with the error body), not FastAPI's.
bearer = HTTPBearer(auto_error=False, description="A JWT: `tidings token USER` prints one")


async def current_user(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)] = None,
) -> str:
    token = credentials.credentials if credentials is not None else None
    claims = await _node(request).authenticate(token)
    return claims.user


User = Annotated[str, Depends(current_user)]


#: `GET /v1/sessions`: the page size by default, and the largest one may ask for.
SESSION_PAGE = 100
MAX_SESSION_PAGE = 1000


def build_router() -> APIRouter:
    router = APIRouter(prefix="/v1")
    buckets: dict[str, TokenBucket] = {}

    def rate_check(node: Node, user: str) -> None:
        bucket = buckets.get(user)
        if bucket is None:
            if len(buckets) > 100_000:
                buckets.clear()
            bucket = buckets[user] = TokenBucket(node.config.rate_limit, node.config.rate_burst)
        wait_ms = bucket.take(time.monotonic_ns() // 1_000_000)
        if wait_ms:
            node.metrics.rate_limited.inc()
            raise ProtocolError(
                ErrorCode.RATE_LIMITED,
                "too many requests; slow down",
                extra={"retry_after_ms": wait_ms},
            )

    @router.post(
        "/sessions",
        status_code=201,
        summary="Create a session; you become its owner",
        response_model=SessionOut,
        responses=errors(*COMMON),
    )
    async def create_session(body: CreateSession, request: Request, user: User) -> Response:
        check_text("title", body.title)
        check_text("agent", body.agent or "")
        info = await _node(request).create_session(user, title=body.title, agent=body.agent)
        return json_response(info, 201)

    @router.get(
        "/sessions",
        summary="The sessions you are a member of, newest first, a page at a time",
        response_model=SessionList,
        responses=errors(*COMMON),
    )
    async def list_sessions(
        request: Request,
        user: User,
        limit: Annotated[int, Query(ge=1, le=MAX_SESSION_PAGE)] = SESSION_PAGE,
        cursor: Annotated[str | None, Query(max_length=200)] = None,
    ) -> Response:
        sessions = await _node(request).store.list_sessions(user)
        start = 0
        if cursor is not None:
            # The cursor is the last id of the previous page: newer sessions join the
            # front of the list (newest first), so the pages after it do not shift.
            ids = [info.id for info in sessions]
            if cursor not in ids:
                raise ProtocolError(ErrorCode.BAD_REQUEST, "unknown cursor; list from the start")
            start = ids.index(cursor) + 1
        page = sessions[start : start + limit]
        more = start + limit < len(sessions)
        return json_response({"sessions": page, "next": page[-1].id if more and page else None})

    @router.get(
        "/sessions/{session_id}",
        summary="A session with its snapshot",
        response_model=SessionWithSnapshot,
        responses=errors(*IN_SESSION),
    )
    async def get_session(session_id: str, request: Request, user: User) -> Response:
        info, seq, snapshot = await _node(request).snapshot(user, session_id)
        return json_response({"session": info, "seq": seq, "snapshot": snapshot})

    @router.post(
        "/sessions/{session_id}/members",
        status_code=201,
        summary="Add a member (owner)",
        response_model=MemberAdded,
        responses=errors(*IN_SESSION),
    )
    async def add_member(
        session_id: str, body: AddMember, request: Request, user: User
    ) -> Response:
        check_text("user", body.user)
        event = await _node(request).add_member(user, session_id, body.user, body.role)
        return json_response({"user": body.user, "role": body.role, "seq": event.seq}, 201)

    @router.delete(
        "/sessions/{session_id}/members/{member}",
        summary="Remove a member (owner)",
        response_model=MemberRemoved,
        responses=errors(*IN_SESSION),
    )
    async def remove_member(session_id: str, member: str, request: Request, user: User) -> Response:
        event = await _node(request).remove_member(user, session_id, member)
        return json_response({"user": member, "seq": event.seq})

    @router.post(
        "/sessions/{session_id}/events",
        summary="Send (same as the `send` frame): an error means not stored",
        response_model=AckOut,
        responses=errors(*IN_SESSION, ErrorCode.CONFLICT),
    )
    async def send(session_id: str, body: SendBody, request: Request, user: User) -> Response:
        node = _node(request)
        # The WebSocket's limits (protocol/validation.py), with the same texts.
        check_text("client_id", body.client_id)
        check_text("kind", body.kind)
        check_value(body.data, "data")
        rate_check(node, user)
        limits.take(node.limits.sends, user, "sends")
        ack = await node.send(
            user, session_id, client_id=body.client_id, kind=body.kind, data=body.data
        )
        return json_response(ack)

    @router.get(
        "/sessions/{session_id}/events",
        summary="Events after a seq; with `wait`, a long-poll",
        response_model=EventsPage,
        responses=errors(*IN_SESSION),
    )
    async def events(
        session_id: str,
        request: Request,
        user: User,
        after: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        wait: Annotated[float, Query(ge=0, le=60)] = 0,
    ) -> Response:
        found, seq = await _node(request).events(
            user, session_id, after=after, limit=limit, wait=wait
        )
        return json_response({"events": found, "seq": seq})

    @router.get(
        "/sessions/{session_id}/messages",
        summary="Older messages, newest first",
        response_model=MessagesPage,
        responses=errors(*IN_SESSION),
    )
    async def messages(
        session_id: str,
        request: Request,
        user: User,
        before: Annotated[int | None, Query(ge=1, le=MAX_SEQ)] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> Response:
        node = _node(request)
        from tidings.core.rules import Action

        await node.require(session_id, user, Action.READ)
        found = await node.store.messages(session_id, before=before, limit=limit)
        return json_response({"messages": found})

    @router.get(
        "/sessions/{session_id}/messages/{message_id}",
        summary="One message (with its offset while streaming)",
        response_model=MessageOut,
        responses=errors(*IN_SESSION),
    )
    async def message(session_id: str, message_id: str, request: Request, user: User) -> Response:
        return json_response(await _node(request).message(user, session_id, message_id))

    return router


def install(app: FastAPI) -> None:
    """Add the `/v1` routes, health and metrics, and the error shapes of the protocol."""
    app.include_router(build_router())

    @app.exception_handler(ProtocolError)
    async def on_protocol_error(request: Request, exc: ProtocolError) -> Response:
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 400:
            # FastAPI could not parse the body (malformed, or too deep for json.loads):
            # the WebSocket's answer to such a frame, in the error schema.
            return error_response(
                ProtocolError(ErrorCode.BAD_REQUEST, "malformed JSON or nested too deeply")
            )
        return await http_exception_handler(request, exc)

    @app.exception_handler(StoreUnavailable)
    async def on_store_unavailable(request: Request, exc: StoreUnavailable) -> Response:
        return error_response(
            ProtocolError(ErrorCode.UNAVAILABLE, "storage is unavailable; retry later")
        )

    @app.exception_handler(NotFound)
    async def on_not_found(request: Request, exc: NotFound) -> Response:
        return error_response(ProtocolError(ErrorCode.NOT_FOUND, "not found"))

    @app.exception_handler(Exception)
    async def on_bug(request: Request, exc: Exception) -> Response:
        log.exception("request %s %s failed", request.method, request.url.path)
        return error_response(ProtocolError(ErrorCode.INTERNAL, "internal error"))

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        message = f"{first.get('msg', 'invalid request')} at {where}" if where else "invalid"
        return error_response(ProtocolError(ErrorCode.BAD_REQUEST, message))

    @app.get("/healthz", summary="Liveness", response_model=Health)
    async def healthz() -> Response:
        return json_response({"status": "ok"})

    @app.get(
        "/readyz",
        summary="Readiness: store and broker reachable, writes succeeding",
        response_model=Readiness,
        responses={503: {"model": Readiness, "description": "Not ready, with the reason"}},
    )
    async def readyz(request: Request) -> Response:
        node = _node(request)
        try:
            await node.store.ping()
            await node.broker.ping()
            if node.writes.error is not None:
                # Writes have been failing: ready again only once one succeeds.
                await node.store.probe_write()
                node.writes.succeeded()
        except Exception as exc:
            reason = type(exc).__name__
            cause = getattr(exc, "cause", None)
            body = {"status": "unavailable", "reason": reason if cause is None else cause}
            return json_response(body, 503)
        return json_response({"status": "ready"})

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics(request: Request) -> Response:
        node = _node(request)
        expected = node.config.metrics_token
        if expected:
            # Constant-time, on bytes: the comparison's time says nothing about the token.
            values = request.headers.getlist("authorization")
            given = values[0] if len(values) == 1 else ""
            scheme, _, credential = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                credential.strip().encode(), expected.encode()
            ):
                return error_response(
                    ProtocolError(ErrorCode.UNAUTHORIZED, "metrics need the metrics token")
                )
        return Response(_node(request).metrics.render(), media_type="text/plain; version=0.0.4")

    from tidings.server.sse import install_sse

    install_sse(app)
