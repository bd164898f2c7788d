"""Client-side helpers for protocol v1: decode what the server sends.

The server's frames are kept as plain dicts (unknown fields must be ignored, and a newer
server may add some), so decoding only splits batches and checks each item is an object.
What the client sends is built from the request structs of `protocol/messages.py` (see
`tidings/client/protocol.py`).
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

_decoder: Final = msgspec.json.Decoder()

Frame = dict[str, Any]


def decode_server_frames(data: str | bytes) -> list[Frame]:
    """The objects of one server text frame: a single object or a batch (JSON array).

    Raises `ValueError` on malformed JSON; non-object items of a batch are skipped.
    """
    try:
        value = _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise ValueError(f"malformed frame from the server: {exc}") from None
    items = value if isinstance(value, list) else [value]
    return [item for item in items if isinstance(item, dict) and isinstance(item.get("type"), str)]


def message_seq(message_id: str) -> int:
    """The `seq` a message (or card) id was made from: `m_42` → 42; 0 when not of that form."""
    try:
        return int(message_id.split("_", 1)[1])
    except (IndexError, ValueError):
        return 0
