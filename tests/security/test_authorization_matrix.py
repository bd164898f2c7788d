"""The authorization matrix: every WebSocket request type and every HTTP route, tried by
every role, against one table of expected verdicts.

The rows are checked against the code's own lists (`protocol.messages.REQUEST_TYPES` and
the app's routes), so a new request type or route fails here until the table says who
may use it. Roles are relative to one session `S`: its owner, a member, a viewer, a
stranger (a valid token, not a member) and no token at all.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.routing import Mount, Route

from tests.security.attacks import ServerErrors, raw_status
from tests.server.harness import Client, Frame, Server, fetch_events, make_token, message
from tidings.protocol.messages import REQUEST_TYPES
from tidings.server.app import create_app
from tidings.server.config import Config


class Role(StrEnum):
    NONE = "no token"
    STRANGER = "stranger"
    VIEWER = "viewer"
    MEMBER = "member"
    OWNER = "owner"


ROLES = tuple(Role)
USER = {
    Role.STRANGER: "mallory",
    Role.VIEWER: "victor",
    Role.MEMBER: "maria",
    Role.OWNER: "olga",
}


def _verdicts(none: Any, stranger: Any, viewer: Any, member: Any, owner: Any) -> dict[Role, Any]:
    return dict(zip(ROLES, (none, stranger, viewer, member, owner), strict=True))


UNAUTHORIZED = "error:unauthorized"
FORBIDDEN = "error:forbidden"

# ---------------------------------------------------------------- the expected verdicts
#
# WebSocket: the reply's `type` (and the error's code). Requests are tried in this order
# on one connection per role (a signal needs the subscription tried just before it).
WS_MATRIX: dict[str, dict[Role, str]] = {
    "connect": _verdicts(UNAUTHORIZED, "connected", "connected", "connected", "connected"),
    "refresh": _verdicts(UNAUTHORIZED, "ok", "ok", "ok", "ok"),
    "ping": _verdicts(UNAUTHORIZED, "pong", "pong", "pong", "pong"),
    "subscribe": _verdicts(UNAUTHORIZED, FORBIDDEN, "subscribed", "subscribed", "subscribed"),
    # Viewers may not signal: a typing indicator would reveal them as participants.
    "signal": _verdicts(UNAUTHORIZED, FORBIDDEN, FORBIDDEN, "relayed", "relayed"),
    "send": _verdicts(UNAUTHORIZED, FORBIDDEN, FORBIDDEN, "ack", "ack"),
    # Allowed to cancel, but no reply is in progress: `not_found` shows the check passed.
    "cancel": _verdicts(UNAUTHORIZED, FORBIDDEN, FORBIDDEN, "error:not_found", "error:not_found"),
    "unsubscribe": _verdicts(UNAUTHORIZED, "ok", "ok", "ok", "ok"),
}

# HTTP: the status of each route (method, path template). Public routes answer everyone.
PUBLIC = _verdicts(200, 200, 200, 200, 200)
READ = _verdicts(401, 403, 200, 200, 200)
HTTP_MATRIX: dict[tuple[str, str], dict[Role, int]] = {
    ("POST", "/v1/sessions"): _verdicts(401, 201, 201, 201, 201),
    ("GET", "/v1/sessions"): _verdicts(401, 200, 200, 200, 200),
    ("GET", "/v1/sessions/{session_id}"): READ,
    ("POST", "/v1/sessions/{session_id}/members"): _verdicts(401, 403, 403, 403, 201),
    ("DELETE", "/v1/sessions/{session_id}/members/{member}"): _verdicts(401, 403, 403, 403, 200),
    ("POST", "/v1/sessions/{session_id}/events"): _verdicts(401, 403, 403, 200, 200),
    ("GET", "/v1/sessions/{session_id}/events"): READ,
    ("GET", "/v1/sessions/{session_id}/messages"): READ,
    ("GET", "/v1/sessions/{session_id}/messages/{message_id}"): READ,
    ("GET", "/v1/sessions/{session_id}/sse"): READ,
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    # Public by default; `/metrics` bearer protection, when configured, is tested by its lane.
    ("GET", "/metrics"): PUBLIC,
    ("GET", "/asyncapi.json"): PUBLIC,
    ("GET", "/openapi.json"): PUBLIC,
    ("GET", "/docs"): PUBLIC,
    ("GET", "/docs/oauth2-redirect"): PUBLIC,
    ("GET", "/redoc"): PUBLIC,
    # The browser client, when built: its page, service worker and static files.
    ("GET", "/"): PUBLIC,
    ("GET", "/sw.js"): PUBLIC,
    ("MOUNT", "/static"): PUBLIC,
    # Swagger UI and ReDoc's own files, served locally (no CDN).
    ("MOUNT", "/docs-static"): PUBLIC,
    ("GET", "/v1/dev"): PUBLIC,
    # Dev sign-in mints a token for any name: off unless the server runs with --dev.
    ("POST", "/v1/dev/token"): _verdicts(404, 404, 404, 404, 404),
}


def app_routes(app: FastAPI) -> set[tuple[str, str]]:
    """Every (method, path) the app serves; a mount counts as ("MOUNT", path)."""
    found: set[tuple[str, str]] = set()

    def walk(routes: list[Any], prefix: str) -> None:
        for route in routes:
            if isinstance(route, Mount):
                found.add(("MOUNT", prefix + route.path))
            elif isinstance(route, APIRoute | Route):
                # Starlette adds HEAD beside every GET; it answers as the GET does.
                methods = route.methods or set()
                found.update((m, prefix + route.path) for m in methods if m != "HEAD")
            elif hasattr(route, "original_router"):
                # FastAPI keeps an included router whole, under its include prefix.
                walk(route.original_router.routes, prefix + route.include_context.prefix)
            else:
                raise AssertionError(f"a route of an unknown kind: {route!r}")

    walk(list(app.routes), "")
    return found


def test_every_websocket_request_type_has_a_matrix_row() -> None:
    assert set(WS_MATRIX) == set(REQUEST_TYPES)


def test_every_http_route_has_a_matrix_row(tmp_path: Path) -> None:
    config = Config(database_url=f"sqlite:///{tmp_path / 'routes.db'}", jwt_secret="x" * 32)
    app = create_app(config)
    missing = app_routes(app) - set(HTTP_MATRIX)
    assert not missing, f"routes without a row in HTTP_MATRIX: {sorted(missing)}"


# ---------------------------------------------------------------- the run


@dataclass
class World:
    """Session `S` with one user of each role, and a message in it."""

    server: Server
    session: str
    message_id: str


async def make_world(server: Server) -> World:
    owner = USER[Role.OWNER]
    session = await server.create_session(owner)
    for role in (Role.VIEWER, Role.MEMBER):
        await server.add_member(owner, session, USER[role], str(role))
    # Someone the DELETE row may remove, and a message the message rows may read.
    await server.add_member(owner, session, "extra", "member")
    async with server.http(owner) as http:
        response = await http.post(
            f"/v1/sessions/{session}/events",
            json={"client_id": "seed", "kind": "message", "data": {"content": "hi"}},
        )
        response.raise_for_status()
        message_id: str = response.json()["event_id"]
    return World(server, session, message_id)


def _reply_verdict(frame: Frame) -> str:
    if frame["type"] == "error":
        return f"error:{frame['code']}"
    return str(frame["type"])


async def _ws_row(world: World, client: Client, role: Role, kind: str) -> str:
    user = USER.get(role)
    session = world.session
    if kind == "connect":
        fresh = await world.server.client()
        frame: Frame = {"type": "connect"}
        if user is not None:
            frame["token"] = make_token(user)
        reply = await fresh.request(frame)
        if user is None:
            assert (await fresh.wait_closed())[0] == 4001
        else:
            await fresh.close()
        return _reply_verdict(reply)
    if kind == "signal":
        # Accepted signals have no reply: one sent with an id and followed by a ping is
        # relayed when the pong comes back with no error for it first.
        signal_id = 10_000
        await client.send(
            {"type": "signal", "id": signal_id, "session": session, "name": "typing", "data": {}}
        )
        if user is None:
            # Before connect the refusal ends the connection: there is no ping to follow.
            return _reply_verdict(await client.next(lambda f: f.get("re") == signal_id))
        pong = await client.request({"type": "ping"})
        errors = []
        while not client.inbox.empty():
            got = client.inbox.get_nowait()
            if got.get("re") == signal_id:
                errors.append(got)
        if errors:
            return _reply_verdict(errors[0])
        assert pong["type"] == "pong", pong
        return "relayed"
    requests: dict[str, Frame] = {
        "refresh": {"type": "refresh", "token": make_token(user or "nobody")},
        "ping": {"type": "ping"},
        "subscribe": {"type": "subscribe", "session": session},
        "send": message("from " + str(role), session=session),
        "cancel": {"type": "cancel", "session": session, "message_id": world.message_id},
        "unsubscribe": {"type": "unsubscribe", "session": session},
    }
    return _reply_verdict(await client.request(requests[kind]))


async def test_every_websocket_request_by_every_role_gets_the_matrix_verdict(
    server: Server, server_errors: ServerErrors
) -> None:
    world = await make_world(server)
    seen: dict[str, dict[Role, str]] = {kind: {} for kind in WS_MATRIX}
    for role in ROLES:
        user = USER.get(role)
        client = await server.client(user)
        for kind in WS_MATRIX:
            if user is None and client.closed.done():
                # Without a token, a refused request ends the connection (4001).
                client = await server.client()
            seen[kind][role] = await _ws_row(world, client, role, kind)
            if user is None and kind != "connect":
                assert (await client.wait_closed())[0] == 4001
        await client.close()
    assert seen == WS_MATRIX
    # Nothing refused left a trace in the log.
    authors = {event["author"] for event in await fetch_events(server, "olga", world.session)}
    assert authors.isdisjoint({USER[Role.STRANGER], USER[Role.VIEWER]})
    assert not server_errors.lines()


Call = Callable[[httpx.AsyncClient, Role], Awaitable[int]]


def _http_calls(world: World) -> dict[tuple[str, str], Call]:
    base = f"/v1/sessions/{world.session}"

    def get(path: str, **params: Any) -> Call:
        async def call(http: httpx.AsyncClient, role: Role) -> int:
            return (await http.get(path, params=params)).status_code

        return call

    async def create(http: httpx.AsyncClient, role: Role) -> int:
        return (await http.post("/v1/sessions", json={"title": "mine"})).status_code

    async def add(http: httpx.AsyncClient, role: Role) -> int:
        body = {"user": f"new-{role.name.lower()}", "role": "viewer"}
        return (await http.post(f"{base}/members", json=body)).status_code

    async def remove(http: httpx.AsyncClient, role: Role) -> int:
        return (await http.delete(f"{base}/members/extra")).status_code

    async def send(http: httpx.AsyncClient, role: Role) -> int:
        body = {"client_id": f"c-{role.name}", "kind": "message", "data": {"content": "x"}}
        return (await http.post(f"{base}/events", json=body)).status_code

    async def sse(http: httpx.AsyncClient, role: Role) -> int:
        # An accepted stream never ends: only its status line is read.
        headers = {"Authorization": f"Bearer {make_token(USER[role])}"} if role in USER else {}
        return await raw_status(world.server, f"{base}/sse", headers)

    async def static(http: httpx.AsyncClient, role: Role) -> int:
        return (await http.get("/static/index.html")).status_code

    async def docs_static(http: httpx.AsyncClient, role: Role) -> int:
        return (await http.get("/docs-static/favicon.png")).status_code

    async def dev_token(http: httpx.AsyncClient, role: Role) -> int:
        return (await http.post("/v1/dev/token", json={"name": "olga"})).status_code

    return {
        ("POST", "/v1/sessions"): create,
        ("GET", "/v1/sessions"): get("/v1/sessions"),
        ("GET", "/v1/sessions/{session_id}"): get(base),
        ("POST", "/v1/sessions/{session_id}/members"): add,
        ("DELETE", "/v1/sessions/{session_id}/members/{member}"): remove,
        ("POST", "/v1/sessions/{session_id}/events"): send,
        ("GET", "/v1/sessions/{session_id}/events"): get(f"{base}/events", after=0),
        ("GET", "/v1/sessions/{session_id}/messages"): get(f"{base}/messages"),
        ("GET", "/v1/sessions/{session_id}/messages/{message_id}"): get(
            f"{base}/messages/{world.message_id}"
        ),
        ("GET", "/v1/sessions/{session_id}/sse"): sse,
        ("MOUNT", "/static"): static,
        ("MOUNT", "/docs-static"): docs_static,
        ("POST", "/v1/dev/token"): dev_token,
        **{
            ("GET", path): get(path)
            for path in (
                "/healthz",
                "/readyz",
                "/metrics",
                "/asyncapi.json",
                "/openapi.json",
                "/docs",
                "/docs/oauth2-redirect",
                "/redoc",
                "/",
                "/sw.js",
                "/v1/dev",
            )
        },
    }


async def test_every_http_route_by_every_role_gets_the_matrix_verdict(
    server: Server, server_errors: ServerErrors
) -> None:
    world = await make_world(server)
    calls = _http_calls(world)
    assert set(calls) == set(HTTP_MATRIX), "every matrix row needs a call"
    served = app_routes(_app_of(server))
    seen: dict[tuple[str, str], dict[Role, int]] = {}
    for route, call in calls.items():
        if route not in served:
            continue  # an optional route (the browser client) this build lacks
        seen[route] = {}
        for role in ROLES:
            async with server.http(USER.get(role)) as http:
                seen[route][role] = await call(http, role)
    assert seen == {route: HTTP_MATRIX[route] for route in seen}
    # The stranger's listing does not show a session they are not in.
    async with server.http(USER[Role.STRANGER]) as http:
        listed = (await http.get("/v1/sessions")).json()["sessions"]
    assert world.session not in {item["id"] for item in listed}
    assert not server_errors.lines()


def _app_of(server: Server) -> FastAPI:
    # The running app is not kept by the harness; an identical one lists the same routes.
    return create_app(server.config)
