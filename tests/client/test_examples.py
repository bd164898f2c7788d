"""The runnable examples import, and run against a real server for a moment."""

from __future__ import annotations

import asyncio
import importlib.util
import io
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType

from tests.client.helpers import client_for, until
from tests.server.harness import Server, fetch_events, make_token

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
            await session.send_message("hello there bot")
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
        await theirs.send_message("hi al")
        await until(lambda: "[bo] hi al" in out.getvalue())
        said.set()
        await asyncio.wait_for(task, 5)
    text = out.getvalue()
    assert "— Plans · al —" in text
    assert "[al] hello from the terminal" in text


async def run_example(args: list[str], stdin: bytes | None, *, file: Path | None = None) -> str:
    """Run an example as a program, its standard input piped from `stdin` (or a file)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    source = file.open("rb") if file is not None else asyncio.subprocess.PIPE
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *args,
            stdin=source,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
        )
        out, _ = await asyncio.wait_for(process.communicate(stdin), 30)
    finally:
        if file is not None:
            source.close()  # type: ignore[union-attr]
    text = out.decode()
    assert process.returncode == 0, text
    return text


async def test_the_terminal_chat_sends_lines_piped_to_it_and_ends_at_end_of_input(
    server: Server, tmp_path: Path
) -> None:
    sid = await server.create_session("al", title="Piped")
    args = [str(EXAMPLES / "terminal_chat.py"), server.ws_url, sid, "--token", make_token("al")]
    text = await run_example(args, b"first line\nsecond line\n")
    assert "[al] first line" in text
    assert "[al] second line" in text
    lines = tmp_path / "lines.txt"
    lines.write_text("from a file\n")
    text = await run_example(args, None, file=lines)
    assert "[al] from a file" in text
    history = [e for e in await fetch_events(server, "al", sid) if e["kind"] == "message.created"]
    assert [e["data"]["message"]["content"] for e in history] == [
        "first line",
        "second line",
        "from a file",
    ]
