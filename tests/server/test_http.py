"""The HTTP API: the same semantics as the WebSocket path."""

from __future__ import annotations

import asyncio

from tests.server.harness import Server


async def test_create_and_list_sessions(server: Server) -> None:
    async with server.http("al") as http:
        created = await http.post("/v1/sessions", json={"title": "Trip", "agent": "none"})
        assert created.status_code == 201
        body = created.json()
        assert body["title"] == "Trip"
        assert body["owner"] == "al"
        assert body["id"].startswith("s_")
        listed = (await http.get("/v1/sessions")).json()["sessions"]
        assert [s["id"] for s in listed] == [body["id"]]
    async with server.http("bo") as http:
        assert (await http.get("/v1/sessions")).json()["sessions"] == []


async def test_requests_without_a_valid_token_get_401_in_the_error_shape(server: Server) -> None:
    async with server.http() as http:
        response = await http.get("/v1/sessions")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    async with server.http() as http:
        response = await http.get("/v1/sessions", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401


async def test_invalid_bodies_are_bad_requests_in_the_error_shape(server: Server) -> None:
    sid = await server.create_session("al")
    async with server.http("al") as http:
        response = await http.post(f"/v1/sessions/{sid}/events", json={"kind": "message"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_request"


async def test_get_session_returns_its_snapshot(server: Server) -> None:
    sid = await server.create_session("al", title="Hello")
    async with server.http("al") as http:
        body = (await http.get(f"/v1/sessions/{sid}")).json()
    assert body["session"]["id"] == sid
    assert body["seq"] == 1
    assert body["snapshot"]["title"] == "Hello"
    async with server.http("zed") as http:
        response = await http.get(f"/v1/sessions/{sid}")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"
    async with server.http("al") as http:
        assert (await http.get("/v1/sessions/s_missing")).status_code == 404


async def test_members_are_managed_by_the_owner_only(server: Server) -> None:
    sid = await server.create_session("al")
    async with server.http("al") as http:
        added = await http.post(
            f"/v1/sessions/{sid}/members", json={"user": "bo", "role": "member"}
        )
        assert added.status_code == 201
    async with server.http("bo") as http:
        refused = await http.post(
            f"/v1/sessions/{sid}/members", json={"user": "cy", "role": "member"}
        )
        assert refused.status_code == 403
        assert (await http.get("/v1/sessions")).json()["sessions"][0]["id"] == sid
    async with server.http("al") as http:
        assert (await http.delete(f"/v1/sessions/{sid}/members/bo")).status_code == 200
        assert (await http.delete(f"/v1/sessions/{sid}/members/bo")).status_code == 404
        events = (await http.get(f"/v1/sessions/{sid}/events")).json()["events"]
    assert [e["kind"] for e in events] == ["member.added", "member.added", "member.removed"]


async def test_http_send_reaches_websocket_subscribers(server: Server) -> None:
    sid = await server.create_session("al")
    client = await server.client("al")
    await client.subscribe(sid)
    async with server.http("al") as http:
        response = await http.post(
            f"/v1/sessions/{sid}/events",
            json={"client_id": "h1", "kind": "message", "data": {"content": "via http"}},
        )
    assert response.json()["seq"] == 2
    [event] = await client.events(sid, 1)
    assert event["data"]["message"]["content"] == "via http"
    await client.close()


async def test_compare_and_set_over_http_is_409_with_the_version(server: Server) -> None:
    sid = await server.create_session("al")
    async with server.http("al") as http:
        body = {
            "client_id": "c1",
            "kind": "session.update",
            "data": {"changes": {"title": "x"}, "base_version": 0},
        }
        assert (await http.post(f"/v1/sessions/{sid}/events", json=body)).status_code == 200
        body = {**body, "client_id": "c2"}
        response = await http.post(f"/v1/sessions/{sid}/events", json=body)
    assert response.status_code == 409
    error = response.json()["error"]
    assert (error["code"], error["version"]) == ("conflict", 1)


async def test_events_after_with_limit(server: Server) -> None:
    sid = await server.create_session("al")
    async with server.http("al") as http:
        for i in range(5):
            await http.post(
                f"/v1/sessions/{sid}/events",
                json={"client_id": f"e{i}", "kind": "message", "data": {"content": f"m{i}"}},
            )
        body = (
            await http.get(f"/v1/sessions/{sid}/events", params={"after": 2, "limit": 2})
        ).json()
    assert [e["seq"] for e in body["events"]] == [3, 4]
    assert body["seq"] == 6


async def test_long_poll_returns_as_soon_as_an_event_arrives(server: Server) -> None:
    sid = await server.create_session("al")
    async with server.http("al") as http:
        poll = asyncio.ensure_future(
            http.get(f"/v1/sessions/{sid}/events", params={"after": 1, "wait": 10})
        )
        await asyncio.sleep(0.3)
        assert not poll.done()
        await http.post(
            f"/v1/sessions/{sid}/events",
            json={"client_id": "lp", "kind": "message", "data": {"content": "wake up"}},
        )
        body = (await asyncio.wait_for(poll, 5)).json()
    assert [e["seq"] for e in body["events"]] == [2]


async def test_long_poll_times_out_empty(server: Server) -> None:
    sid = await server.create_session("al")
    async with server.http("al") as http:
        body = (
            await http.get(f"/v1/sessions/{sid}/events", params={"after": 1, "wait": 0.3})
        ).json()
    assert body == {"events": [], "seq": 1}


async def test_history_pages_newest_first(server: Server) -> None:
    sid = await server.create_session("al")
    async with server.http("al") as http:
        for i in range(6):
            await http.post(
                f"/v1/sessions/{sid}/events",
                json={"client_id": f"h{i}", "kind": "message", "data": {"content": f"m{i}"}},
            )
        page = (await http.get(f"/v1/sessions/{sid}/messages", params={"limit": 4})).json()
        contents = [m["content"] for m in page["messages"]]
        assert contents == ["m5", "m4", "m3", "m2"]
        oldest = page["messages"][-1]["seq"]
        page = (
            await http.get(f"/v1/sessions/{sid}/messages", params={"before": oldest, "limit": 4})
        ).json()
        assert [m["content"] for m in page["messages"]] == ["m1", "m0"]
        one = (await http.get(f"/v1/sessions/{sid}/messages/m_2")).json()
        assert (one["id"], one["content"], one["status"]) == ("m_2", "m0", "complete")
        assert (await http.get(f"/v1/sessions/{sid}/messages/m_99")).status_code == 404


async def test_health_readiness_metrics_and_openapi(server: Server) -> None:
    async with server.http() as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        assert (await http.get("/readyz")).json() == {"status": "ready"}
        metrics = (await http.get("/metrics")).text
        for name in (
            "tidings_connections",
            "tidings_events_appended_total",
            "tidings_fanout_seconds_bucket",
            "tidings_slow_consumer_closes_total",
            "tidings_rate_limited_total",
            "tidings_frames_sent_total",
        ):
            assert name in metrics
        spec = (await http.get("/openapi.json")).json()
        assert "/v1/sessions/{session_id}/events" in spec["paths"]
        assert (await http.get("/docs")).status_code == 200


async def test_a_session_may_not_name_an_agent_the_server_does_not_offer(server: Server) -> None:
    async with server.http("al") as http:
        response = await http.post(
            "/v1/sessions", json={"title": "x", "agent": "subprocess:getoutput"}
        )
    assert response.status_code == 400
    assert "unknown agent" in response.json()["error"]["message"]
