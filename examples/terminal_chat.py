"""A terminal chat on a Tidings session.

Type a line to send it; `/quit` (or end of input) leaves. Messages appear as they are
confirmed by the server (yours first as `…` pending), and assistant replies when they are
complete.

    export TIDINGS_TOKEN=$(tidings token alice)
    python examples/terminal_chat.py ws://127.0.0.1:8765/v1/ws s_0123456789abcdef
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import stat
import sys
from collections.abc import AsyncIterator
from typing import Any, TextIO

from tidings.client import ChangeBatch, ChatMessage, Session, connect


def render(message: ChatMessage) -> str:
    mark = {"pending": " …", "failed": f" ✗ ({message.error})"}.get(message.status, "")
    return f"[{message.author}] {message.content}{mark}"


async def stdin_lines() -> AsyncIterator[str]:
    """Lines of standard input, without blocking the event loop.

    A terminal or a pipe (`echo hi | …`) is read as a stream; a regular file (`… < notes`)
    cannot be (asyncio has no non-blocking read for files, and reading one never blocks
    for long), so it is read line by line directly.
    """
    if stat.S_ISREG(os.fstat(sys.stdin.fileno()).st_mode):
        for line in sys.stdin:
            yield line.rstrip("\n")
        return
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    try:
        while line := await reader.readline():
            yield line.decode().rstrip("\n")
    finally:
        transport.close()


class Printer:
    """Prints each message once, when it is final (confirmed or failed)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.printed: set[str] = set()

    def show(self, message: ChatMessage) -> None:
        if message.key in self.printed or message.status in ("pending", "streaming"):
            return
        self.printed.add(message.key)
        print(render(message), file=self.out, flush=True)

    def on_change(self, batch: ChangeBatch) -> None:
        for message in batch.messages:
            self.show(message)


async def run_chat(
    url: str,
    token: str,
    session_id: str,
    *,
    lines: AsyncIterator[str] | None = None,
    out: TextIO = sys.stdout,
    **options: Any,
) -> None:
    async with connect(url, token=token, **options) as client:
        session: Session = await client.join(session_id)
        printer = Printer(out)
        print(f"— {session.state.title or session_id} · {client.user} —", file=out)
        for message in session.state.messages:
            printer.show(message)
        session.on_change(printer.on_change)
        client.on_state(lambda state: print(f"({state})", file=out, flush=True))
        source = lines if lines is not None else stdin_lines()
        async for line in source:
            if line.strip() == "/quit":
                break
            if line.strip():
                session.send_message(line)  # no await: typing goes on while it is confirmed
        with contextlib.suppress(AttributeError):
            await source.aclose()  # type: ignore[attr-defined]
        # Let the last sends be confirmed before leaving.
        pending = [h for h in session.handles.values() if not h.done()]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(h.wait() for h in pending), return_exceptions=True), 5
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the server's WebSocket URL, e.g. ws://127.0.0.1:8765/v1/ws")
    parser.add_argument("session", help="the session id")
    parser.add_argument("--token", default=os.environ.get("TIDINGS_TOKEN"), help="a JWT")
    args = parser.parse_args()
    if not args.token:
        parser.error("pass --token or set TIDINGS_TOKEN (tidings token USER)")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_chat(args.url, args.token, args.session))


if __name__ == "__main__":
    main()
