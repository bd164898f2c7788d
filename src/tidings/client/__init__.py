"""The Python client SDK: a live, consistent local replica of Tidings sessions.

    async with tidings.client.connect("ws://127.0.0.1:8765/v1/ws", token=token) as client:
        session = await client.join(session_id)
        handle = await session.send_message("Hello!")
        async for batch in session.changes():
            ...

See docs/client-python.md.
"""

from tidings.client.backoff import Backoff
from tidings.client.changes import Change, ChangeBatch, ChangeStream
from tidings.client.client import Client, ConnectionState, Options, connect
from tidings.client.errors import (
    AuthError,
    ConnectError,
    OfflineQueueFull,
    SendFailed,
    TidingsError,
)
from tidings.client.replica import ChatMessage, Replica, SessionView
from tidings.client.session import SendHandle, Session

__all__ = [
    "AuthError",
    "Backoff",
    "Change",
    "ChangeBatch",
    "ChangeStream",
    "ChatMessage",
    "Client",
    "ConnectError",
    "ConnectionState",
    "OfflineQueueFull",
    "Options",
    "Replica",
    "SendFailed",
    "SendHandle",
    "Session",
    "SessionView",
    "TidingsError",
    "connect",
]
