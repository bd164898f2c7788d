"""Issue 9 points 9 and 10: valid-looking input never makes a 500, and HTTP bodies meet
the WebSocket's limits through the same code (protocol/validation.py), same texts."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from pathlib import Path
from typing import Any

import httpx

from tests.security.attacks import ServerErrors
from tests.server.harness import SECRET, Server, running_server


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def signed_token(payload: bytes) -> str:
    """An HS256 token over `payload` exactly as given (PyJWT would not write 1e400)."""
    head = _b64(b'{"alg":"HS256","typ":"JWT"}') + "." + _b64(payload)
    signature = hmac.new(SECRET.encode(), head.encode(), hashlib.sha256).digest()
    return head + "." + _b64(signature)


def _error(response: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = response.json().get("error", response.json())
    assert set(error) >= {"code", "message"}
    return error


async def test_seq_bounds_past_the_64_bit_range_get_400_not_500(
    tmp_path: Path, server_errors: ServerErrors
) -> None:
    async with running_server(tmp_path) as server:
        session = await server.create_session("alice")
        async with server.http("alice") as http:
            for path in (
                f"/v1/sessions/{session}/events?after={2**63}",
                f"/v1/sessions/{session}/messages?before={2**64}",
            ):
                response = await http.get(path)
                assert response.status_code == 400, (path, response.text)
                assert _error(response)["code"] == "bad_request"
    assert not server_errors.lines()


async def test_a_lone_surrogate_in_http_message_content_gets_400_not_500(
    tmp_path: Path, server_errors: ServerErrors
) -> None:
    async with running_server(tmp_path) as server:
        session = await server.create_session("alice")
        async with server.http("alice") as http:
            raw = b'{"client_id":"c1","kind":"message","data":{"content":"x\\ud800y"}}'
            response = await http.post(
                f"/v1/sessions/{session}/events",
                content=raw,
                headers={"Content-Type": "application/json"},
            )
            assert response.status_code == 400, response.text
            assert "surrogate" in _error(response)["message"]
            title = await http.post(
                "/v1/sessions",
                content=b'{"title":"\\udfff"}',
                headers={"Content-Type": "application/json"},
            )
            assert title.status_code == 400, title.text
    assert not server_errors.lines()


async def test_a_validly_signed_token_with_an_infinite_or_nan_exp_gets_401_not_500(
    tmp_path: Path, server_errors: ServerErrors
) -> None:
    async with running_server(tmp_path) as server:
        now = int(time.time())
        for exp in (b"1e400", b"NaN", b"-1e400", b"1e30"):
            token = signed_token(b'{"sub":"alice","iat":%d,"exp":%s}' % (now, exp))
            async with httpx.AsyncClient(base_url=server.http_url) as http:
                response = await http.get(
                    "/v1/sessions", headers={"Authorization": f"Bearer {token}"}
                )
            assert response.status_code == 401, (exp, response.text)
            assert _error(response)["code"] == "unauthorized"
    assert not server_errors.lines()


async def _ws_error(server: Server, session: str, data: str) -> str:
    client = await server.client("alice")
    try:
        await client.send(
            f'{{"type":"send","id":7,"session":"{session}","kind":"message",'
            f'"client_id":"ws","data":{data}}}'
        )
        reply = await client.next(lambda f: f.get("type") == "error")
    finally:
        await client.close()
    message: str = reply["message"]
    return message


async def test_http_sends_meet_the_websockets_limits_with_the_same_texts(
    tmp_path: Path, server_errors: ServerErrors
) -> None:
    async with running_server(tmp_path) as server:
        session = await server.create_session("alice")
        # Raw JSON text: Python's json module would not even write 950 levels.
        cases = {
            "nested 950 deep": '{"content":"hi","metadata":' + '{"a":' * 950 + "1" + "}" * 951,
            "a 4,000-digit integer": '{"content":"hi","n":' + "9" * 4000 + "}",
        }
        async with server.http("alice") as http:
            for name, data in cases.items():
                body = f'{{"client_id":"{name}","kind":"message","data":{data}}}'
                response = await http.post(
                    f"/v1/sessions/{session}/events",
                    content=body.encode(),
                    headers={"Content-Type": "application/json"},
                )
                assert response.status_code == 400, (name, response.text)
                error = _error(response)
                assert error["code"] == "bad_request"
                assert error["message"] == await _ws_error(server, session, data), name
    assert not server_errors.lines()
