"""The runnable examples import, and run against a real server for a moment."""

from __future__ import annotations

import asyncio
import importlib.util
import io
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType

from tests.client.helpers import client_for, until
from tests.server.harness import Server, make_token

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def test_the_bot_answers_a_new_message(server: Server) -> None:
    bot = load("bot")
    sid = await server.create_session("al")
    await server.add_member("al", sid, "bot", "member")
    ready = asyncio.Event()
    task = asyncio.create_task(bot.run_bot(server.ws_url, make_token("bot"), sid, ready=ready))
    try:
        await asyncio.wait_for(ready.wait(), 5)
        async with client_for(server, "al") as al:
            session = await al.join(sid)
            await (await session.send_message("hello there bot"))
            await until(lambda: any(m.author == "bot" for m in session.state.messages))
            [reply] = [m for m in session.state.messages if m.author == "bot"]
            assert reply.content == "@al that was 3 words. Noted!"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_the_terminal_chat_sends_typed_lines_and_prints_messages(server: Server) -> None:
    chat = load("terminal_chat")
    sid = await server.create_session("al", title="Plans")
    await server.add_member("al", sid, "bo", "member")
    out = io.StringIO()
    said = asyncio.Event()

    async def typed() -> AsyncIterator[str]:
        yield "hello from the terminal"
        await asyncio.wait_for(said.wait(), 5)
        yield "/quit"

    async with client_for(server, "bo") as bo:
        theirs = await bo.join(sid)
        task = asyncio.create_task(
            chat.run_chat(server.ws_url, make_token("al"), sid, lines=typed(), out=out)
        )
        await until(lambda: len(theirs.state.messages) == 1)
        await (await theirs.send_message("hi al"))
        await until(lambda: "[bo] hi al" in out.getvalue())
        said.set()
        await asyncio.wait_for(task, 5)
    text = out.getvalue()
    assert "— Plans · al —" in text
    assert "[al] hello from the terminal" in text
