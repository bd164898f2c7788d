"""Row shapes shared by the SQL stores: the columns they select and the models they build.

SQLite and PostgreSQL store the same tables (see `migrations/`), so a selected row maps to
a `SessionInfo` or a `Message` the same way; only the SQL dialect differs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import msgspec

from tidings.core.model import Message, SessionInfo

SESSION_COLUMNS: Final = "id, title, agent, owner, created_at, seq, version, status"
MESSAGE_COLUMNS: Final = "id, seq, role, author, content, is_code, status, created_at, error, usage"

_decode = msgspec.json.Decoder().decode


def session_of(row: Sequence[Any]) -> SessionInfo:
    """A `SessionInfo` from a row of `SESSION_COLUMNS`."""
    return SessionInfo(
        id=row[0],
        title=row[1],
        agent=row[2],
        owner=row[3],
        created_at=row[4],
        seq=row[5],
        version=row[6],
        status=row[7],
    )


def message_of(row: Sequence[Any]) -> Message:
    """A `Message` from a row of `MESSAGE_COLUMNS`; a streaming one carries its offset."""
    status = row[6]
    return Message(
        id=row[0],
        seq=row[1],
        role=row[2],
        author=row[3],
        content=row[4],
        is_code=bool(row[5]),  # SQLite keeps booleans as integers
        status=status,
        created_at=row[7],
        offset=len(row[4]) if status == "streaming" else None,
        error=row[8],
        usage=None if row[9] is None else _decode(row[9]),
    )
