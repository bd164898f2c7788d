"""Issue 9 points 6 and 15: per-user bounds. One user cannot hold unbounded connections,
long-polls or SSE streams, outrun the send rate by spreading over connections, flood the
assistant's queue, create sessions without end or subscribe without a rate limit. Each
refusal is `rate_limited` with `retry_after_ms` (HTTP 429 with `Retry-After`)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.server.harness import make_token, message, running_server


async def test_a_user_over_the_connection_cap_is_refused_with_a_retry_and_4008(
    tmp_path: Path,
) -> None:
    async with running_server(tmp_path, max_connections_per_user=3) as server:
        held = [await server.client("al") for _ in range(3)]
        extra = await server.client()
        answer = await extra.request({"type": "connect", "token": make_token("al")})
        assert answer["code"] == "rate_limited", answer
        assert answer["retry_after_ms"] > 0
        assert (await extra.wait_closed())[0] == 4008
        other = await server.client("bo")  # another user is not affected
        await held.pop().close()
        await asyncio.sleep(0.1)
        again = await server.client("al")  # a slot was released
        for client in (*held, other, again):
            await client.close()


async def test_sends_spread_over_connections_meet_the_users_own_rate(tmp_path: Path) -> None:
    async with running_server(
        tmp_path, rate_limit=1000, rate_burst=1000, user_rate_limit=0.5, user_rate_burst=4
    ) as server:
        sid = await server.create_session("al")
        clients = [await server.client("al") for _ in range(3)]
        answers = []
        for i in range(6):
            answers.append(await clients[i % 3].request(message(f"m{i}", session=sid)))
        assert [a["type"] for a in answers[:4]] == ["ack"] * 4
        refused = answers[4:]
        assert all(a["code"] == "rate_limited" and a["retry_after_ms"] > 0 for a in refused)
        async with server.http("al") as http:
            response = await http.post(
                f"/v1/sessions/{sid}/events",
                json={"client_id": "x", "kind": "message", "data": {"content": "over http"}},
            )
        assert response.status_code == 429
        assert int(response.headers["Retry-After"]) >= 1
        for client in clients:
            await client.close()


async def test_subscribes_are_rate_limited_like_sends(tmp_path: Path) -> None:
    async with running_server(tmp_path, rate_limit=0.5, rate_burst=3) as server:
        sid = await server.create_session("al")
        client = await server.client("al")
        answers = [await client.request({"type": "subscribe", "session": sid}) for _ in range(4)]
        assert [a["type"] for a in answers[:3]] == ["subscribed"] * 3
        assert answers[3]["code"] == "rate_limited"
        assert answers[3]["retry_after_ms"] > 0
        await client.close()


async def test_long_polls_and_sse_streams_per_user_are_capped(tmp_path: Path) -> None:
    async with running_server(
        tmp_path, max_long_polls_per_user=2, max_streams_per_user=1
    ) as server:
        sid = await server.create_session("al")
        async with server.http("al") as http:
            polls = [
                asyncio.ensure_future(http.get(f"/v1/sessions/{sid}/events?after=1&wait=3"))
                for _ in range(2)
            ]
            await asyncio.sleep(0.3)
            third = await http.get(f"/v1/sessions/{sid}/events?after=1&wait=3")
            assert third.status_code == 429, third.text
            assert third.json()["error"]["code"] == "rate_limited"
            assert "Retry-After" in third.headers
            async with http.stream("GET", f"/v1/sessions/{sid}/sse") as first:
                assert first.status_code == 200
                second = await http.get(f"/v1/sessions/{sid}/sse")
                assert second.status_code == 429, second.text
            await asyncio.sleep(0.2)
            async with http.stream("GET", f"/v1/sessions/{sid}/sse") as again:
                assert again.status_code == 200  # the first stream's slot came back
            for poll in polls:
                poll.cancel()
            await asyncio.gather(*polls, return_exceptions=True)


async def test_session_creation_per_user_is_rate_limited(tmp_path: Path) -> None:
    async with running_server(tmp_path, session_create_rate=0.5, session_create_burst=3) as server:
        async with server.http("al") as http:
            codes = [(await http.post("/v1/sessions", json={})).status_code for _ in range(4)]
            assert codes == [201, 201, 201, 429]
        async with server.http("bo") as http:
            assert (await http.post("/v1/sessions", json={})).status_code == 201


async def test_messages_over_the_assistants_backlog_are_refused_before_being_stored(
    tmp_path: Path,
) -> None:
    async with running_server(
        tmp_path, rate_limit=0, echo_delay_ms=400, max_agent_backlog=2
    ) as server:
        sid = await server.create_session("al", agent="echo")
        client = await server.client("al")
        answers = []
        for i in range(5):
            answers.append(await client.request(message(f"a long message {i}", session=sid)))
            await asyncio.sleep(0.05)  # the first reply starts; the next ones queue
        kinds = [a["type"] for a in answers]
        assert kinds[:3] == ["ack"] * 3, answers
        refused = [a for a in answers if a["type"] == "error"]
        assert refused
        assert all(a["code"] == "rate_limited" and a["retry_after_ms"] > 0 for a in refused)
        async with server.http("al") as http:
            page = (await http.get(f"/v1/sessions/{sid}/events?after=0&limit=1000")).json()
        contents = [
            e["data"]["message"]["content"]
            for e in page["events"]
            if e["kind"] == "message.created" and e["data"]["message"]["role"] == "user"
        ]
        assert len(contents) == 3  # refused means not stored
        await client.close()


async def test_the_session_list_comes_in_pages_with_a_cursor(tmp_path: Path) -> None:
    async with running_server(tmp_path) as server:
        made = [await server.create_session("al", title=f"t{i}") for i in range(5)]
        seen: list[str] = []
        async with server.http("al") as http:
            first = (await http.get("/v1/sessions")).json()
            assert len(first["sessions"]) == 5  # default page: 100
            assert first["next"] is None
            cursor: str | None = None
            while True:
                params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
                page = (await http.get("/v1/sessions", params=params)).json()
                assert len(page["sessions"]) <= 2
                seen.extend(s["id"] for s in page["sessions"])
                cursor = page["next"]
                if cursor is None:
                    break
            assert (await http.get("/v1/sessions", params={"limit": 1001})).status_code == 400
            stale = await http.get("/v1/sessions", params={"cursor": "s_nope"})
            assert stale.status_code == 400
        assert seen == list(reversed(made))


def test_every_per_user_limit_is_read_from_its_environment_variable() -> None:
    from tidings.server.config import Config

    env = {
        "TIDINGS_MAX_CONNECTIONS_PER_USER": "7",
        "TIDINGS_USER_RATE_LIMIT": "2.5",
        "TIDINGS_USER_RATE_BURST": "9",
        "TIDINGS_MAX_LONG_POLLS_PER_USER": "3",
        "TIDINGS_MAX_STREAMS_PER_USER": "4",
        "TIDINGS_SESSION_CREATE_RATE": "0.5",
        "TIDINGS_SESSION_CREATE_BURST": "6",
        "TIDINGS_MAX_AGENT_BACKLOG": "8",
    }
    config = Config.from_env(env)
    assert (config.max_connections_per_user, config.user_rate_limit) == (7, 2.5)
    assert (config.user_rate_burst, config.max_long_polls_per_user) == (9, 3)
    assert (config.max_streams_per_user, config.session_create_rate) == (4, 0.5)
    assert (config.session_create_burst, config.max_agent_backlog) == (6, 8)
