"""A bot that answers in a Tidings session.

It joins the session, and answers every new message from someone else (history is left
alone). Replace `answer` with something smarter.

    export TIDINGS_TOKEN=$(tidings token bot)
    python examples/bot.py ws://127.0.0.1:8765/v1/ws s_0123456789abcdef

The bot must be a member of the session (`POST /v1/sessions/{id}/members`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
from typing import Any

from tidings.client import ChatMessage, connect


def answer(message: ChatMessage) -> str | None:
    """The bot's reply to a message, or None to stay quiet."""
    words = len(message.content.split())
    return f"@{message.author} that was {words} word{'s' if words != 1 else ''}. Noted!"


async def run_bot(
    url: str,
    token: str,
    session_id: str,
    *,
    ready: asyncio.Event | None = None,
    **options: Any,
) -> None:
    """Answer new messages in `session_id` until cancelled."""
    async with connect(url, token=token, **options) as client:
        session = await client.join(session_id)
        seen = {m.id for m in session.state.messages}  # history: not ours to answer
        changes = session.changes()
        if ready is not None:
            ready.set()
        async for batch in changes:
            for message in batch.messages:
                # Confirmed (it has a server id), complete, from someone else, new.
                if (
                    message.id is None
                    or message.id in seen
                    or message.status != "complete"
                    or message.role != "user"
                    or message.author == client.user
                ):
                    continue
                seen.add(message.id)
                reply = answer(message)
                if reply is not None:
                    # No await: the reply is confirmed in the background, and the change
                    # loop goes on (a refused reply shows as `failed` in the state).
                    session.send_message(reply)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the server's WebSocket URL, e.g. ws://127.0.0.1:8765/v1/ws")
    parser.add_argument("session", help="the session id")
    parser.add_argument("--token", default=os.environ.get("TIDINGS_TOKEN"), help="a JWT")
    args = parser.parse_args()
    if not args.token:
        parser.error("pass --token or set TIDINGS_TOKEN (tidings token bot)")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_bot(args.url, args.token, args.session))


if __name__ == "__main__":
    main()
