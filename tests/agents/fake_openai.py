"""A small OpenAI-compatible chat-completions server: real HTTP and SSE on 127.0.0.1.

The requested model picks the behaviour:

* any name: streams `WORDS` one chunk each, then a usage chunk, then `[DONE]`;
* `fail-midstream`: sends three chunks and then drops the connection (no final chunk);
* `error-event`: sends three chunks and then an SSE error object, as some servers do;
* `stall`: sends two chunks and then nothing until `release` is set;
* `unauthorized`: answers 401 with a message quoting part of the key, as OpenAI does.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

WORDS = ["Hello", " from", " the", " fake", " model", "."]
PROMPT_TOKENS = 17


class MidStreamFailure(Exception):
    """Raised inside the response body: the server drops the connection."""


def sse(payload: dict[str, Any] | str) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return f"data: {data}\n\n"


def chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1764125000,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


class FakeOpenAI:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.authorizations: list[str | None] = []
        self.release = asyncio.Event()
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> None:
        app = Starlette(routes=[Route("/v1/chat/completions", self._complete, methods=["POST"])])
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            lifespan="off",
            ws="none",
            log_level="critical",
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        async with asyncio.timeout(5):
            while not self._server.started:  # noqa: ASYNC110 (uvicorn offers a flag only)
                await asyncio.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.release.set()
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task

    async def _complete(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(body)
        self.authorizations.append(request.headers.get("authorization"))
        model = body["model"]
        if model == "unauthorized":
            error = {
                "message": "Incorrect API key provided: sk-test-***cret.",
                "type": "invalid_request_error",
                "code": "invalid_api_key",
            }
            return JSONResponse({"error": error}, status_code=401)
        return StreamingResponse(self._events(model), media_type="text/event-stream")

    async def _events(self, model: str) -> AsyncIterator[str]:
        yield sse(chunk(model, {"role": "assistant", "content": ""}))
        for index, word in enumerate(WORDS):
            if index == 3 and model == "fail-midstream":
                raise MidStreamFailure("the fake server drops the connection")
            if index == 3 and model == "error-event":
                yield sse({"error": {"message": "upstream exploded; key sk-test-secret"}})
                return
            if index == 2 and model == "stall":
                async with asyncio.timeout(10):
                    await self.release.wait()
            yield sse(chunk(model, {"content": word}))
            await asyncio.sleep(0.001)
        yield sse(chunk(model, {}, finish="stop"))
        usage = {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": len(WORDS),
            "total_tokens": PROMPT_TOKENS + len(WORDS),
        }
        yield sse({**chunk(model, {}), "choices": [], "usage": usage})
        yield sse("[DONE]")
