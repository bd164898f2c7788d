"""Client-side helpers for protocol v1: decode what the server sends, build what it reads.

The server's frames are kept as plain dicts (unknown fields must be ignored, and a newer
server may add some), so decoding only splits batches and checks each item is an object.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

_decoder: Final = msgspec.json.Decoder()
_encoder: Final = msgspec.json.Encoder()

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


def encode_request(frame: Frame) -> str:
    """One client request as JSON text."""
    return _encoder.encode(frame).decode()


def send_frame(
    request_id: int, session: str, client_id: str, kind: str, data: dict[str, Any]
) -> Frame:
    return {
        "type": "send",
        "id": request_id,
        "session": session,
        "client_id": client_id,
        "kind": kind,
        "data": data,
    }


def subscribe_frame(request_id: int, session: str, after: int | None) -> Frame:
    frame: Frame = {"type": "subscribe", "id": request_id, "session": session}
    if after is not None:
        frame["after"] = after
    return frame


def message_seq(message_id: str) -> int:
    """The `seq` a message (or card) id was made from: `m_42` → 42; 0 when not of that form."""
    try:
        return int(message_id.split("_", 1)[1])
    except (IndexError, ValueError):
        return 0
